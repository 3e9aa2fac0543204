"""
CPU time per relayed packet on real sockets, with ``k`` packets waiting per
reactor wake-up: the relay's sockets bound with ``listen_udp`` (each socket a
reader of the reactor) or through ``MediaSockets`` (one epoll set, the media
process's way; ADR 0033).

One process, its own epoll reactor (not the global one): ``sessions`` relayed
calls on 127.0.0.1, one "phone" socket sending to side a of ``k`` calls in
turn, then one reactor iteration relays them out of side b to a sink socket
read in batches. The figure is the process's CPU time (``time.process_time``)
per packet and includes the phone's own ``sendto`` and the sink's reads,
the same in both variants: a CPU-per-op figure, valid on a busy machine, not a
throughput. Usage::

    python bench/relay_wakeups.py [--ready 1,4,16] [--rounds 10000] [--repeat 3]

Prints one JSON object: per ``k``, the best of ``repeat`` runs of each variant.
Each run records the rest of the machine's load (``other_cpu_pct``,
``steal_pct``, ``valid``; L{bench.machine}); ``best`` is taken from the valid
runs, and a variant (and the whole document) is ``valid`` only when it had
one. An invalid run is marked ``INVALID`` on stderr.
"""

from __future__ import annotations

import argparse
import functools
import json
import socket
import struct
import sys
import time
from typing import Any

sys.path.insert(0, ".")

from twisted.internet.epollreactor import EPollReactor

from bench.machine import MachineMeter, invalid_note
from warden.rtp import udp
from warden.rtp.policy import MediaPolicy
from warden.rtp.relay import MediaRelay
from warden.rtp.session import MediaSession
from warden.testing.rtpnet import sdp_body

HOST = "127.0.0.1"
VARIANTS = ("listen_udp", "media_sockets")


def packet(seq: int) -> bytes:
    """A 172-byte PCMU RTP packet."""
    return (
        struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (160 * seq) & 0xFFFFFFFF, 1) + b"\xff" * 160
    )


def _socket(buffer: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    if buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    return sock


def run(variant: str, ready: int, rounds: int, sessions: int, port_min: int) -> dict[str, Any]:
    """
    One run: CPU µs per packet, how many packets the relay counted, and the
    rest of the machine's load meanwhile (``other_cpu_pct``, ``steal_pct``,
    ``valid``).
    """
    reactor = EPollReactor()  # type: ignore[no-untyped-call]
    if variant == "media_sockets":
        listen = udp.MediaSockets(reactor).listen_udp
    else:
        listen = functools.partial(udp.listen_udp, reactor)
    relay = MediaRelay(
        reactor, listen, HOST, (port_min, port_min + 4 * sessions + 10), media_timeout=600.0,
        policy=MediaPolicy(own_addresses=[HOST]),
    )  # fmt: skip
    phone, sink = _socket(), _socket(1 << 22)
    relayed: list[MediaSession] = []
    for i in range(sessions):
        relay.allocate(f"bench-{i}").addCallback(relayed.append)
        session = relayed[-1]
        session.signalling_from("a", HOST)
        session.signalling_from("b", HOST)
        session.offer_from("a", sdp_body(HOST, phone.getsockname()[1]))
        session.answer_from("b", sdp_body(HOST, sink.getsockname()[1]))
    targets = [(HOST, s.side_a.rtp_port) for s in relayed]
    packets = [packet(seq) for seq in range(rounds + 1)]

    def drain() -> None:
        try:
            while True:
                sink.recv(2048)
        except BlockingIOError:
            pass

    try:
        meter = MachineMeter()
        start = time.process_time()
        for r in range(rounds):
            data = packets[r]
            for j in range(ready):
                phone.sendto(data, targets[(r * ready + j) % sessions])
            reactor.iterate(0)  # type: ignore[no-untyped-call]
            if r & 63 == 63:
                drain()
        elapsed = time.process_time() - start
        load = meter.load()
        drain()
        counted = sum(s.stats()["a"]["packets_in"] for s in relayed)
    finally:
        relay.close()
        phone.close()
        sink.close()
    return {
        "cpu_us_per_packet": round(1e6 * elapsed / (rounds * ready), 2),
        "counted": counted,
        **load,
    }


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The least CPU per packet of the valid runs (of all when none was), and every run."""
    valid = [r["cpu_us_per_packet"] for r in runs if r["valid"]]
    return {
        "best": min(valid or [r["cpu_us_per_packet"] for r in runs]),
        "valid": bool(valid),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ready", default="1,4,16", help="packets waiting per wake-up")
    parser.add_argument("--rounds", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--port-min", type=int, default=14000)
    args = parser.parse_args()
    report: dict[str, Any] = {}
    for ready in (int(n) for n in args.ready.split(",")):
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeat):
            for variant in VARIANTS:
                result = run(variant, ready, args.rounds, args.sessions, args.port_min)
                del result["counted"]
                if not result["valid"]:
                    print(f"ready {ready}, {variant}:{invalid_note(result)}", file=sys.stderr)
                runs[variant].append(result)
        report[f"ready_{ready}"] = {v: best_of(r) for v, r in runs.items()}
    report["valid"] = all(
        figures["valid"]
        for key, variants in report.items()
        if key.startswith("ready_")
        for figures in variants.values()
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
