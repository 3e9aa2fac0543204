"""
Added jitter and loss of a media engine with many concurrent calls: the
built-in relay in the SIP process (``builtin-inproc``) or in its own media
process (``builtin-process``, ADR 0033; ``builtin-process:N`` for N media
processes, ``[media] relay_processes``), or rtpengine (``rtpengine``, ADR
0025); run by ``python bench/rtp_relay.py --concurrent 250,500``.

Three processes per step:

* the *host*, standing in for Warden's SIP process: allocates ``calls``
  sessions from the relay as Warden's media plugin builds it (``MediaRelay``;
  ``ProcessRelay``, which starts the real media process; or
  ``RtpengineRelay``, whose offers, answers and per-second queries go to
  rtpengine over ng), exchanges SDP naming the generator's phones on
  127.0.0.1, then does synthetic signalling work: every ``burst_interval``
  seconds it parses SIP INVITEs (Warden's parser) for ``burst_ms``
  milliseconds without returning to the reactor, as a burst of SIP traffic
  would;
* the *generator*: ``calls`` caller sockets each sending a 172-byte PCMU
  packet every 20 ms (the calls' phases spread over the 20 ms) to its session's
  side a, with its send time (``CLOCK_MONOTONIC``) in the payload, and
  ``calls`` callee sockets receiving them from side b;
* the engine: with ``builtin-process`` the media process or processes
  (children of the host, their CPU added up); with ``rtpengine`` Debian's
  ``rtpengine`` in userspace (``--table=-1``, L{warden.testing.rtpengined}) on
  free ports, a child of the bench itself, so its CPU counts as the bench's.
  The step is skipped (with the reason in ``skipped``) when ``rtpengine`` is
  not installed.

Per packet, the transit time (receive minus send); *added jitter* is a packet's
transit minus the smallest transit of its call, reported at p50/p99/max over
every packet; *loss* is the share of packets sent and never received (after a
one-second drain). The rest of the machine's CPU during the step
(``other_cpu_pct``: ``/proc/stat`` busy time minus this bench's processes) is
recorded with the hypervisor's stolen time (``steal_pct``), and a step in
which the two reached ``bench.machine.MAX_OTHER_PCT`` % of a core is marked
``valid: false``: its figures are not the relay's. An rtpengine step also
records the ng control traffic (requests answered, errors, timeouts,
retransmissions, replies dropped) and the calls Warden lost to rtpengine
(``calls_lost``; any makes the step invalid). CPU per operation, meaningful on
a busy machine too: ``generator_cpu_us_per_packet`` (the generator's sends and
receives per packet sent) and ``media_cpu_us_per_packet`` (the media process's
or rtpengine's CPU time per packet received, rtpengine's answering of the
per-second queries included).
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, ".")

from bench.machine import MachineMeter, children_cpu_seconds, process_cpu_seconds

#: Issue 18's media target: added jitter p99 under 5 ms, loss under 0.1%.
TARGET_P99_MS = 5.0
TARGET_LOSS_PCT = 0.1
PHONE_HOST = "127.0.0.1"
HEADER = struct.Struct("!BBHII")
STAMP = struct.Struct("!QI")
#: RTP header, then the send stamp and the call's index: the head of each packet.
PACKET = struct.Struct("!BBHIIQI")
PACKET_SIZE = HEADER.size + 160
INVITE = (
    b"INVITE sip:2000@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1>;tag=a1\r\n"
    b"To: <sip:2000@127.0.0.1>\r\nCall-ID: bench-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
    b"Contact: <sip:1000@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def phone_sdp(port: int, user: str) -> bytes:
    return (
        f"v=0\r\no={user} 1 1 IN IP4 {PHONE_HOST}\r\ns=-\r\nc=IN IP4 {PHONE_HOST}\r\n"
        f"t=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


# -- host ---------------------------------------------------------------------------------


RELAYS = ("builtin-inproc", "builtin-process", "rtpengine")


def relay_kind(relay_name: str) -> tuple[str, int]:
    """
    A relay name and its media processes: ``builtin-process:2`` is
    ``("builtin-process", 2)``, any other name has 1 (ValueError for a bad count).
    """
    kind, _, count = relay_name.partition(":")
    if not count:
        return kind, 1
    if kind != "builtin-process" or not count.isdigit() or not 1 <= int(count) <= 16:
        raise ValueError(f"relay {relay_name!r}: only builtin-process:N, N 1..16")
    return kind, int(count)


def make_relay(reactor: Any, relay_name: str, port_min: int, port_max: int, ng_port: int) -> Any:
    """The relay under test, built as Warden's media plugin builds it (L{warden.plugins.media})."""
    from warden.rtp import udp
    from warden.rtp.policy import MediaPolicy
    from warden.rtp.procrelay import process_relay, spawn_media_process
    from warden.rtp.relay import MediaRelay
    from warden.rtp.rtpengine import RtpengineRelay

    policy = MediaPolicy(own_addresses=[PHONE_HOST])
    listen_udp = functools.partial(udp.listen_udp, reactor)
    if relay_name == "rtpengine":
        return RtpengineRelay(reactor, listen_udp, (PHONE_HOST, ng_port), media_timeout=600.0)
    kind, processes = relay_kind(relay_name)
    if kind == "builtin-process":
        settings = {
            "address": PHONE_HOST, "port_min": port_min, "port_max": port_max,
            "interface": PHONE_HOST, "timeout": 600.0, "latch": policy.latch,
            "destinations": policy.destinations, "latch_packets": policy.latch_packets,
            "own_addresses": [PHONE_HOST], "srtp": policy.srtp, "hold_music": "",
        }  # fmt: skip
        spawn = functools.partial(spawn_media_process, reactor)
        return process_relay(reactor, spawn, settings, policy, processes)
    return MediaRelay(
        reactor, listen_udp, PHONE_HOST, port_range=(port_min, port_max),
        media_timeout=600.0, policy=policy,
    )  # fmt: skip


