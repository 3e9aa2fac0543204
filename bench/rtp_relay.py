"""
Throughput of the built-in media relay, in packets per second.

* ``fake``: datagrams handed straight to the relay's protocols on fake sockets
  (no kernel): the cost of Warden's own per-packet work (parse, latch check,
  statistics, metrics, forwarding) on one core.
* ``loopback``: real UDP on 127.0.0.1 through the default reactor: a "caller"
  socket keeps ``window`` packets in flight to side a, the relay forwards them
  from side b to a "callee" socket that counts them.

Each packet is a 172-byte PCMU RTP packet (20 ms of audio), sequence numbers
increasing. Each mode runs twice in the same process: plain RTP on both legs,
then SRTP (RFC 3711, AES_CM_128_HMAC_SHA1_80, ADR 0019) on both legs, where the
relay authenticates, decrypts and re-encrypts every packet; the phones' packets
are protected before the clock starts. The same packets and sequence numbers
go through both runs (no loss, no jitter), and ``srtp_vs_plain`` is the SRTP
packet rate as a fraction of the plain one. The fake-socket mode runs a third
time with the call recorded (L{warden.rtp.recorder}): the relay's tap hands
the packets on in batches, and ``recording_vs_plain`` is that packet rate as a
fraction of the plain one. The writer's work (decoding, placing, writing the
stereo WAV file into a temporary directory), which Warden does in its writer
thread, runs after the timed loop and is timed on its own:
``writer_microseconds_per_packet``. The fake clock advances 10 ms per packet
(20 ms per direction), as a real call's would. Usage::

    python bench/rtp_relay.py [--packets N] [--window W] [--skip-loopback]
    python bench/rtp_relay.py --concurrent 250,500 [--seconds 20] [--burst-ms 20]
        [--burst-interval 0.1] [--relays builtin-inproc,builtin-process,rtpengine]
        [--repeat N]

Each run records the rest of the machine's load over its timed part
(L{bench.machine}: ``other_cpu_pct``, ``steal_pct``, ``valid``); a run in
which it reached ``bench.machine.MAX_OTHER_PCT`` of a core is marked
``INVALID`` on stderr, a ratio is valid when both its runs are, and ``valid``
says whether every run was.

``--concurrent`` runs only the concurrent-calls steps of L{bench.relay_jitter}
(added jitter p50/p99 and loss with the relay in the SIP process, in its own
media process, ADR 0033, and with rtpengine, ADR 0025, with the rest of the
machine's load per step); ``--relays`` picks among them, all by default.
``--repeat N`` runs all the steps N times, round after round, and adds a
``summary`` per call count and relay: the valid runs' p99 (median, least,
most) and in how many of them the media target (p99 under 5 ms, loss under
0.1%) was met.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock

sys.path.insert(0, ".")

from bench.machine import MAX_OTHER_PCT, MachineMeter, invalid_note, quiet_enough
from warden.rtp.recorder import CallRecorder, RecorderLimits
from warden.rtp.relay import MediaRelay
from warden.rtp.sdes import Crypto
from warden.rtp.session import MediaSession
from warden.testing.rtpnet import FakeNetwork, sdp_body

PAYLOAD = b"\xff" * 160
SUITE = "AES_CM_128_HMAC_SHA1_80"
PHONE_KEYS = {"a": bytes(range(1, 31)), "b": bytes(range(101, 131))}


def packet(seq: int) -> bytes:
    """A PCMU RTP packet."""
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (160 * seq) & 0xFFFFFFFF, 1) + PAYLOAD


def phone_sdp(host: str, port: int, side: str, srtp: bool) -> bytes:
    """A phone's SDP: plain RTP/AVP, or RTP/SAVP with the phone's own key."""
    body = sdp_body(host, port)
    if not srtp:
        return body
    crypto = Crypto(1, SUITE, PHONE_KEYS[side]).value()
    return body.replace(b"RTP/AVP", b"RTP/SAVP") + f"a=crypto:{crypto}\r\n".encode()


def session_of(
    relay: MediaRelay, caller: tuple[str, int], callee: tuple[str, int], srtp: bool = False
) -> Any:
    """A session with offer and answer exchanged (both phones on TLS with SRTP if ``srtp``)."""
    results: list[Any] = []
    relay.allocate("bench").addBoth(results.append)
    session = results[0]
    assert isinstance(session, MediaSession), session
    session.signalling_from("a", caller[0])  # as the call controller does
    session.signalling_from("b", callee[0])
    session.signalling_encrypted("a", srtp)
    session.signalling_encrypted("b", srtp)
    session.offer_from("a", phone_sdp(*caller, "a", srtp))
    session.answer_from("b", phone_sdp(*callee, "b", srtp))
    return session


def phone_packets(count: int, side: str, srtp: bool) -> list[bytes]:
    """``count`` consecutive packets from ``side``'s phone, protected with its key if ``srtp``."""
    packets = [packet(i) for i in range(count)]
    if not srtp:
        return packets
    policy = pylibsrtp.Policy(
        PHONE_KEYS[side], pylibsrtp.Policy.SSRC_ANY_OUTBOUND, 0,
        pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )  # fmt: skip
    context = pylibsrtp.Session(policy)
    return [context.protect(p) for p in packets]


