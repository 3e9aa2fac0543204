"""
Call benchmarks: how many authenticated calls per second one Warden sets up
with a relay port pair each, and how many concurrent calls it relays G.711 RTP
for without loss or added jitter.

Run from the repository root (or through ``bench/calls.sh``)::

    python -m bench.calls                   # both modes, about 12 minutes
    python -m bench.calls --mode cps        # call rate only
    python -m bench.calls --mode media      # concurrent relayed calls only
    python -m bench.calls --quick           # smoke test, about a minute
    python -m bench.calls --plugins sip,media,admin   # another [plugins] enabled

Both modes, on 127.0.0.1: start ``twistd warden`` on a fresh data directory
(media ports 10000-20000, other settings default), import a caller and a callee
extension with ``wardenctl``, register a SIPp UAS (``call_uas_bench.xml``) as the
callee and drive a SIPp UAC at it through Warden: INVITE, 407, INVITE with
digest credentials, 180, 200, ACK, BYE. Warden is a B2BUA and anchors the
media, so every call gets two RTP/RTCP port pairs.

``--mode cps``: calls without RTP or pause (``call_uac_cps.xml``), ``--step-seconds``
of calls at each rate of ``--steps``, stopping after the first step in which a
call failed. Per step: calls attempted, succeeded and failed (``-trace_stat``),
call setup time p50/p95/p99 (``-trace_rtt`` measure 1: authenticated INVITE to
200), Warden's CPU and both SIPp processes' CPU over the step, and, from the
call records in ``data/warden.db``, that every call was answered with a relay
port on each side. ``--cpu-cap CORES`` caps each SIP worker (or the one SIP
process) at CORES cores in a cgroup of its own (``bench/cpucap.py``): 1 vs 2
workers then compares equal budgets per process on a machine whose cores
SIPp also needs; each step reports how often each capped process was throttled.

``--mode media``: at each concurrency of ``--concurrency-steps`` (up to
``--concurrent``), that many calls are set up at ``--ramp-rate`` per second and
held for ``--hold-seconds``. The UAC (``call_uac_media.xml``) plays a G.711
A-law pcap written for the run (20 ms packets for the whole hold time) towards
Warden's side-a port; Warden relays it to the UAS, which echoes it (``-rtp_echo``),
and relays the echo back. So RTP flows both ways through the relay all along.
Per step, from the call records: loss (``lost_in`` over expected, per side),
the RFC 3550 jitter Warden measured on each side when the call ended and their
difference (the echo through the relay and back, minus what came from the
caller: the jitter the relay and the echo added), and packets per second through
the relay; from ``/proc``, over the time all calls were up: Warden's CPU, RSS
growth per call, and the SIPp processes' CPU. Stops after the first step that
misses the loss/jitter target.

Progress goes to stderr; the result is one JSON document on stdout. CPU is
user + system time over wall time, 100% = one core.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import sqlite3
import struct
import sys
import time
import tomllib
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from bench.cpucap import CpuCaps, throttle_note
from bench.machine import MAX_OTHER_PCT, children_cpu_seconds, quiet_enough, system_cpu_seconds
from bench.register import (
    SIPP_BUFFER_BYTES,
    cap_sip_processes,
    combined_stats,
    failure_events,
    log,
    port_in_use,
    share,
    share_dirs,
    start_run,
    warden_processes,
    worker_settings,
)
from tests.integration.clients import LOCALHOST, pause, poll, real_reactor
from tests.integration.harness import (
    WardenFailed,
    WardenProcess,
    free_media_port,
    free_port,
    process_cpu_seconds,
    process_rss_kib,
    provision,
    run_sipp,
    sipp_command,
    sipp_register_args,
    spawn,
)
from tests.integration.sipp_traces import percentile, read_sipp_errors, read_sipp_stats

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CPS_RATES = (50, 100, 150, 200, 300, 400, 500, 600, 800)
QUICK_CPS_RATES = (20, 50)
CONCURRENCY = (50, 100, 150, 200, 300, 500)
#: Warden's relay ports here: its default range, below the ports SIPp's
#: ``-mp`` takes (``free_media_port``, 20002 up). A range reaching into those
#: let the relay take a port a SIPp process was about to bind, which then
#: exited with 254 (cannot bind) and made the step invalid.
MEDIA_RANGE = (10000, 20000)
TARGET = {
    "cps": 500,
    "concurrent": 500,
    "loss_pct": 0.1,
    "added_jitter_p99_ms": 5.0,
}
PTIME = 0.020
PCAP_TAIL = 0.5  # the pcap stops this long before the BYE, so no RTP races it
RTP_SSRC = 0x5741524E


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__)
    parser.add_argument("--mode", choices=("cps", "media", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="a small run for smoke-testing")
    parser.add_argument("--steps", help="cps: comma-separated call rates (default 50..800)")
    parser.add_argument("--max-rate", type=int, default=max(CPS_RATES), help="cps: top rate")
    parser.add_argument("--step-seconds", type=float, default=10.0, help="cps: step length")
    parser.add_argument("--concurrent", type=int, default=500, help="media: top concurrency")
    parser.add_argument(
        "--concurrency-steps", help="media: comma-separated concurrencies (default 50..500)"
    )
    parser.add_argument("--hold-seconds", type=float, default=60.0, help="media: call length")
    parser.add_argument("--ramp-rate", type=float, default=50.0, help="media: set-up rate /s")
    parser.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    parser.add_argument(
        "--plugins", help="comma-separated [plugins] enabled for Warden (default: its default)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="cps: [sip] workers (ADR 0032), with [state] in a throwaway redis-server whose"
        " CPU counts as Warden's (default 0: one process, as before)",
    )
    parser.add_argument(
        "--sipp-procs",
        type=int,
        default=1,
        help="cps: SIPp UAC processes, each from its own port with its own caller, callee"
        " (a SIPp UAS of its own) and share of the rate (the kernel spreads the workers'"
        " shared port by source address)",
    )
    parser.add_argument(
        "--media",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [media] setting for Warden, VALUE in TOML (relay_processes=2,"
        " relay_process=false); repeatable",
    )
    parser.add_argument(
        "--socket-per-call",
        action="store_true",
        help="cps: each SIPp UAC places each call from a socket of its own (-t un), as many"
        " phones would: the kernel spreads the workers' shared port by the sender's address,"
        " so a few SIPp sockets split the calls unevenly (16 gave 71%% / 29%%)",
    )
    parser.add_argument(
        "--cpu-cap",
        type=float,
        help="cps: cap each SIP worker (or the one SIP process) at this many cores, each in a"
        " cgroup of its own (bench/cpucap.py; needs root); media processes stay uncapped",
    )
    parser.add_argument(
        "--max-other-pct",
        type=float,
        default=MAX_OTHER_PCT,
        help="a step is valid when the rest of the machine used less CPU than this (%% of a core)",
    )
    args = parser.parse_args(argv)
    try:
        args.media = media_settings(args.media)
    except ValueError as e:
        parser.error(f"--media: {e}")
    if args.workers < 0 or args.sipp_procs < 1:
        parser.error("--workers must be 0 or more and --sipp-procs 1 or more")
    if args.workers and args.mode != "cps":
        parser.error("--workers measures the call rate: use it with --mode cps")
    if args.quick:
        args.step_seconds = min(args.step_seconds, 5.0)
        args.concurrent = min(args.concurrent, 20)
        args.hold_seconds = min(args.hold_seconds, 10.0)
    rates = (
        _int_list(args.steps) if args.steps else list(QUICK_CPS_RATES if args.quick else CPS_RATES)
    )
    args.rate_list = [r for r in rates if r <= args.max_rate]
    levels = _int_list(args.concurrency_steps) if args.concurrency_steps else list(CONCURRENCY)
    args.concurrency_list = sorted({n for n in levels if n < args.concurrent} | {args.concurrent})
    if args.quick and not args.concurrency_steps:
        args.concurrency_list = [args.concurrent]
    if args.mode != "media" and not args.rate_list:
        parser.error("no cps step at or below --max-rate")
    if args.hold_seconds < max(args.concurrency_list) / args.ramp_rate + 6:
        parser.error("--hold-seconds must exceed the ramp (concurrency / --ramp-rate) by 6 s")
    return args


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


# -- measurements -------------------------------------------------------------------


class CpuMeter:
    """CPU seconds of Warden, the SIPp processes and the machine, between two reads."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        busy, steal = system_cpu_seconds()
        out = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        out.update(wall=time.monotonic(), busy=busy, steal=steal, reaped=children_cpu_seconds())
        return out

    def percentages(self, reaped_as: str | None = None) -> dict[str, float]:
        """
        CPU % of each process since construction; the CPU of children reaped in
        the meantime is added to ``reaped_as`` (a SIPp that already exited).
        """
        end = self._read()
        wall = end["wall"] - self._start["wall"]
        used = {name: end[name] - self._start[name] for name in self.pids}
        if reaped_as is not None:
            used[reaped_as] = used.get(reaped_as, 0.0) + end["reaped"] - self._start["reaped"]
        others = end["busy"] - self._start["busy"] - sum(used.values())
        out = {f"{name}_cpu_pct": round(100 * seconds / wall, 1) for name, seconds in used.items()}
        out["other_cpu_pct"] = round(max(0.0, 100 * others / wall), 1)
        out["steal_pct"] = round(100 * (end["steal"] - self._start["steal"]) / wall, 1)
        out["seconds"] = round(wall, 2)
        return out


