"""
Load generator benchmark: the highest registration rate ``twistd
warden-loadtest`` sustains from one process and with ``--workers 2``, beside
SIPp's on the same target in the same run, and how many concurrent calls with
RTP it carries.

Run from the repository root (or through ``bench/loadgen.sh``) on an otherwise
quiet machine::

    python -m bench.loadgen                     # about 10 minutes
    python -m bench.loadgen --quick             # smoke test, about two minutes
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
   users, by each generator of ``--generators`` in turn: ``warden-loadtest`` (one
   process, ``--test-type registrations --duration``), ``warden-loadtest-2``
   (the same with ``--workers 2``) and ``sipp`` (``bench/scenarios/register.xml``);
   each ramp stops at its first rate not sustained. The SIPp ramp, the
   reference, goes on past ``--rates`` (each step ``--reference-growth`` times
   the last, up to ``--reference-ceiling``) until its own limit is found, with
   ``--sipp-processes`` SIPp processes sharing each step (each its slice of the
   users and its share of the rate). ``limit_found`` says which ramps ended
   at a rate not sustained; a ratio is given only when both its ramps found
   their limit, except that warden-loadtest / SIPp is given as
   ``ratio_one_process_to_sipp_at_most`` when only SIPp's limit was not found. SIPp's achieved rate
   is over the time its calls ran (its statistics' start and last row), as
   warden-loadtest's is over its schedule. A rate is *sustained* when
   every registration succeeded and at least 95% of the offered rate was
   achieved. Per step: offered and achieved rate, failures, p95 of the
   authenticated REGISTER, the generator's CPU (user + system over the step's
   wall time, 100% = one core, from ``RUSAGE_CHILDREN``, which includes the
   ``--workers`` children), the target's (also per registration, to show its
   headroom), and the CPU the rest of the machine
   used meanwhile (``/proc/stat`` busy time minus the generator's and the
   target's). A step is *valid* when that stayed under ``--max-other-pct`` (10%
   of a core); before each step the script waits up to ``--quiet-wait`` seconds
   for the machine to be that quiet. The best rates and the ratios
   (warden-loadtest / SIPp, target >= 0.40; ``--workers 2`` / one process,
   target >= 1.7) use valid steps only; when a ramp has an invalid step, its
   best rate and the ratios that use it are null, with the reason.
   ``--cpu-cap CORES`` gives each generator CORES cores per process in a
   cgroup of its own (``bench/cpucap.py``): warden-loadtest CORES,
   ``--workers 2`` twice CORES (its two generators and their parent),
   SIPp CORES per process. On a machine whose cores the target also needs,
   this is how ``--workers 2`` / one process measures the generator's design
   rather than the cores left; each step reports how often the generator was
   throttled (``cpu_cap.throttled_pct``).
2. Calls: ``--calls`` concurrent calls with ``--rtp`` (G.711, 20 ms, both ways),
   held ``--hold`` seconds, placed at ``--call-rate``; reports answered calls, RTP
   loss, jitter, MOS and the generator's CPU.

Progress goes to stderr; the result is one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.compare import wait_quiet
from bench.cpucap import CpuCap, CpuCaps, throttle_note, throttled_between
from bench.machine import children_cpu_seconds, quiet_enough, system_cpu_seconds
from warden.ops.drtest.scratch import free_control_port, free_port

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


class StepMeter:
    """
    CPU over one step: the generator's (every child reaped meanwhile, which
    includes the ``--workers`` children), the target's, and everything else on
    the machine (``/proc/stat`` busy time minus those two), in % of one core.
    """

    def __init__(self, target: Target, cap: CpuCap | None = None) -> None:
        self.target = target
        #: The generator's CPU cap (``--cpu-cap``), whose throttling the step reports.
        self.cap = cap
        self.cap_before = cap.stats() if cap is not None else {}
        self.busy, self.steal = system_cpu_seconds()
        self.generator = children_cpu_seconds()
        self.target_cpu = cpu_of(target.pids())
        self.wall = time.monotonic()

    def result(self) -> dict[str, Any]:
        """
        Seconds of CPU of the generator and the target, wall seconds, others' %
        of a core, and how much the generator's cap throttled it.
        """
        busy, steal = system_cpu_seconds()
        wall = time.monotonic() - self.wall
        generator = children_cpu_seconds() - self.generator
        target = cpu_of(self.target.pids()) - self.target_cpu
        others = busy - self.busy - generator - target
        capped: dict[str, Any] = {}
        if self.cap is not None:
            capped = {
                "cpu_cap": {
                    "cores": self.cap.cores,
                    **throttled_between(self.cap_before, self.cap.stats()),
                }
            }
        return {
            **capped,
            "generator_cpu_s": generator,
            "target_cpu_s": target,
            "wall_s": wall,
            "other_cpu_pct": round(max(0.0, 100 * others / wall), 1),
            "steal_pct": round(100 * (steal - self.steal) / wall, 1),
        }


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


def write_users(workdir: Path, count: int, sipp_processes: int = 1) -> tuple[Path, list[Path]]:
    """
    The users file of warden-loadtest and the SIPp injection files, one per
    SIPp process, each a contiguous slice of the users (together each user once).
    """
    ours = workdir / "users.csv"
    ours.write_text("".join(f"{n};pw-{n}-secret\n" for n in numbers(count)))
    everyone = numbers(count)
    sipps = []
    for index in range(sipp_processes):
        part = everyone[index * count // sipp_processes : (index + 1) * count // sipp_processes]
        sipp = workdir / f"sipp-users-{index}.csv"
        sipp.write_text(
            "SEQUENTIAL\n"
            + "".join(
                f"{n};pw-{n}-secret;[authentication username={n} password=pw-{n}-secret]\n"
                for n in part
            )
        )
        sipps.append(sipp)
    return ours, sipps


def machine_load(load: dict[str, Any]) -> dict[str, Any]:
    """What a step reports of L{StepMeter.result} beside its CPU: others, steal, the cap."""
    keys = ("other_cpu_pct", "steal_pct", "cpu_cap")
    return {key: load[key] for key in keys if key in load}


def run_ours(
    target: Target,
    workdir: Path,
    users_csv: Path,
    args: list[str],
    timeout: float,
    cap: CpuCap | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """
    Run warden-loadtest (in ``cap``'s cgroup, with its ``--workers`` children,
    when given); (its report, the step's L{StepMeter} figures).
    """
    report = workdir / f"report-{len(list(workdir.glob('report-*')))}.json"
    command = [*TWISTD, "-n", "--pidfile=", f"--logfile={workdir / 'loadtest.log'}"]
    command += ["warden-loadtest", "--pbx-host", LOCALHOST, "--sip-port", str(target.port)]
    command += ["--local-ip", LOCALHOST, "--users-file", str(users_csv), "--no-progress"]
    command += ["--save-report", str(report), *args]
    meter = StepMeter(target, cap)
    done = subprocess.run(
        command,
        cwd=workdir,
        capture_output=True,
        timeout=timeout,
        preexec_fn=None if cap is None else cap.join,
    )
    load = meter.result()
    if not report.exists():
        raise SystemExit(f"warden-loadtest wrote no report: {done.stderr.decode()[-2000:]}")
    return json.loads(report.read_text()), load


def registration_step_ours(
    target: Target,
    workdir: Path,
    users_csv: Path,
    users: int,
    rate: float,
    seconds: float,
    workers: int = 1,
    cap: CpuCap | None = None,
) -> dict[str, Any]:
    """One step of registrations by warden-loadtest (``workers`` processes, in ``cap``)."""
    args = ["--test-type", "registrations", "--users", str(users), "--register-rate", f"{rate:g}"]
    args += ["--duration", f"{seconds:g}", "--max-pending", "5000", "--expires", "3600"]
    args += ["--workers", str(workers)]
    report, load = run_ours(target, workdir, users_csv, args, seconds * 4 + 120, cap)
    cpu, target_cpu = load["generator_cpu_s"], load["target_cpu_s"]
    phase = report["phases"]["register"]
    timeline = report["timeline"]
    # Achieved: successes per second over the seconds the schedule ran.
    busy = [row for row in timeline[: int(seconds)]]
    achieved = sum(row["succeeded"] for row in busy) / max(1, len(busy))
    p99_ms = report["timers"].get("register", {}).get("p99_ms") or 0.0
    register_seconds = seconds + p99_ms / 1000
    share = register_seconds / max(report["duration_s"], register_seconds)
    return {
        "generator": "warden-loadtest" if workers == 1 else f"warden-loadtest-{workers}",
        "offered": rate,
        "attempted": phase["attempted"],
        "succeeded": phase["succeeded"],
        "failed": phase["failed"],
        "failures": phase["failures"],
        "achieved": round(achieved, 1),
        "p95_ms": report["timers"].get("register_auth", {}).get("p95_ms"),
        "generator_cpu_pct": round(100 * cpu / report["duration_s"], 1),
        "target_cpu_pct": round(100 * target_cpu * share / seconds, 1),
        "target_cpu_us_per_registration": round(
            1e6 * target_cpu * share / max(1, phase["succeeded"]), 1
        ),
        **machine_load(load),
    }


def registration_step_sipp(
    target: Target,
    workdir: Path,
    sipp_csvs: list[Path],
    rate: float,
    seconds: float,
    cap: CpuCap | None = None,
) -> dict[str, Any]:
    """
    One step of registrations by SIPp (same scenario as the integration tests):
    one SIPp process per injection file, each at its share of ``rate``, all at
    once (all in ``cap``, when given); their counts and response times added up.
    """
    step = workdir / f"sipp-{rate:g}"
    processes = []
    meter = StepMeter(target, cap)
    for index, csv in enumerate(sipp_csvs):
        share = rate / len(sipp_csvs)
        calls = int(share * seconds)
        where = step / str(index)
        where.mkdir(parents=True)
        command = [
            shutil.which("sipp") or "sipp", f"{LOCALHOST}:{target.port}", "-sf", str(SCENARIO),
            "-inf", str(csv), "-i", LOCALHOST, "-p", "0", "-m", str(calls), "-r", f"{share:g}",
            "-rp", "1000", "-l", str(max(100, int(share * 5))),
            "-timeout", f"{seconds * 4 + 60:g}s", "-timeout_error", "-trace_stat", "-trace_rtt",
            "-rtt_freq", "1", "-nostdin", "-cp", str(free_control_port()),
            "-buff_size", str(4 * 1024 * 1024),
        ]  # fmt: skip
        quiet = subprocess.DEVNULL
        processes.append(
            subprocess.Popen(
                command,
                cwd=where,
                stdout=quiet,
                stderr=quiet,
                preexec_fn=None if cap is None else cap.join,
            )
        )
    for process in processes:
        try:
            process.wait(timeout=seconds * 4 + 120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    load = meter.result()
    cpu, wall, target_cpu = load["generator_cpu_s"], load["wall_s"], load["target_cpu_s"]
    sys.path.insert(0, str(REPO))
    from tests.integration.sipp_traces import percentile, read_sipp_rtts, read_sipp_stats

    created = successful = failed = 0
    rtts: list[float] = []
    spans = []
    for index in range(len(sipp_csvs)):
        stats = read_sipp_stats(step / str(index))
        created += stats.created
        successful += stats.successful
        failed += stats.failed
        rtts += read_sipp_rtts(step / str(index))
        spans.append(sipp_span(stats.row))
    # Achieved over the time SIPp ran its calls (as warden-loadtest's is over
    # its schedule), not over the processes' start-up too.
    starts, ends = [s[0] for s in spans if s], [s[1] for s in spans if s]
    busy = max(ends) - min(starts) if len(starts) == len(spans) else wall
    return {
        "generator": "sipp",
        "processes": len(sipp_csvs),
        "offered": rate,
        "attempted": created,
        "succeeded": successful,
        "failed": failed,
        "achieved": round(successful / max(busy, 1e-3), 1),
        "p95_ms": percentile(rtts, 0.95) if rtts else None,
        "generator_cpu_pct": round(100 * cpu / wall, 1),
        "target_cpu_pct": round(100 * target_cpu / wall, 1),
        "target_cpu_us_per_registration": round(1e6 * target_cpu / max(1, successful), 1),
        **machine_load(load),
    }


def sipp_span(row: dict[str, str]) -> tuple[float, float] | None:
    """
    When SIPp started and wrote its last statistics (epoch seconds, from the
    ``StartTime`` and ``CurrentTime`` of a ``-trace_stat`` row), or None.
    """
    try:
        start, end = (float(row[name].split("\t")[-1]) for name in ("StartTime", "CurrentTime"))
    except (KeyError, ValueError):
        return None
    return (start, end) if end > start else None


def sustained(step: dict[str, Any]) -> bool:
    """Every registration succeeded and 95% of the offered rate was achieved."""
    return bool(step["failed"] == 0 and step["achieved"] >= 0.95 * step["offered"])


def beyond(rates: list[float], growth: float, ceiling: float) -> list[float]:
    """``rates``, then on from the last by ``growth`` times each step up to ``ceiling``."""
    out = list(rates)
    while out and growth > 1 and out[-1] * growth <= ceiling:
        out.append(float(round(out[-1] * growth, -2)))
    return out


def ramp(
    name: str, run: Any, rates: list[float], max_other_pct: float, quiet_wait: float
) -> list[dict[str, Any]]:
    """
    Steps at increasing rates until the first that is not sustained; each after
    waiting for a quiet machine, and marked valid when the rest of the machine
    and the stolen time stayed under ``max_other_pct`` of a core together.
    """
    steps: list[dict[str, Any]] = []
    for rate in rates:
        waited = wait_quiet(max_other_pct, quiet_wait)
        step = run(rate)
        step.update(waited)
        step["valid"] = quiet_enough(step, max_other_pct)
        steps.append(step)
        log(
            f"{name} {rate:g}/s: achieved {step['achieved']}/s, failed {step['failed']}, "
            f"p95 {step['p95_ms']} ms, generator CPU {step['generator_cpu_pct']}%, "
            f"target CPU {step['target_cpu_pct']}%, others {step['other_cpu_pct']}%"
            + throttle_note(step)
            + f"{'' if step['valid'] else ' (INVALID: machine busy)'}"
        )
        if not sustained(step):
            break
    return steps


def best(steps: list[dict[str, Any]]) -> float | None:
    """
    The highest sustained rate, or None when a step up to the first one not
    sustained was invalid (the machine was busy, so the ramp says nothing sure).
    """
    if not steps or not all(s["valid"] for s in steps):
        return None
    return max((s["offered"] for s in steps if sustained(s)), default=0.0)


def limit_found(steps: list[dict[str, Any]]) -> bool:
    """True when the ramp ended at a step not sustained (its limit lies below that rate)."""
    return bool(steps) and not sustained(steps[-1])


def ratio(top: float | None, bottom: float | None) -> float | None:
    """``top / bottom`` when both are known and ``bottom`` is positive."""
    return round(top / bottom, 3) if top is not None and bottom else None


def calls_phase(target: Target, workdir: Path, users_csv: Path, a: argparse.Namespace) -> Any:
    """``--calls`` concurrent calls with RTP."""
    args = ["--test-type", "calls", "--users", str(2 * a.calls), "--total-calls", str(a.calls)]
    args += ["--concurrent-calls", str(a.calls), "--call-rate", f"{a.call_rate:g}"]
    args += ["--call-duration", f"{a.hold:g}", "--rtp", "--register-rate", "500"]
    args += ["--max-pending", "2000"]
    report, load = run_ours(target, workdir, users_csv, args, a.hold * 4 + 300)
    cpu, wall = load["generator_cpu_s"], load["wall_s"]
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
        "other_cpu_pct": load["other_cpu_pct"],
        "wall_s": round(wall, 1),
        "criteria": report["criteria"],
    }


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM: unwind, so that the target stops and the CPU caps are removed."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Parse arguments, run, print the JSON result."""
    signal.signal(signal.SIGTERM, _terminated)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("kamailio", "warden"), default="kamailio")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--rates", default="500,1000,1500,2000,2500,3000,4000,5000,6000")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--call-rate", type=float, default=100.0)
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument(
        "--sipp-processes", type=int, default=1,
        help="SIPp processes sharing each SIPp step (each a slice of the users)",
    )  # fmt: skip
    parser.add_argument(
        "--reference-growth", type=float, default=1.25,
        help="the SIPp ramp goes on past --rates by this factor per step",
    )  # fmt: skip
    parser.add_argument(
        "--reference-ceiling", type=float, default=40000.0,
        help="... up to this rate; a SIPp ramp still sustained there did not find its limit",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small, short steps")
    parser.add_argument("--no-calls", action="store_true")
    parser.add_argument(
        "--generators", default="sipp,warden-loadtest,warden-loadtest-2",
        help="which registration ramps to run, in this order",
    )  # fmt: skip
    parser.add_argument(
        "--max-other-pct",
        type=float,
        default=10.0,
        help="a step is valid while the rest of the machine used less (%% of a core)",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=30.0,
        help="seconds to wait for a quiet machine before each step",
    )  # fmt: skip
    parser.add_argument(
        "--cpu-cap", type=float,
        help="give every generator this many cores per process, in a cgroup of its own"
        " (bench/cpucap.py; needs root): warden-loadtest CORES, --workers 2 twice CORES,"
        " SIPp CORES per --sipp-processes; the target stays uncapped",
    )  # fmt: skip
    a = parser.parse_args()
    if a.quick:
        a.users, a.rates, a.step_seconds, a.calls, a.hold = 1000, "250,500", 4.0, 50, 5.0
    rates = [float(r) for r in a.rates.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="loadgen-"))
    users = max(a.users, 2 * a.calls)
    target = Target(a.target, workdir, users)
    if a.sipp_processes < 1:
        raise SystemExit("--sipp-processes must be at least 1")
    ours_csv, sipp_csvs = write_users(workdir, users, a.sipp_processes)
    result: dict[str, Any] = {
        "target": a.target,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "step_seconds": a.step_seconds,
        "users": a.users,
        "max_other_pct": a.max_other_pct,
        "sipp_processes": a.sipp_processes,
    }
    caps = CpuCaps(a.cpu_cap) if a.cpu_cap else None

    def cap(name: str, processes: int) -> CpuCap | None:
        """The generator's cgroup: ``--cpu-cap`` cores per process."""
        return None if caps is None else caps.group(name, caps.cores * processes)

    if caps is not None:
        result["cpu_cap_cores_per_process"] = caps.cores
    steps = {
        "sipp": lambda r: registration_step_sipp(
            target, workdir, sipp_csvs, r, a.step_seconds, cap("sipp", len(sipp_csvs))
        ),
        "warden-loadtest": lambda r: registration_step_ours(
            target, workdir, ours_csv, a.users, r, a.step_seconds, cap=cap("warden-loadtest", 1)
        ),
        "warden-loadtest-2": lambda r: registration_step_ours(
            target, workdir, ours_csv, a.users, r, a.step_seconds, 2, cap("warden-loadtest-2", 2)
        ),
    }
    target.start()
    try:
        log(f"{a.target} on {LOCALHOST}:{target.port}; work in {workdir}")
        ramps: dict[str, list[dict[str, Any]]] = {}
        for name in a.generators.split(","):
            if name not in steps:
                raise SystemExit(f"--generators: unknown {name!r} (one of {', '.join(steps)})")
            # The reference ramps on past --rates until SIPp's own limit is found.
            ramp_rates = (
                beyond(rates, a.reference_growth, a.reference_ceiling) if name == "sipp" else rates
            )
            ramps[name] = ramp(name, steps[name], ramp_rates, a.max_other_pct, a.quiet_wait)
        tops = {name: best(found) for name, found in ramps.items()}
        found = {name: limit_found(steps) for name, steps in ramps.items()}
        invalid = [name for name, steps in ramps.items() if tops[name] is None and steps]
        one_to_sipp = ratio(tops.get("warden-loadtest"), tops.get("sipp"))
        result["registrations"] = {
            "steps": ramps,
            "max_rate": tops,
            # A ramp that sustained its top rate did not find its limit: its
            # max_rate is a lower bound, and a ratio over it an upper bound.
            "limit_found": found,
            "ratio_one_process_to_sipp": (
                one_to_sipp if found.get("sipp") and found.get("warden-loadtest") else None
            ),
            "ratio_one_process_to_sipp_at_most": (
                one_to_sipp
                if found.get("warden-loadtest") and "sipp" in found and not found["sipp"]
                else None
            ),
            "ratio_two_workers_to_one": (
                ratio(tops.get("warden-loadtest-2"), tops.get("warden-loadtest"))
                if found.get("warden-loadtest-2") and found.get("warden-loadtest")
                else None
            ),
            "invalid": (
                f"ramps with a step where the rest of the machine used more than "
                f"{a.max_other_pct:g}% of a core: {', '.join(invalid)}"
                if invalid
                else None
            ),
        }
        if "sipp" in found and not found["sipp"]:
            log(
                f"SIPp sustained every rate up to {tops['sipp']}/s: its limit was not found, "
                "so warden-loadtest / SIPp is only bounded (ratio_one_process_to_sipp_at_most); "
                "raise --reference-ceiling or --sipp-processes"
            )
        if not a.no_calls:
            result["calls"] = calls_phase(target, workdir, ours_csv, a)
    finally:
        target.stop()
        if caps is not None:
            caps.remove()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