def bench_fake(count: int, srtp: bool = False, recording: bool = False) -> dict[str, Any]:
    """Packets/s through the relay on fake sockets, alternating directions."""
    clock = Clock()
    clock.rightNow = 1_700_000_000.0
    network = FakeNetwork()
    relay = MediaRelay(clock, network.listen_udp, "203.0.113.1", (10000, 10099))
    caller, callee = ("192.0.2.10", 4000), ("198.51.100.20", 5000)
    session = session_of(relay, caller, callee, srtp)
    a = network.ports[session.side_a.rtp_port]
    b = network.ports[session.side_b.rtp_port]
    # Each direction in sequence: a's packets at even indexes, b's at odd ones.
    from_a, from_b = (
        phone_packets(count // 2 + 1, "a", srtp),
        phone_packets(count // 2 + 1, "b", srtp),
    )
    packets = [(from_b if i & 1 else from_a)[i // 2] for i in range(count)]
    work: list[Callable[[], None]] = []
    directory = tempfile.TemporaryDirectory()
    path = os.path.join(directory.name, "bench.wav")
    if recording:  # no batch is dropped: the writer runs after the loop
        limits = RecorderLimits(max_batches=count)
        session.tap = CallRecorder(path, clock.seconds(), work.append, limits)
    meter = MachineMeter()
    start = time.perf_counter()
    for i, data in enumerate(packets):
        clock.rightNow += 0.01
        if i & 1:
            b.protocol.datagramReceived(data, callee)
        else:
            a.protocol.datagramReceived(data, caller)
        if i & 1023 == 0:
            a.written.clear()
            b.written.clear()
    elapsed = time.perf_counter() - start
    stats = session.stats()
    relayed = stats["a"]["packets_out"] + stats["b"]["packets_out"]
    session.release()
    finished = time.perf_counter()
    for each in work:
        each()
    writer_seconds = time.perf_counter() - finished
    load = meter.load()
    wav_bytes = os.path.getsize(path) if recording else 0
    directory.cleanup()
    extra = {
        "writer_seconds": round(writer_seconds, 4),
        "writer_microseconds_per_packet": round(1e6 * writer_seconds / count, 2),
        "wav_bytes": wav_bytes,
    }
    return {
        "srtp": srtp,
        **({"recording": True, **extra} if recording else {}),
        "packets": count,
        "relayed": relayed,
        "seconds": round(elapsed, 4),
        "packets_per_second": round(count / elapsed),
        "microseconds_per_packet": round(1e6 * elapsed / count, 2),
        **load,
    }


class Caller(DatagramProtocol):
    """Keeps ``window`` packets in flight towards the relay."""

    noisy = False

    def __init__(self, target: tuple[str, int], total: int, window: int) -> None:
        self.target = target
        self.total = total
        self.window = window
        self.sent = 0
        self.packets: list[bytes] = []

    def top_up(self, received: int) -> None:
        assert self.transport is not None
        while self.sent < self.total and self.sent - received < self.window:
            self.transport.write(self.packets[self.sent], self.target)
            self.sent += 1


class Callee(DatagramProtocol):
    """Counts packets; tells the caller to send more."""

    noisy = False

    def __init__(self) -> None:
        self.received = 0
        self.caller: Caller | None = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received += 1
        if self.caller is not None:
            self.caller.top_up(self.received)


def bench_loopback(count: int, window: int, srtp: bool = False) -> dict[str, Any]:
    """Packets/s through the relay on real loopback sockets (one direction)."""
    from twisted.internet import reactor

    relay = MediaRelay(reactor, reactor.listenUDP, "127.0.0.1", (41000, 41099))  # type: ignore[arg-type, attr-defined]
    callee = Callee()
    callee_port = reactor.listenUDP(0, callee, interface="127.0.0.1")  # type: ignore[attr-defined]
    probe = Caller(("127.0.0.1", 0), 0, 0)
    caller_port = reactor.listenUDP(0, probe, interface="127.0.0.1")  # type: ignore[attr-defined]
    session = session_of(
        relay,
        ("127.0.0.1", caller_port.getHost().port),
        ("127.0.0.1", callee_port.getHost().port),
        srtp,
    )
    probe.packets = phone_packets(count, "a", srtp)
    probe.target, probe.total, probe.window = ("127.0.0.1", session.side_a.rtp_port), count, window
    callee.caller = probe
    result: dict[str, Any] = {}
    state = {"last": -1, "start": 0.0}
    meter = MachineMeter()

    def watchdog() -> None:
        # Packets lost in the kernel would stall the window: refill, or finish.
        if callee.received >= count or (callee.received == state["last"] and probe.sent >= count):
            finish()
            return
        if callee.received == state["last"]:
            probe.top_up(probe.sent - 1)
        state["last"] = callee.received
        reactor.callLater(0.05, watchdog)  # type: ignore[attr-defined]

    def finish() -> None:
        elapsed = time.perf_counter() - state["start"]
        load = meter.load()
        result.update(
            srtp=srtp,
            packets_sent=probe.sent,
            packets_received=callee.received,
            seconds=round(elapsed, 4),
            packets_per_second=round(callee.received / elapsed),
            window=window,
            **load,
        )
        session.release()
        caller_port.stopListening()
        callee_port.stopListening()
        reactor.callLater(0.01, reactor.stop)  # type: ignore[attr-defined]

    def begin() -> None:
        meter.start()
        state["start"] = time.perf_counter()
        probe.top_up(0)
        reactor.callLater(0.05, watchdog)  # type: ignore[attr-defined]

    reactor.callWhenRunning(begin)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return result


def concurrent(args: argparse.Namespace) -> dict[str, Any]:
    """
    Each call count with each relay of ``--relays``, in that order, ``--repeat``
    times over (round after round, so that a change in the machine meets every
    relay alike), in one run; each step as it ends on stderr, with a progress
    line.
    """
    from bench.relay_jitter import (
        RELAYS,
        TARGET_LOSS_PCT,
        TARGET_P99_MS,
        relay_kind,
        step,
        summarise,
    )

    relays = [name.strip() for name in args.relays.split(",") if name.strip()]
    try:
        unknown = sorted({name for name in relays if relay_kind(name)[0] not in RELAYS})
    except ValueError as e:
        raise SystemExit(f"--relays: {e}") from None
    if unknown:
        raise SystemExit(f"--relays: unknown {', '.join(unknown)} (known: {', '.join(RELAYS)})")
    if args.repeat < 1:
        raise SystemExit("--repeat: at least 1")
    counts = [int(n) for n in args.concurrent.split(",")]
    steps = []
    total = args.repeat * len(counts) * len(relays)
    for round_number in range(1, args.repeat + 1):
        for calls in counts:
            for relay in relays:
                result = step(
                    calls, args.seconds, relay, args.burst_ms, args.burst_interval,
                    phone_base=args.phone_port_min, port_min=args.media_port_min,
                )  # fmt: skip
                steps.append({**result, "round": round_number})
                print(json.dumps(steps[-1]), file=sys.stderr)
                print(
                    f"[{len(steps)}/{total}] round {round_number}: {calls} calls, {relay}:"
                    f" p99 {result.get('added_jitter_ms_p99')} ms,"
                    f" valid {result.get('valid')}"
                    + (invalid_note(result) if not quiet_enough_step(result) else ""),
                    file=sys.stderr,
                )
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "max_other_cpu_pct": MAX_OTHER_PCT,
        "target": {"added_jitter_ms_p99_below": TARGET_P99_MS, "loss_pct_below": TARGET_LOSS_PCT},
        "valid": all(s.get("valid") for s in steps if "skipped" not in s),
        "summary": summarise(steps),
        "steps": steps,
    }


def quiet_enough_step(step: dict[str, Any]) -> bool:
    """A --concurrent step the load did not make invalid (a skipped step has no load)."""
    return "other_cpu_pct" not in step or quiet_enough(step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--skip-loopback", action="store_true")
    parser.add_argument(
        "--concurrent",
        default="",
        help="comma-separated call counts: added jitter and loss of that many concurrent"
        " calls, with each of --relays (bench/relay_jitter.py); only that",
    )
    parser.add_argument(
        "--relays",
        default="builtin-inproc,builtin-process,rtpengine",
        help="comma-separated media engines of the --concurrent steps (rtpengine's is"
        " skipped, with the reason, when rtpengine is not installed); builtin-process:N"
        " runs N media processes",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="of each --concurrent step")
    parser.add_argument(
        "--burst-ms", type=float, default=20.0, help="signalling work per burst (--concurrent)"
    )
    parser.add_argument(
        "--burst-interval", type=float, default=0.1, help="seconds between bursts (--concurrent)"
    )
    parser.add_argument(
        "--media-port-min", type=int, default=20000, help="the relay's ports (--concurrent)"
    )
    parser.add_argument(
        "--phone-port-min", type=int, default=40000, help="the phones' ports (--concurrent)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the --concurrent steps; the summary judges the target by them together",
    )
    parser.add_argument(
        "--loopback-srtp", action="store_true", help="the loopback run with SRTP on both legs"
    )
    args = parser.parse_args()
    if args.concurrent:
        print(json.dumps(concurrent(args), indent=2))
        return
    plain, srtp = bench_fake(args.packets), bench_fake(args.packets, srtp=True)
    recorded = bench_fake(args.packets, recording=True)
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "fake_sockets": plain,
        "fake_sockets_srtp": srtp,
        "fake_sockets_srtp_vs_plain": round(
            srtp["packets_per_second"] / plain["packets_per_second"], 3
        ),
        "fake_sockets_srtp_vs_plain_valid": srtp["valid"] and plain["valid"],
        "fake_sockets_recording": recorded,
        "fake_sockets_recording_vs_plain": round(
            recorded["packets_per_second"] / plain["packets_per_second"], 3
        ),
        "fake_sockets_recording_vs_plain_valid": recorded["valid"] and plain["valid"],
    }
    if not args.skip_loopback:
        # One reactor run per process: the SRTP loopback run is --loopback-srtp.
        key = "loopback_srtp" if args.loopback_srtp else "loopback"
        report[key] = bench_loopback(args.packets, args.window, srtp=args.loopback_srtp)
    runs = {name: part for name, part in report.items() if isinstance(part, dict)}
    for name, part in runs.items():
        if not part["valid"]:
            print(f"{name}:{invalid_note(part)}", file=sys.stderr)
    report["valid"] = all(part["valid"] for part in runs.values())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