def engine_figures(relay: Any) -> dict[str, Any]:
    """rtpengine's control traffic during the step, and the calls it lost (else nothing)."""
    from prometheus_client import REGISTRY

    from warden.rtp.rtpengine import RtpengineRelay

    if not isinstance(relay, RtpengineRelay):
        return {}

    def sample(name: str, **labels: str) -> int:
        return int(REGISTRY.get_sample_value(name, labels) or 0)

    requests = "warden_rtpengine_requests_total"
    return {
        "ng_requests_ok": sample(requests, outcome="ok"),
        "ng_errors": sample(requests, outcome="error"),
        "ng_timeouts": sample(requests, outcome="timeout"),
        "ng_refused": sample(requests, outcome="refused"),
        "ng_retransmissions": sample("warden_rtpengine_retransmissions_total"),
        "ng_replies_dropped": sample("warden_rtpengine_replies_dropped_total"),
        "calls_lost": sum(1 for s in relay.sessions() if s.timed_out),
    }


def host(calls: int, phone_ports: list[tuple[int, int]], relay_name: str, burst_ms: float,
         burst_interval: float, port_min: int, ng_port: int) -> None:  # fmt: skip
    """
    The stand-in SIP process; prints the sessions' ports, runs until stdin
    closes, then prints the engine's figures (L{engine_figures}).
    """
    from twisted.internet import reactor, stdio, task
    from twisted.internet.protocol import Protocol

    from warden.sip.parser import parse_datagram

    relay = make_relay(reactor, relay_name, port_min, port_max_of(port_min, calls), ng_port)

    def burst() -> None:
        end = time.perf_counter() + burst_ms / 1000
        while time.perf_counter() < end:
            parse_datagram(INVITE)

    class Stop(Protocol):
        def connectionLost(self, reason: Any = None) -> None:
            sys.stdout.write(json.dumps(engine_figures(relay)) + "\n")
            sys.stdout.flush()
            relay.close()
            reactor.callLater(0.5, reactor.stop)  # type: ignore[attr-defined]

    async def start() -> None:
        ports = []
        for i, (caller, callee) in enumerate(phone_ports):
            session = await relay.allocate(f"bench-{i}")
            for side in ("a", "b"):
                session.signalling_from(side, PHONE_HOST)
            session.offer_from("a", phone_sdp(caller, "caller"))
            session.answer_from("b", phone_sdp(callee, "callee"))
            ports.append(session.side_a.rtp_port)
        # rtpengine's offers and answers answered; the media process took the SDP.
        for _ in range(200):
            if not getattr(getattr(relay, "client", None), "pending", 0):
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        await task.deferLater(reactor, 0.5, lambda: None)
        sys.stdout.write(json.dumps(ports) + "\n")
        sys.stdout.flush()
        if burst_ms > 0:
            task.LoopingCall(burst).start(burst_interval, now=False)

    from twisted.internet import defer

    stdio.StandardIO(Stop(), stdout=os.dup(2))
    reactor.callWhenRunning(lambda: defer.ensureDeferred(start()))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