def read_rtds(directory: Path, rtd: str = "1") -> list[float]:
    """Response times (ms) of measure ``rtd`` in SIPp's ``-trace_rtt`` file."""
    found = sorted(directory.glob("*_rtt.csv"))
    if not found:
        return []
    out: list[float] = []
    with open(found[-1], encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(";")
            if len(parts) >= 3 and parts[2] == rtd:
                try:
                    out.append(float(parts[1]))
                except ValueError:
                    continue
    return out


def percentiles(values: Sequence[float], prefix: str, digits: int = 3) -> dict[str, Any]:
    """p50/p95/p99 and max of ``values`` as ``<prefix>_p50`` ... (None when empty)."""
    out: dict[str, Any] = {}
    for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
        out[f"{prefix}_{name}"] = round(percentile(values, fraction), digits) if values else None
    return out


def max_rowid(database: Path) -> int:
    """The highest row id in ``call_records`` (0 when empty)."""
    with _read_only(database) as connection:
        (value,) = connection.execute(
            "SELECT coalesce(max(rowid), 0) FROM call_records"
        ).fetchone()
    return int(value)


def records_after(database: Path, rowid: int) -> list[dict[str, Any]]:
    """Call records written after row ``rowid``, with ``media`` decoded."""
    query = (
        "SELECT call_id, disposition, hangup_cause, hangup_side, codec, answered_at,"
        " ended_at, media"
        " FROM call_records WHERE rowid > ? ORDER BY rowid"
    )
    with _read_only(database) as connection:
        rows = connection.execute(query, (rowid,)).fetchall()
    names = (
        "call_id", "disposition", "hangup_cause", "hangup_side", "codec", "answered_at",
        "ended_at",
    )  # fmt: skip
    return [{**dict(zip(names, row[:7])), "media": json.loads(row[7])} for row in rows]


def live_calls(database: Path) -> int:
    """Rows in ``live_calls``: calls in progress."""
    with _read_only(database) as connection:
        (count,) = connection.execute("SELECT count(*) FROM live_calls").fetchone()
    return int(count)


def _read_only(database: Path) -> closing[sqlite3.Connection]:
    return closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10))


