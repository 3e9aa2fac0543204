"""
Load generator benchmark: the highest registration rate one ``twistd
warden-loadtest`` process sustains, beside SIPp's on the same target in the same
run, and how many concurrent calls with RTP it carries.

Run from the repository root (or through ``bench/loadgen.sh``)::

    python -m bench.loadgen                     # about 6 minutes
    python -m bench.loadgen --quick             # smoke test, about a minute
    python -m bench.loadgen --target warden     # against twistd warden instead

The target is Kamailio (Debian package ``kamailio``) on 127.0.0.1 by default:
a C proxy fast enough that the generators, not the target, are what is measured.
Its configuration (written for the run) challenges every REGISTER with 401,
checks the digest against the password ``pw-<user>-secret`` (``pv_www_authenticate``,
no database), saves the binding in memory; INVITEs are challenged with 407,
record-routed and relayed to the callee's binding. RTP flows directly between the
generator's own call sides (Kamailio does not anchor media).
``--target warden`` runs ``twistd warden`` with the users imported by ``wardenctl``.

1. Registrations: at each rate of ``--rates``, ``--step-seconds`` of digest
   registrations (REGISTER, 401, REGISTER with credentials, 200) over ``--users``
   users, first by warden-loadtest (``--test-type registrations --duration``), then
   by SIPp (``bench/scenarios/register.xml``). A rate is *sustained* when every
   registration succeeded and at least 95% of the offered rate was achieved.
   Per step: offered and achieved rate, failures, p95 of the authenticated
   REGISTER, and the generator's CPU (user + system over the step's wall time,
   100% = one core, from ``RUSAGE_CHILDREN``) and the target's.
2. Calls: ``--calls`` concurrent calls with ``--rtp`` (G.711, 20 ms, both ways),
   held ``--hold`` seconds, placed at ``--call-rate``; reports answered calls, RTP
   loss, jitter, MOS and the generator's CPU.

Progress goes to stderr; the result is one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from warden.ops.drtest.scratch import free_port

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "bench" / "scenarios" / "register.xml"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
LOCALHOST = "127.0.0.1"

KAMAILIO_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
children={children}
auto_aliases=no
maxbuffer=4194304
listen=udp:127.0.0.1:{port}
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "rr.so"
loadmodule "auth.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "db_mode", 0)
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("OPTIONS") && uri==myself && $rU==$null) {{ sl_send_reply("200", "OK"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("REGISTER")) {{
        if (!pv_www_authenticate("$td", "pw-$fU-secret", "0")) {{
            www_challenge("$td", "0"); exit;
        }}
        save("location");
        exit;
    }}
    if (is_method("INVITE")) {{
        if (!pv_proxy_authenticate("$fd", "pw-$fU-secret", "0")) {{
            proxy_challenge("$fd", "0"); exit;
        }}
        consume_credentials();
        record_route();
        if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
        t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) t_relay(); exit; }}
    sl_send_reply("405", "Method Not Allowed");
}}
"""


def log(text: str) -> None:
    """Progress on stderr."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def cpu_of(pids: list[int]) -> float:
    """User + system seconds of processes ``pids`` so far."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except FileNotFoundError:
            continue
    return total