# -- generator ----------------------------------------------------------------------------


def generate(
    relay_ports: list[int], phone_ports: list[tuple[int, int]], seconds: float
) -> dict[str, Any]:
    """
    Send every call's RTP for ``seconds``; the transit figures, and this
    process's CPU time per packet sent (``generator_cpu_us_per_packet``: its
    sends and receives, the figures' sorting left out).

    Each caller socket is connected to its relay port (``send``, no address
    per packet) and has its own packet buffer, packed in place; the send stamp
    is taken as the last argument of that packing, right before ``send``. A
    callee socket reported readable is read once per poll (level-triggered: one
    still holding packets is reported again), and the receive stamp is taken
    right after ``recv_into``.
    """
    cpu0 = time.process_time()
    calls = len(relay_ports)
    senders, buffers, receivers = [], [], {}
    sockets = []
    poller = select.epoll()
    for (caller_port, callee_port), relay_port in zip(phone_ports, relay_ports):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((PHONE_HOST, caller_port))
        s.setblocking(False)
        s.connect((PHONE_HOST, relay_port))
        senders.append(s.send)
        buffers.append(bytearray(b"\xff" * PACKET_SIZE))
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind((PHONE_HOST, callee_port))
        r.setblocking(False)
        r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        receivers[r.fileno()] = r.recv_into
        poller.register(r.fileno(), select.EPOLLIN)
        sockets += [s, r]
    transits: list[list[int]] = [[] for _ in range(calls)]
    incoming = bytearray(2048)
    poll, monotonic, pack_into = poller.poll, time.monotonic_ns, PACKET.pack_into
    unpack_stamp = STAMP.unpack_from
    sent = 0
    start = monotonic() + 20_000_000
    # Call i sends at start + i * (20 ms / calls) + k * 20 ms.
    offsets = [int(i * 20_000_000 / calls) for i in range(calls)]
    total = int(seconds * 50)
    end = start + total * 20_000_000
    drain_until = end + 1_000_000_000

    def receive(timeout: float) -> None:
        for fd, _ in poll(timeout):
            try:
                size = receivers[fd](incoming)
            except BlockingIOError:
                continue
            now = monotonic()
            if size >= HEADER.size + STAMP.size:
                sent_at, call = unpack_stamp(incoming, HEADER.size)
                if call < calls:
                    transits[call].append(now - sent_at)

    for k in range(total):
        round_start = start + k * 20_000_000
        seq, timestamp = k & 0xFFFF, (160 * k) & 0xFFFFFFFF
        for i in range(calls):
            due = round_start + offsets[i]
            now = monotonic()
            while now < due:
                receive(min((due - now) / 1e9, 0.005))
                now = monotonic()
            buffer = buffers[i]
            pack_into(buffer, 0, 0x80, 0, seq, timestamp, 0x1000 + i, monotonic(), i)
            try:
                senders[i](buffer)
                sent += 1
            except OSError:  # full, or an ICMP error of an earlier packet: not sent
                pass
            if i % 20 == 19:
                receive(0)  # behind schedule too: read, or the wait is ours, not the relay's
    while monotonic() < drain_until:
        receive(0.05)
    cpu = time.process_time() - cpu0
    for each in sockets:
        each.close()
    return {
        **figures(transits, sent),
        "generator_cpu_us_per_packet": round(1e6 * cpu / max(sent, 1), 2),
    }