async def wait_for_records(database: Path, rowid: int, expected: int) -> list[dict[str, Any]]:
    """
    The call records after ``rowid`` once there are ``expected`` of them, or once
    their number stopped growing for 3 s (at most 60 s).
    """
    seen, still = -1, 0
    for _ in range(600):
        records = records_after(database, rowid)
        if len(records) >= expected:
            return records
        still = still + 1 if len(records) == seen else 0
        if still >= 30:
            return records
        seen = len(records)
        await pause(0.1)
    return records_after(database, rowid)


def has_relay_ports(record: dict[str, Any]) -> bool:
    """Both sides of the call had an RTP port from Warden's media range."""
    media = record["media"]
    return all(
        isinstance(media.get(side, {}).get("rtp_port"), int)
        and MEDIA_RANGE[0] <= media[side]["rtp_port"] <= MEDIA_RANGE[1]
        for side in ("a", "b")
    )


def udp_sockets_of(pid: int) -> dict[int, int]:
    """
    The UDP ports process ``pid`` has sockets bound to, each with the datagrams the
    kernel dropped on it so far because its receive buffer was full (``/proc``).
    """
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    sockets: dict[int, int] = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table, encoding="ascii") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    port = int(fields[1].rsplit(":", 1)[1], 16)
                    sockets[port] = sockets.get(port, 0) + int(fields[-1])
    return sockets


def ended_by_caller(record: dict[str, Any]) -> bool:
    """The call ended with the caller's BYE (not a timeout, nor the callee)."""
    return bool(record["hangup_side"] == "caller" and record["hangup_cause"] == "BYE")


def media_ports_of(pid: int) -> list[int]:
    """The ports of the media range that process ``pid`` holds."""
    return sorted(p for p in udp_sockets_of(pid) if MEDIA_RANGE[0] <= p <= MEDIA_RANGE[1])