def children_cpu() -> float:
    """User + system seconds of every waited-for child so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Target:
    """The PBX both generators drive: Kamailio or Warden, on a free port."""

    def __init__(self, kind: str, workdir: Path, users: int) -> None:
        self.kind = kind
        self.workdir = workdir
        self.port = free_port()
        self.users = users
        self.process: subprocess.Popen[bytes] | None = None

    def pids(self) -> list[int]:
        """The target's processes (Kamailio forks workers)."""
        assert self.process is not None
        found = [self.process.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[1]) == self.process.pid:
                    found.append(int(entry.name))
        return found

    def start(self) -> None:
        """Start the target and wait until it answers OPTIONS."""
        if self.kind == "kamailio":
            config = self.workdir / "kamailio.cfg"
            config.write_text(KAMAILIO_CFG.format(port=self.port, children=2))
            binary = shutil.which("kamailio")
            if binary is None:
                raise SystemExit("kamailio is not installed (apt-get install kamailio)")
            command = [binary, "-DD", "-E", "-f", str(config), "-m", "512", "-M", "64"]
            self.process = subprocess.Popen(
                command, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        else:
            self._start_warden()
        self._wait_ready()

    def _start_warden(self) -> None:
        data = self.workdir / "data"
        config = self.workdir / "warden.toml"
        config.write_text(
            f'[server]\ndata_dir = "{data}"\nrealm = "bench"\ndomains = ["{LOCALHOST}"]\n'
            f'[sip]\ninterface = "{LOCALHOST}"\nport = {self.port}\n'
            "[admin]\nenabled = false\n"
        )
        csv = self.workdir / "extensions.csv"
        csv.write_text("".join(f"{n};pw-{n}-secret\n" for n in numbers(self.users)))
        subprocess.run(
            [sys.executable, "-m", "warden.ctl", "--config", str(config), "extension",
             "import", str(csv)], check=True, cwd=self.workdir, capture_output=True,
        )  # fmt: skip
        command = [*TWISTD, "-n", "--pidfile=", f"--logfile={self.workdir / 'warden.log'}"]
        command += ["warden", "--config", str(config)]
        self.process = subprocess.Popen(command, cwd=self.workdir)

    def _wait_ready(self) -> None:
        probe = (
            "OPTIONS sip:{h}:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {h}:{q};branch=z9hG4bKprobe{i}\r\n"
            "From: <sip:probe@{h}>;tag=1\r\nTo: <sip:{h}:{p}>\r\nCall-ID: probe{i}\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOCALHOST, 0))
            s.settimeout(0.25)
            for i in range(80):
                text = probe.format(h=LOCALHOST, p=self.port, q=s.getsockname()[1], i=i)
                s.sendto(text.encode(), (LOCALHOST, self.port))
                try:
                    if s.recv(4096).startswith(b"SIP/2.0 200"):
                        return
                except TimeoutError:
                    continue
        raise SystemExit(f"{self.kind} did not answer OPTIONS on port {self.port}")

    def stop(self) -> None:
        """Stop it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def numbers(count: int) -> list[int]:
    """The users' numbers."""
    return [100000 + i for i in range(count)]


def write_users(workdir: Path, count: int) -> tuple[Path, Path]:
    """The users file of warden-loadtest and the SIPp injection file."""
    ours, sipp = workdir / "users.csv", workdir / "sipp-users.csv"
    ours.write_text("".join(f"{n};pw-{n}-secret\n" for n in numbers(count)))
    sipp.write_text(
        "SEQUENTIAL\n"
        + "".join(
            f"{n};pw-{n}-secret;[authentication username={n} password=pw-{n}-secret]\n"
            for n in numbers(count)
        )
    )
    return ours, sipp


def run_ours(
    target: Target, workdir: Path, users_csv: Path, args: list[str], timeout: float
) -> tuple[dict[str, Any], float, float, float]:
    """Run warden-loadtest; (report, its CPU seconds, the target's CPU seconds, wall seconds)."""
    report = workdir / f"report-{len(list(workdir.glob('report-*')))}.json"
    command = [*TWISTD, "-n", "--pidfile=", f"--logfile={workdir / 'loadtest.log'}"]
    command += ["warden-loadtest", "--pbx-host", LOCALHOST, "--sip-port", str(target.port)]
    command += ["--local-ip", LOCALHOST, "--users-file", str(users_csv), "--no-progress"]
    command += ["--save-report", str(report), *args]
    cpu, target_cpu, wall = children_cpu(), cpu_of(target.pids()), time.monotonic()
    done = subprocess.run(command, cwd=workdir, capture_output=True, timeout=timeout)
    cpu, wall = children_cpu() - cpu, time.monotonic() - wall
    target_cpu = cpu_of(target.pids()) - target_cpu
    if not report.exists():
        raise SystemExit(f"warden-loadtest wrote no report: {done.stderr.decode()[-2000:]}")
    return json.loads(report.read_text()), cpu, target_cpu, wall


def registration_step_ours(
    target: Target, workdir: Path, users_csv: Path, users: int, rate: float, seconds: float
) -> dict[str, Any]:
    """One step of registrations by warden-loadtest."""
    args = ["--test-type", "registrations", "--users", str(users), "--register-rate", f"{rate:g}"]
    args += ["--duration", f"{seconds:g}", "--max-pending", "5000", "--expires", "3600"]
    report, cpu, target_cpu, _ = run_ours(target, workdir, users_csv, args, seconds * 4 + 120)
    phase = report["phases"]["register"]
    timeline = report["timeline"]
    # Achieved: successes per second over the seconds the schedule ran.
    busy = [row for row in timeline[: int(seconds)]]
    achieved = sum(row["succeeded"] for row in busy) / max(1, len(busy))
    register_seconds = seconds + (report["timers"].get("register", {}).get("p99") or 0.0)
    share = register_seconds / max(report["duration_s"], register_seconds)
    return {
        "generator": "warden-loadtest",
        "offered": rate,
        "attempted": phase["attempted"],
        "succeeded": phase["succeeded"],
        "failed": phase["failed"],
        "failures": phase["failures"],
        "achieved": round(achieved, 1),
        "p95_ms": report["timers"].get("register_auth", {}).get("p95_ms"),
        "generator_cpu_pct": round(100 * cpu / report["duration_s"], 1),
        "target_cpu_pct": round(100 * target_cpu * share / seconds, 1),
    }


def registration_step_sipp(
    target: Target, workdir: Path, sipp_csv: Path, rate: float, seconds: float
) -> dict[str, Any]:
    """One step of registrations by SIPp (same scenario as the integration tests)."""
    step = workdir / f"sipp-{rate:g}"
    step.mkdir()
    calls = int(rate * seconds)
    command = [
        shutil.which("sipp") or "sipp", f"{LOCALHOST}:{target.port}", "-sf", str(SCENARIO),
        "-inf", str(sipp_csv), "-i", LOCALHOST, "-p", "0", "-m", str(calls), "-r", f"{rate:g}",
        "-rp", "1000", "-l", str(max(100, int(rate * 5))), "-timeout", f"{seconds * 4 + 60:g}s",
        "-timeout_error", "-trace_stat", "-trace_rtt", "-rtt_freq", "1", "-nostdin",
        "-cp", str(free_port()), "-buff_size", str(4 * 1024 * 1024),
    ]  # fmt: skip
    cpu, target_cpu, wall = children_cpu(), cpu_of(target.pids()), time.monotonic()
    subprocess.run(command, cwd=step, capture_output=True, timeout=seconds * 4 + 120)
    cpu, wall = children_cpu() - cpu, time.monotonic() - wall
    target_cpu = cpu_of(target.pids()) - target_cpu
    sys.path.insert(0, str(REPO))
    from tests.integration.sipp_traces import percentile, read_sipp_rtts, read_sipp_stats

    stats = read_sipp_stats(step)
    rtts = read_sipp_rtts(step)
    return {
        "generator": "sipp",
        "offered": rate,
        "attempted": stats.created,
        "succeeded": stats.successful,
        "failed": stats.failed,
        "achieved": round(stats.successful / wall, 1),
        "p95_ms": percentile(rtts, 0.95) if rtts else None,
        "generator_cpu_pct": round(100 * cpu / wall, 1),
        "target_cpu_pct": round(100 * target_cpu / wall, 1),
    }


def sustained(step: dict[str, Any]) -> bool:
    """Every registration succeeded and 95% of the offered rate was achieved."""
    return bool(step["failed"] == 0 and step["achieved"] >= 0.95 * step["offered"])


def ramp(name: str, run: Any, rates: list[float]) -> list[dict[str, Any]]:
    """Steps at increasing rates until the first that is not sustained."""
    steps = []
    for rate in rates:
        step = run(rate)
        steps.append(step)
        log(
            f"{name} {rate:g}/s: achieved {step['achieved']}/s, failed {step['failed']}, "
            f"p95 {step['p95_ms']} ms, generator CPU {step['generator_cpu_pct']}%, "
            f"target CPU {step['target_cpu_pct']}%"
        )
        if not sustained(step):
            break
    return steps


def best(steps: list[dict[str, Any]]) -> float:
    """The highest sustained rate."""
    return max((s["offered"] for s in steps if sustained(s)), default=0.0)


def calls_phase(target: Target, workdir: Path, users_csv: Path, a: argparse.Namespace) -> Any:
    """``--calls`` concurrent calls with RTP."""
    args = ["--test-type", "calls", "--users", str(2 * a.calls), "--total-calls", str(a.calls)]
    args += ["--concurrent-calls", str(a.calls), "--call-rate", f"{a.call_rate:g}"]
    args += ["--call-duration", f"{a.hold:g}", "--rtp", "--register-rate", "500"]
    args += ["--max-pending", "2000"]
    report, cpu, _target_cpu, wall = run_ours(target, workdir, users_csv, args, a.hold * 4 + 300)
    calls = report["phases"].get("calls", {})
    rtp = report["rtp"] or {}
    log(f"calls: {calls}, RTP loss {rtp.get('loss_percent')}%, MOS {rtp.get('mos', {})}")
    return {
        "concurrent": a.calls,
        "hold_s": a.hold,
        "answered_ok": calls.get("succeeded"),
        "failed": calls.get("failed"),
        "failures": calls.get("failures"),
        "call_setup_p95_ms": report["timers"].get("call_setup", {}).get("p95_ms"),
        "rtp_packets_sent": rtp.get("packets_sent"),
        # What 20 ms pacing calls for over the calls' holding time, both directions.
        "rtp_packets_due": int(2 * a.calls * a.hold / 0.020),
        "rtp_loss_percent": rtp.get("loss_percent"),
        "rtp_jitter_p95_ms": rtp.get("jitter_ms", {}).get("p95"),
        "rtp_latency_mean_ms": rtp.get("latency_ms", {}).get("mean"),
        "mos_mean": rtp.get("mos", {}).get("mean"),
        "mos_min": rtp.get("mos", {}).get("min"),
        "generator_cpu_pct": round(100 * cpu / wall, 1),
        "wall_s": round(wall, 1),
        "criteria": report["criteria"],
    }


def main() -> None:
    """Parse arguments, run, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("kamailio", "warden"), default="kamailio")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--rates", default="500,1000,1500,2000,2500,3000,4000,5000,6000")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--call-rate", type=float, default=100.0)
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="small, short steps")
    parser.add_argument("--no-calls", action="store_true")
    parser.add_argument(
        "--generators", default="warden-loadtest,sipp", help="which registration ramps to run"
    )
    a = parser.parse_args()
    if a.quick:
        a.users, a.rates, a.step_seconds, a.calls, a.hold = 1000, "250,500", 4.0, 50, 5.0
    rates = [float(r) for r in a.rates.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="loadgen-"))
    users = max(a.users, 2 * a.calls)
    target = Target(a.target, workdir, users)
    ours_csv, sipp_csv = write_users(workdir, users)
    result: dict[str, Any] = {
        "target": a.target,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "step_seconds": a.step_seconds,
        "users": a.users,
    }
    target.start()
    try:
        log(f"{a.target} on {LOCALHOST}:{target.port}; work in {workdir}")
        generators = a.generators.split(",")
        ours = (
            []
            if "warden-loadtest" not in generators
            else ramp(
                "warden-loadtest",
                lambda r: registration_step_ours(
                    target, workdir, ours_csv, a.users, r, a.step_seconds
                ),
                rates,
            )
        )
        sipp = [] if "sipp" not in generators else ramp(
            "sipp", lambda r: registration_step_sipp(target, workdir, sipp_csv, r, a.step_seconds),
            rates,
        )  # fmt: skip
        result["registrations"] = {
            "warden_loadtest": ours,
            "sipp": sipp,
            "max_rate_warden_loadtest": best(ours),
            "max_rate_sipp": best(sipp),
            "ratio_to_sipp": round(best(ours) / best(sipp), 3) if best(sipp) else None,
        }
        if not a.no_calls:
            result["calls"] = calls_phase(target, workdir, ours_csv, a)
    finally:
        target.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