def figures(transits: list[list[int]], sent: int) -> dict[str, Any]:
    """Loss and added jitter (each transit minus its call's smallest) of the packets received."""
    added = sorted(t - best for each in transits if each for best in (min(each),) for t in each)
    got = len(added)

    def pct(p: float) -> float | None:
        if not added:
            return None
        return round(added[min(len(added) - 1, int(p * len(added)))] / 1e6, 3)

    return {
        "packets_sent": sent,
        "packets_received": got,
        "loss_pct": round(100 * (sent - got) / max(sent, 1), 4),
        "added_jitter_ms_p50": pct(0.50),
        "added_jitter_ms_p99": pct(0.99),
        "added_jitter_ms_max": round(added[-1] / 1e6, 3) if added else None,
    }


def summarise(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    The runs of each call count and relay together: how many were valid, and
    over the valid ones the p99's median, least and most, the most loss, the
    median media CPU per packet, and in how many the media target was met (p99
    under L{TARGET_P99_MS}, loss under L{TARGET_LOSS_PCT}). One run's p99 at
    hundreds of calls on two shared cores varies by half between runs of the
    same code: a target is judged by the runs together.
    """

    def median(values: list[float]) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        middle = len(ordered) // 2
        if len(ordered) % 2:
            return ordered[middle]
        return round((ordered[middle - 1] + ordered[middle]) / 2, 3)

    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for each in steps:
        groups.setdefault((each["calls"], each["relay"]), []).append(each)
    summary = []
    for (calls, relay), runs in groups.items():
        valid = [r for r in runs if r.get("valid") and r.get("added_jitter_ms_p99") is not None]
        p99s = [r["added_jitter_ms_p99"] for r in valid]
        media = [r["media_cpu_us_per_packet"] for r in valid if "media_cpu_us_per_packet" in r]
        met = [
            r for r in valid
            if r["added_jitter_ms_p99"] < TARGET_P99_MS and r["loss_pct"] < TARGET_LOSS_PCT
        ]  # fmt: skip
        summary.append(
            {
                "calls": calls,
                "relay": relay,
                "runs": len(runs),
                "valid_runs": len(valid),
                "p99_ms_median": median(p99s),
                "p99_ms_min": min(p99s, default=None),
                "p99_ms_max": max(p99s, default=None),
                "loss_pct_max": max((r["loss_pct"] for r in valid), default=None),
                "media_cpu_us_per_packet_median": median(media),
                "target_met_runs": len(met),
            }
        )
    return summary


# -- one step -----------------------------------------------------------------------------


def port_max_of(port_min: int, calls: int) -> int:
    """The relay's highest media port: four per call and some to spare."""
    return port_min + 4 * calls + 200


def step(calls: int, seconds: float, relay: str, burst_ms: float, burst_interval: float,
         phone_base: int, port_min: int) -> dict[str, Any]:  # fmt: skip
    """
    One measured step: host and generator processes (and rtpengine for the
    ``rtpengine`` relay, started here so its CPU counts as the bench's); the
    figures and the other load. Without ``rtpengine`` installed, that step is
    skipped: ``skipped`` says why.
    """
    described = {"calls": calls, "relay": relay, "burst_ms": burst_ms,
                 "burst_interval_s": burst_interval, "seconds": seconds}  # fmt: skip
    if relay_kind(relay)[0] not in RELAYS:
        raise ValueError(f"relay must be one of {', '.join(RELAYS)}, not {relay!r}")
    if relay == "rtpengine" and shutil.which("rtpengine") is None:
        reason = "rtpengine is not installed (apt-get install rtpengine-daemon)"
        return {**described, "skipped": reason, "valid": False}
    phones = [(phone_base + 2 * i, phone_base + 2 * i + 1) for i in range(calls)]
    meter = MachineMeter()
    children0 = children_cpu_seconds()
    engine = None
    ng_port, engine_pid = 0, None
    if relay == "rtpengine":
        from warden.testing.rtpengined import RtpengineServer

        engine = RtpengineServer((port_min, port_max_of(port_min, calls)), timeout=600)
        engine.start()
        ng_port, engine_pid = engine.ng[1], engine.pid
    try:
        result = run_processes(calls, seconds, relay, burst_ms, burst_interval, phones,
                               port_min, ng_port, engine_pid)  # fmt: skip
    finally:
        if engine is not None:
            engine.destroy()  # reaped: its CPU is in children_cpu_seconds()
    load = meter.load()
    ours = children_cpu_seconds() - children0
    lost_calls = result.get("calls_lost", 0)
    return {
        **described,
        **result,
        "bench_cpu_seconds": round(ours, 2),
        **load,
        "valid": load["valid"] and "error" not in result and not lost_calls,
    }


def run_processes(calls: int, seconds: float, relay: str, burst_ms: float,
                  burst_interval: float, phones: list[tuple[int, int]], port_min: int,
                  ng_port: int, engine_pid: int | None = None) -> dict[str, Any]:  # fmt: skip
    """
    The host, then the generator until it is done; the generator's and the
    host's figures, and the media engine's CPU time per packet relayed (the
    media process's, or rtpengine's: ``engine_pid``).
    """
    common = [sys.executable, __file__, json.dumps(phones)]
    host_process = subprocess.Popen(
        [*common, "host", str(calls), relay, str(burst_ms), str(burst_interval),
         str(port_min), str(ng_port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert host_process.stdout is not None and host_process.stdin is not None
    line = host_process.stdout.readline()
    if not line:
        host_process.wait()
        return {"error": f"host exit {host_process.returncode} before its calls were set up"}
    relay_ports = json.loads(line)
    engine: dict[str, Any] = {}
    media = media_pids(host_process.pid) if relay != "rtpengine" else [engine_pid]
    media0 = sum(process_cpu_seconds(pid) for pid in media)
    media_cpu = 0.0
    try:
        generator = subprocess.run(
            [*common, "generator", json.dumps(relay_ports), str(seconds)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        # CPU per op, valid on a busy machine too (a starved process reads
        # more packets per wake-up, so there it errs low).
        media_cpu = sum(process_cpu_seconds(pid) for pid in media) - media0
    finally:
        host_process.stdin.close()
        try:
            engine = json.loads(host_process.stdout.readline() or "{}")
            host_process.wait(30)
        except subprocess.TimeoutExpired:
            host_process.kill()
            host_process.wait()
    if generator.returncode == 0:
        result = {**json.loads(generator.stdout), **engine}
        if relay != "builtin-inproc" and result.get("packets_received"):
            result["media_cpu_seconds"] = round(media_cpu, 2)
            per_packet = 1e6 * media_cpu / result["packets_received"]
            result["media_cpu_us_per_packet"] = round(per_packet, 2)
        return result
    # A phone port taken by another program, say: the step has no figures.
    lines = generator.stderr.strip().splitlines()
    return {"error": lines[-1] if lines else f"generator exit {generator.returncode}"}


def media_pids(host_pid: int) -> list[int]:
    """The media processes: the host's children (Linux ``/proc``; none found: [])."""
    try:
        with open(f"/proc/{host_pid}/task/{host_pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def child_main(argv: list[str]) -> None:
    phones = [tuple(p) for p in json.loads(argv[0])]
    role = argv[1]
    if role == "host":
        calls, relay, burst_ms, interval, port_min, ng_port = argv[2:8]
        host(int(calls), phones, relay, float(burst_ms), float(interval), int(port_min),  # type: ignore[arg-type]
             int(ng_port))  # fmt: skip
    else:
        print(json.dumps(generate(json.loads(argv[2]), phones, float(argv[3]))))  # type: ignore[arg-type]


if __name__ == "__main__":
    child_main(sys.argv[1:])