def dispositions(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many records have each disposition."""
    out: dict[str, int] = {}
    for record in records:
        out[record["disposition"]] = out.get(record["disposition"], 0) + 1
    return out


# -- the pcap the media UAC plays ---------------------------------------------------


def write_rtp_pcap(path: Path, seconds: float, alaw: bytes = b"") -> int:
    """
    Write a pcap of G.711 A-law RTP (payload type 8, 160-byte payload every 20 ms,
    sequence numbers and timestamps continuous) lasting ``seconds``, in the
    Ethernet/IPv4/UDP framing SIPp's ``play_pcap_audio`` reads: A-law silence, or
    the successive 160-byte slices of ``alaw`` (the pcap then ends with it when it
    is shorter). Returns the number of packets.
    """
    count = int(seconds / PTIME)
    if alaw:
        count = min(count, len(alaw) // 160)
    silence = b"\xd5" * 160
    udp_length = 8 + 12 + len(silence)
    ip_header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_length, 0, 0, 64, 17, 0,
        socket.inet_aton(LOCALHOST), socket.inet_aton(LOCALHOST),
    )  # fmt: skip
    ip_header = ip_header[:10] + struct.pack("!H", _ip_checksum(ip_header)) + ip_header[12:]
    frame_head = (
        b"\x00" * 12 + b"\x08\x00" + ip_header + struct.pack("!HHHH", 6000, 6000, udp_length, 0)
    )
    first_seq = random.randrange(0, 30000)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(count):
            rtp = struct.pack("!BBHII", 0x80, 8, (first_seq + i) & 0xFFFF, 160 * i, RTP_SSRC)
            frame = frame_head + rtp + (alaw[160 * i : 160 * (i + 1)] if alaw else silence)
            micros = round(i * PTIME * 1_000_000)
            f.write(
                struct.pack(
                    "<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)
                )
            )
            f.write(frame)
    return count


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# -- Warden with a caller and a registered callee -----------------------------------


def media_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """``--media KEY=VALUE`` options as a ``[media]`` table (VALUE is TOML)."""
    table: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"{pair!r} is not KEY=VALUE")
        try:
            table[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{pair!r}: the value is not TOML ({e})") from None
    return table


class Rig:
    """
    A Warden on a fresh data directory (``settings`` merged over its defaults),
    and ``procs`` pairs of a caller and a callee extension, each callee a SIPp
    UAS of its own registered as it that answers every call (echoing RTP when
    ``echo``): UAC process ``k`` calls callee ``k`` as caller ``k``. Warden's
    media ports are ``media_range`` (None: its default); ``extra_pids`` are
    processes whose CPU counts as Warden's (a Redis of its own); with
    ``socket_per_call`` each UAC call comes from a socket of its own.
    """

    def __init__(
        self,
        workdir: Path,
        echo: bool,
        plugins: Sequence[str] = (),
        media_range: tuple[int, int] | None = MEDIA_RANGE,
        *,
        settings: dict[str, Any] | None = None,
        procs: int = 1,
        extra_pids: Sequence[int] = (),
        socket_per_call: bool = False,
    ) -> None:
        self.workdir = workdir
        self.echo = echo
        settings = dict(settings or {})
        if media_range is not None:  # None: Warden's default range
            ports = {"port_min": media_range[0], "port_max": media_range[1]}
            settings["media"] = {**ports, **settings.get("media", {})}
        if plugins:
            settings["plugins"] = {"enabled": list(plugins)}
        self.warden = WardenProcess(workdir / "warden", settings=settings)
        self.procs = procs
        self.extra_pids = tuple(extra_pids)
        self.uas_ports = [free_port() for _ in range(procs)]
        self.uas_media = [free_media_port() for _ in range(procs)]
        self.caller_csvs = [
            workdir / ("caller.csv" if procs == 1 else f"caller{k}.csv") for k in range(procs)
        ]
        self._uas: list[Any] = []
        self._uas_children: list[Any] = []
        #: CPU caps on Warden's SIP processes (``--cpu-cap``), removed by L{stop}.
        self.caps: CpuCaps | None = None
        #: Each UAC call from a socket of its own (``--socket-per-call``).
        self.socket_per_call = socket_per_call

    # The first UAS, as one-UAS callers knew it.
    @property
    def uas_port(self) -> int:
        return self.uas_ports[0]

    @property
    def caller_csv(self) -> Path:
        return self.caller_csvs[0]

    @property
    def uas_pid(self) -> int:
        return int(self._uas[0].pid)

    @property
    def uas_pids(self) -> list[int]:
        return [int(uas.pid) for uas in self._uas]

    def warden_pids(self) -> dict[str, int]:
        """Warden's processes (L{warden_processes}) and extra_pids, by name."""
        pids = warden_processes(self.warden.pid)
        for i, extra in enumerate(self.extra_pids):
            pids["redis" if i == 0 else f"redis{i}"] = extra
        return pids

    async def start(self) -> None:
        """Start Warden, provision, register and start the UASes."""
        log(f"starting Warden on {LOCALHOST}:{self.warden.port} ({self.warden.workdir})")
        await self.warden.start()
        users = await provision(self.warden.config_path, 2 * self.procs, first=2000)
        numbers, passwords = users.numbers, users.passwords
        for k in range(self.procs):
            caller, callee = numbers[2 * k], numbers[2 * k + 1]
            self.caller_csvs[k].write_text(
                f"SEQUENTIAL\n{caller};{passwords[caller]};{callee};"
                f"[authentication username={caller} password={passwords[caller]}]\n"
            )
            await self._register_uas(k, callee, passwords[callee])
            await self._start_uas(k)
            log(
                f"caller {caller} -> callee {callee} (SIPp UAS on {LOCALHOST}:{self.uas_ports[k]})"
            )

    async def _register_uas(self, k: int, callee: str, password: str) -> None:
        suffix = "" if self.procs == 1 else str(k)
        callee_csv = self.workdir / f"callee{suffix}.csv"
        callee_csv.write_text(
            f"SEQUENTIAL\n{callee};{password};"
            f"[authentication username={callee} password={password}]\n"
        )
        reg_dir = self.workdir / f"register{suffix}"
        reg_dir.mkdir()
        reg = await run_sipp(
            sipp_register_args(
                self.warden.address, callee_csv, 1, 10, local_port=self.uas_ports[k]
            ),
            reg_dir,
        )
        if reg.code != 0:
            raise RuntimeError(
                f"registering the UAS failed: {reg.stderr}{read_sipp_errors(reg_dir)}"
            )

    async def _start_uas(self, k: int) -> None:
        uas_dir = self.workdir / ("uas" if self.procs == 1 else f"uas{k}")
        uas_dir.mkdir()
        args = [
            "-sf", str(SCENARIOS / "call_uas_bench.xml"), "-i", LOCALHOST,
            "-p", str(self.uas_ports[k]), "-mp", str(self.uas_media[k]),
            "-buff_size", str(SIPP_BUFFER_BYTES), "-l", "100000",
            "-trace_err", "-trace_stat",
            *(["-rtp_echo"] if self.echo else []),
            f"{self.warden.address[0]}:{self.warden.address[1]}",
        ]  # fmt: skip
        child, process = spawn(sipp_command(args), uas_dir)
        self._uas_children.append(child)
        self._uas.append(process)
        if not await poll(lambda: port_in_use(self.uas_ports[k], "udp"), 10.0):
            raise RuntimeError(f"SIPp UAS did not start: {child.output()}")

    def uac_args(
        self, scenario: str | Path, calls: int, rate: float, timeout: float, k: int = 0
    ) -> list[str]:
        """SIPp UAC ``k``'s arguments placing ``calls`` calls at ``rate`` through Warden."""
        return [
            f"{self.warden.address[0]}:{self.warden.address[1]}",
            "-sf", str(SCENARIOS / scenario), "-inf", str(self.caller_csvs[k]),
            "-i", LOCALHOST, "-p", str(free_port()), "-mp", str(free_media_port()),
            "-m", str(calls), "-r", f"{rate:g}", "-rp", "1000",
            "-timeout", f"{timeout:g}s", "-timeout_error",
            "-buff_size", str(SIPP_BUFFER_BYTES),
            "-trace_stat", "-trace_err",
            *(("-t", "un", "-max_socket", "10000") if self.socket_per_call else ()),
        ]  # fmt: skip

    def sip_drops(self) -> dict[str, int]:
        """Datagrams dropped so far on Warden's and the UASes' SIP sockets (full buffers)."""
        warden = list(warden_processes(self.warden.pid).values())
        return {
            "warden": sum(udp_sockets_of(pid).get(self.warden.port, 0) for pid in warden),
            "sipp_uas": sum(
                udp_sockets_of(pid).get(port, 0)
                for pid, port in zip(self.uas_pids, self.uas_ports)
            ),
        }

    def echo_drops(self) -> int:
        """Datagrams dropped so far on the UASes' RTP echo sockets (full buffer)."""
        return sum(
            udp_sockets_of(pid).get(port, 0) for pid, port in zip(self.uas_pids, self.uas_media)
        )

    def check_uas(self) -> None:
        """Raise if a UAS exited."""
        for child in self._uas_children:
            if not child.running:
                raise RuntimeError(f"SIPp UAS exited: {child.output()}")

    async def stop(self) -> dict[str, Any]:
        """Stop the UASes and Warden; what was left behind."""
        leftovers: dict[str, Any] = {}
        if self.warden.running:
            # Long enough for calls that lost their ACK to end at Timer H (32 s).
            await poll(lambda: live_calls(self.warden.database_path) == 0, 45.0)
            leftovers["live_calls"] = live_calls(self.warden.database_path)
            leftovers["media_ports_held"] = [
                port
                for pid in warden_processes(self.warden.pid).values()
                for port in media_ports_of(pid)
            ]
            leftovers["warden_rss_mib"] = round(self.warden.rss_kib() / 1024, 1)
        for child, process in zip(self._uas_children, self._uas):
            if child.running:
                process.signalProcess("KILL")
                await child.ended
        try:
            code = await self.warden.stop()
        except WardenFailed as e:
            log(f"Warden did not stop: {e}")
            code = None
        log(f"Warden stopped (exit {code})")
        leftovers["warden_exit"] = code
        if self.caps is not None:
            leftovers["cpu_cap"] = self.caps.describe()
            self.caps.remove()
        return leftovers


# -- call rate -----------------------------------------------------------------------


async def cps_step(rig: Rig, rate: int, args: argparse.Namespace) -> dict[str, Any]:
    """
    ``--step-seconds`` of calls without media or pause at ``rate``, split over
    the rig's UAC processes; its measurements.
    """
    calls = max(1, int(rate * args.step_seconds))
    run_dir = rig.workdir / f"cps-{rate}"
    run_dir.mkdir()
    dirs = share_dirs(run_dir, rig.procs)
    database = rig.warden.database_path
    rowid = max_rowid(database)
    drops_before = rig.sip_drops()
    warden = rig.warden_pids()
    uases = {f"sipp_uas{k}": pid for k, pid in enumerate(rig.uas_pids)}
    meter = CpuMeter({**warden, **uases})
    if rig.caps is not None:
        rig.caps.mark()

    async def run_share(k: int) -> Any:
        n = share(calls, rig.procs, k)
        share_rate = rate / rig.procs
        sipp_args = rig.uac_args("call_uac_cps.xml", n, share_rate, n / share_rate * 2 + 30, k)
        sipp_args += ["-l", str(max(100, int(share_rate * 5))), "-trace_rtt", "-rtt_freq", "1"]
        return await run_sipp(sipp_args, dirs[k], timeout=n / share_rate * 3 + 60)

    results = await defer.gatherResults(
        [defer.Deferred.fromCoroutine(run_share(k)) for k in range(rig.procs)]
    )
    cpu = meter.percentages(reaped_as="sipp_uac")
    result = next((r for r in results if r.code != 0), results[0])
    drops = {k: v - drops_before[k] for k, v in rig.sip_drops().items()}
    rig.check_uas()
    stats = combined_stats(dirs)
    records = await wait_for_records(database, rowid, stats.successful)
    answered = [r for r in records if r["disposition"] == "ANSWERED"]
    by_process = {name: cpu[f"{name}_cpu_pct"] for name in warden}
    step: dict[str, Any] = {
        "rate": rate,
        "planned": calls,
        "attempted": stats.created,
        "succeeded": stats.successful,
        "failed": stats.failed,
        "achieved_rate": float(stats.row.get("CallRate(C)", "0") or 0),
        "retransmissions": stats.retransmissions,
        **percentiles([ms for d in dirs for ms in read_rtds(d)], "setup_ms", 1),
        # Warden: the process, or the supervisor, its workers and their Redis.
        "warden_cpu_pct": round(sum(by_process.values()), 1),
        "cpu_pct_by_process": by_process,
        "sipp_uac_cpu_pct": cpu["sipp_uac_cpu_pct"],
        "sipp_uas_cpu_pct": round(sum(cpu[f"{name}_cpu_pct"] for name in uases), 1),
        "other_cpu_pct": cpu["other_cpu_pct"],
        "steal_pct": cpu["steal_pct"],
        "call_records": len(records),
        "dispositions": dispositions(records),
        "answered_with_relay_ports": sum(1 for r in answered if has_relay_ports(r)),
        "ended_by_caller_bye": sum(1 for r in answered if ended_by_caller(r)),
        "sip_socket_drops": drops,
        "warden_rss_kib": rig.warden.rss_kib(),
        "wall_seconds": cpu["seconds"],
        "sipp_exit": result.code,
        "sipp_exits": [r.code for r in results],
    }
    if rig.caps is not None:
        step["cpu_cap"] = rig.caps.since_mark()
    step["all_ok"] = cps_ok(step)
    step["valid"] = cps_valid(step, args.max_other_pct)
    log(
        f"cps {rate}/s: {stats.successful}/{calls} ok, {stats.failed} failed,"
        f" {step['achieved_rate']:g}/s achieved, setup p50/p95/p99"
        f" {step['setup_ms_p50']}/{step['setup_ms_p95']}/{step['setup_ms_p99']} ms,"
        f" relay ports {step['answered_with_relay_ports']}/{calls},"
        f" ended by BYE {step['ended_by_caller_bye']}, SIP drops {drops},"
        f" Warden {step['warden_cpu_pct']}%"
        + (f" {by_process}" if len(by_process) > 1 else "")
        + f", SIPp {step['sipp_uac_cpu_pct']}% + {step['sipp_uas_cpu_pct']}%,"
        f" others {step['other_cpu_pct']}%"
        + throttle_note(step)
        + ("" if step["valid"] else " (INVALID: machine busy or SIPp failed)")
    )
    if not step["all_ok"]:
        log(f"sipp exit {result.code}: {result.stderr.strip()[-300:]}")
        for d in dirs:
            for line in failure_events(read_sipp_errors(d, 5_000_000)):
                log(f"  sipp: {line}")
    return step


def cps_valid(step: dict[str, Any], max_other_pct: float) -> bool:
    """
    The step's figures say something about Warden: the rest of the machine
    stayed under ``max_other_pct`` of a core, and every SIPp process ran to its
    end (exit 0, or 1 for failed calls; anything else is SIPp's own failure).
    """
    return quiet_enough(step, max_other_pct) and all(code in (0, 1) for code in step["sipp_exits"])


def cps_ok(step: dict[str, Any]) -> bool:
    """
    Every planned call succeeded for SIPp and, by Warden's records, was answered
    with a relay port on each side and ended by the caller's BYE.
    """
    planned = step["planned"]
    return bool(
        step["failed"] == 0
        and step["succeeded"] == planned
        and step["answered_with_relay_ports"] == planned
        and step["ended_by_caller_bye"] == planned
    )


def cps_sustained(step: dict[str, Any]) -> bool:
    """All OK, and SIPp kept 95% of the rate: Warden kept up."""
    return cps_ok(step) and step["achieved_rate"] >= 0.95 * step["rate"]


async def cps_mode(rig: Rig, args: argparse.Namespace) -> dict[str, Any]:
    """The call-rate ramp, stopping after the first step that was not all OK."""
    steps = []
    for rate in args.rate_list:
        step = await cps_step(rig, rate, args)
        steps.append(step)
        if not step["all_ok"] or step["achieved_rate"] < rate / 2:
            break
    rates = [s["rate"] for s in steps if cps_sustained(s) and s["valid"]]
    best = max(rates) if rates else None
    return {
        "step_seconds": args.step_seconds,
        "workers": args.workers,
        "cpu_cap_cores": args.cpu_cap,
        "socket_per_call": args.socket_per_call,
        "sipp_procs": args.sipp_procs,
        "steps": steps,
        # Valid steps only: a busy machine or a failing SIPp says nothing sure.
        "max_rate_100pct": best,
        "invalid_steps": sum(1 for s in steps if not s["valid"]),
        "target": {"cps": TARGET["cps"], "met": best is not None and best >= TARGET["cps"]},
    }


# -- concurrent calls with media -----------------------------------------------------


async def media_step(rig: Rig, concurrent: int, args: argparse.Namespace) -> dict[str, Any]:
    """``concurrent`` calls with RTP both ways for ``--hold-seconds``; their measurements."""
    run_dir = rig.workdir / f"media-{concurrent}"
    run_dir.mkdir()
    # SIPp looks for the pcap next to the scenario first: put both in the run directory.
    sent = write_rtp_pcap(run_dir / "rtp.pcap", args.hold_seconds - PCAP_TAIL)
    shutil.copy(SCENARIOS / "call_uac_media.xml", run_dir)
    rate = min(args.ramp_rate, concurrent)
    database = rig.warden.database_path
    rowid, rss_before, echo_drops = max_rowid(database), rig.warden.rss_kib(), rig.echo_drops()
    log(f"media {concurrent}: {rate:g} calls/s, held {args.hold_seconds:g}s")
    code, window = await run_media_uac(rig, run_dir, concurrent, rate, args.hold_seconds)
    rig.check_uas()
    stats = read_sipp_stats(run_dir)
    records = await wait_for_records(database, rowid, stats.successful)
    window["rss_per_call_kib"] = round((window["warden_rss_kib"] - rss_before) / concurrent, 1)
    step = {
        "concurrent": concurrent,
        "setup_rate": rate,
        "hold_seconds": args.hold_seconds,
        "packets_sent_per_call": sent,
        "attempted": stats.created,
        "succeeded": stats.successful,
        "failed": stats.failed,
        "sipp_exit": code,
        "call_records": len(records),
        "dispositions": dispositions(records),
        "warden_rss_before_kib": rss_before,
        "window": window,
        **media_summary(records, sent),
        "sipp_echo_socket_drops": rig.echo_drops() - echo_drops,
    }
    step.update(attributed_loss(step))
    step["target_met"] = media_ok(step)
    log_media_step(step)
    if stats.failed or code != 0:
        for line in failure_events(read_sipp_errors(run_dir, 5_000_000)):
            log(f"  sipp: {line}")
    return step


async def run_media_uac(
    rig: Rig, run_dir: Path, concurrent: int, rate: float, hold_seconds: float
) -> tuple[int, dict[str, Any]]:
    """
    Run the media UAC to the end, measuring while every call is up (from 2 s
    after the last call was set up to 1 s before the first BYE); its exit code
    and the measurements.
    """
    ramp = concurrent / rate
    timeout = ramp + hold_seconds + 60
    sipp_args = rig.uac_args(run_dir / "call_uac_media.xml", concurrent, rate, timeout)
    sipp_args += ["-l", str(concurrent), "-d", str(round(hold_seconds * 1000))]
    child, process = spawn(sipp_command(sipp_args), run_dir)
    watchdog = real_reactor().callLater(timeout + 30, process.signalProcess, "KILL")
    try:
        await pause(ramp + 2)
        window = await measure_window(rig, int(process.pid), hold_seconds - ramp - 3)
        code: int = await child.ended
    finally:
        if watchdog.active():
            watchdog.cancel()
    return code, window


async def measure_window(rig: Rig, uac_pid: int, seconds: float) -> dict[str, Any]:
    """CPU, RSS and the machine's UDP counters over ``seconds`` while every call is up."""
    database = rig.warden.database_path
    live_before = live_calls(database)
    log(f"  {live_before} calls up; measuring for {seconds:g}s")
    meter = CpuMeter({"warden": rig.warden.pid, "sipp_uac": uac_pid, "sipp_uas": rig.uas_pid})
    await pause(seconds)
    cpu = meter.percentages()
    sockets = udp_sockets_of(rig.warden.pid)
    return {
        "warden_media_socket_drops": sum(
            drops for port, drops in sockets.items() if MEDIA_RANGE[0] <= port <= MEDIA_RANGE[1]
        ),
        "live_calls_start": live_before,
        "live_calls_end": live_calls(database),
        **cpu,
        "warden_rss_kib": rig.warden.rss_kib(),
        "sipp_uac_rss_kib": process_rss_kib(uac_pid),
    }


def media_summary(records: Sequence[dict[str, Any]], sent_per_call: int) -> dict[str, Any]:
    """Loss, jitter and packet rates of the answered calls' media statistics."""
    answered = [r for r in records if r["disposition"] == "ANSWERED"]
    sides = {side: [r["media"].get(side) or {} for r in answered] for side in ("a", "b")}
    out: dict[str, Any] = {
        "answered_with_relay_ports": sum(1 for r in answered if has_relay_ports(r))
    }
    for side, stats in sides.items():
        received = sum(int(m.get("packets_in") or 0) for m in stats)
        lost = sum(int(m.get("lost_in") or 0) for m in stats)
        out[f"{side}_packets_in"] = received
        out[f"{side}_lost_in"] = lost
        out[f"{side}_loss_pct"] = round(100 * lost / (received + lost), 4) if received else None
        out[f"{side}_packets_out"] = sum(int(m.get("packets_out") or 0) for m in stats)
        out[f"{side}_dropped"] = sum(
            int(v or 0) for m in stats for k, v in m.items() if k.startswith("dropped_")
        )
        jitter = [float(m.get("jitter_ms_in") or 0.0) for m in stats]
        out.update(percentiles(jitter, f"{side}_jitter_ms"))
    out["caller_packets_not_received"] = sent_per_call * len(answered) - out["a_packets_in"]
    out["echo_packets_not_returned"] = out["b_packets_out"] - out["b_packets_in"]
    added = [
        float(b.get("jitter_ms_in") or 0.0) - float(a.get("jitter_ms_in") or 0.0)
        for a, b in zip(sides["a"], sides["b"])
    ]
    out.update(percentiles(added, "added_jitter_ms"))
    out.update(relay_rates(answered, sent_per_call * PTIME))
    return out


def relay_rates(answered: Sequence[dict[str, Any]], rtp_seconds: float) -> dict[str, float]:
    """
    Packets per second through the relay with every call up: each call's packets
    over the time its caller sent RTP, summed over the calls.
    """
    totals = {"in": 0, "out": 0}
    for record in answered:
        for side in ("a", "b"):
            media = record["media"].get(side) or {}
            totals["in"] += int(media.get("packets_in") or 0)
            totals["out"] += int(media.get("packets_out") or 0)
    return {
        "relay_packets_in_per_s": round(totals["in"] / rtp_seconds),
        "relay_packets_out_per_s": round(totals["out"] / rtp_seconds),
        "relay_packets_per_s": round((totals["in"] + totals["out"]) / rtp_seconds),
    }


def attributed_loss(step: dict[str, Any]) -> dict[str, Any]:
    """
    Side b's loss without the packets the SIPp UAS's echo socket dropped: what is
    left was lost in Warden (its sockets, or not forwarded).
    """
    lost = max(0, step["b_lost_in"] - step["sipp_echo_socket_drops"])
    expected = step["b_packets_in"] + step["b_lost_in"]
    return {
        "b_lost_in_excluding_echo": lost,
        "b_loss_pct_excluding_echo": round(100 * lost / expected, 4) if expected else None,
        "relay_not_forwarded": (step["a_packets_in"] - step["b_packets_out"])
        + (step["b_packets_in"] - step["a_packets_out"]),
    }


def media_ok(step: dict[str, Any]) -> bool:
    """
    Every call succeeded with relay ports, loss < 0.1% on each side (on side b not
    counting the SIPp echo's own drops), added jitter p99 < 5 ms.
    """
    concurrent = step["concurrent"]
    losses = [step["a_loss_pct"], step["b_loss_pct_excluding_echo"]]
    return bool(
        step["failed"] == 0
        and step["succeeded"] == concurrent
        and step["answered_with_relay_ports"] == concurrent
        and all(loss is not None and loss < TARGET["loss_pct"] for loss in losses)
        and step["added_jitter_ms_p99"] is not None
        and step["added_jitter_ms_p99"] < TARGET["added_jitter_p99_ms"]
    )


def log_media_step(step: dict[str, Any]) -> None:
    """One progress line for a media step."""
    window = step["window"]
    log(
        f"media {step['concurrent']}: {step['succeeded']}/{step['concurrent']} ok,"
        f" loss a {step['a_loss_pct']}% b {step['b_loss_pct']}%"
        f" ({step['b_loss_pct_excluding_echo']}% without the {step['sipp_echo_socket_drops']}"
        f" the SIPp echo dropped), not forwarded {step['relay_not_forwarded']},"
        f" jitter p99 a {step['a_jitter_ms_p99']} b {step['b_jitter_ms_p99']}"
        f" added {step['added_jitter_ms_p99']} ms, {step['relay_packets_per_s']} pkt/s,"
        f" Warden {window['warden_cpu_pct']}% {window['rss_per_call_kib']} KiB/call,"
        f" SIPp uac {window['sipp_uac_cpu_pct']}% uas {window['sipp_uas_cpu_pct']}%,"
        f" media socket drops {window['warden_media_socket_drops']},"
        f" others {window['other_cpu_pct']}% -> target {'met' if step['target_met'] else 'missed'}"
    )


async def media_mode(rig: Rig, args: argparse.Namespace) -> dict[str, Any]:
    """The concurrency steps, stopping after the first that misses the target."""
    steps = []
    for concurrent in args.concurrency_list:
        step = await media_step(rig, concurrent, args)
        steps.append(step)
        await poll(lambda: live_calls(rig.warden.database_path) == 0, 30.0)
        await pause(5.0)  # the UAS's 4 s time-wait
        if not step["target_met"]:
            break
    passed = [s["concurrent"] for s in steps if s["target_met"]]
    best = max(passed) if passed else None
    return {
        "hold_seconds": args.hold_seconds,
        "steps": steps,
        "max_concurrent_meeting_target": best,
        "target": {
            "concurrent": TARGET["concurrent"],
            "loss_pct_below": TARGET["loss_pct"],
            "added_jitter_p99_ms_below": TARGET["added_jitter_p99_ms"],
            "met": best is not None and best >= TARGET["concurrent"],
        },
    }


# -- main ------------------------------------------------------------------------------


async def run_mode(args: argparse.Namespace, workdir: Path, mode: str) -> dict[str, Any]:
    """One mode on its own Warden."""
    mode_dir = workdir / mode
    mode_dir.mkdir()
    plugins = [p for p in (args.plugins or "").split(",") if p]
    settings, extra_pids = worker_settings(args.workers)
    if args.media:
        settings["media"] = dict(args.media)
    procs = args.sipp_procs if mode == "cps" else 1
    rig = Rig(
        mode_dir,
        echo=mode == "media",
        plugins=plugins,
        settings=settings,
        procs=procs,
        extra_pids=extra_pids,
        socket_per_call=args.socket_per_call,
    )
    try:
        await rig.start()
        if args.cpu_cap and mode == "cps":
            rig.caps = cap_sip_processes(rig.warden.pid, args.cpu_cap)
        result = await (cps_mode(rig, args) if mode == "cps" else media_mode(rig, args))
    finally:
        leftovers = await rig.stop()
    held = leftovers.get("media_ports_held", [])
    log(
        f"{mode}: {leftovers.get('live_calls')} calls still up,"
        f" {len(held)} media ports held by Warden at the end"
    )
    return {**result, "after": leftovers}


async def main(reactor: Any, argv: Sequence[str]) -> None:
    """Run the chosen modes and print the JSON document."""
    args = parse_args(argv)
    started = time.monotonic()
    workdir, document = start_run(
        ["python", "-m", "bench.calls", *argv], args.workdir, "warden-calls-"
    )
    document["media_port_range"] = list(MEDIA_RANGE)
    try:
        for mode in ("cps", "media"):
            if args.mode in (mode, "both"):
                document[mode] = await run_mode(args, workdir, mode)
        document["duration_seconds"] = round(time.monotonic() - started, 1)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
