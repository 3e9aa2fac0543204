"""
What rtpengine as media engine (ADR 0025) costs Warden's process: the CPU time
of the per-call statistics query, which the relay sends for every call each
second.

Starts a throwaway userspace rtpengine (L{warden.testing.rtpengined}) on free
ports, creates ``--calls`` calls through L{warden.rtp.rtpengine.RtpengineRelay}
(allocation, the caller's offer, the callee's answer), then polls every call
``--rounds`` times, waiting for all replies of a round before the next. The CPU
time of this process (``time.process_time``: sending, decoding the bencoded
replies, reading the counters) is divided by the queries answered. No media
flows; a reply with media counters is the same size. Usage::

    python bench/rtpengine_poll.py [--calls N] [--rounds R]

Prints one JSON object: ``cpu_us_per_query`` and ``core_percent_at_500_calls``
(500 calls queried once a second), with the reply size, and the rest of the
machine's load over the polls (processes other than this one and rtpengine, and
stolen time: ``other_cpu_pct``, ``steal_pct``; L{bench.machine}); ``valid`` is
false, with ``INVALID`` on stderr, when it reached 10% of a core.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from warden.rtp import udp as media_udp
from warden.rtp.rtpengine import RtpengineRelay, RtpengineSession
from warden.testing.rtpengined import RtpengineServer
from warden.testing.rtpnet import sdp_body

# Run as ``python bench/rtpengine_poll.py``, the path starts at bench/.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.append(ROOT)

from bench.machine import MachineMeter, invalid_note  # noqa: E402


async def run(reactor: Any, calls: int, rounds: int) -> dict[str, Any]:
    server = RtpengineServer((46000, 49999))
    server.start()
    relay = RtpengineRelay(
        reactor, functools.partial(media_udp.listen_udp, reactor), server.ng, check_interval=3600
    )
    try:
        sessions: list[RtpengineSession] = []
        for n in range(calls):
            session = await relay.allocate(f"bench-{n}")
            assert isinstance(session, RtpengineSession)
            session.offer_from("a", sdp_body("127.0.0.1", 20000 + 2 * n))
            session.answer_from("b", sdp_body("127.0.0.1", 30000 + 2 * n))
            sessions.append(session)
        await wait_idle(reactor, relay)
        sizes: list[int] = []
        original = relay.client.datagramReceived

        def measured(datagram: bytes, addr: Any) -> None:
            sizes.append(len(datagram))
            original(datagram, addr)

        relay.client.datagramReceived = measured  # type: ignore[method-assign]
        meter = MachineMeter([server.pid] if server.pid is not None else [])
        start = time.process_time()
        for _ in range(rounds):
            await defer.DeferredList([session.poll() for session in sessions])
        cpu = time.process_time() - start
        load = meter.load()
        if not load["valid"]:
            print(f"polls:{invalid_note(load)}", file=sys.stderr)
        queries = calls * rounds
        per_query = cpu / queries
        return {
            "calls": calls,
            "rounds": rounds,
            "reply_bytes": round(sum(sizes) / max(len(sizes), 1)),
            "cpu_us_per_query": round(per_query * 1e6, 1),
            "core_percent_at_500_calls": round(per_query * 500 * 100, 1),
            **load,
        }
    finally:
        relay.close()
        server.destroy()


async def wait_idle(reactor: Any, relay: RtpengineRelay) -> None:
    """Until no ng request waits (bounded: 60 s)."""
    for _ in range(60000):
        if relay.client.pending == 0:
            return
        await task.deferLater(reactor, 0.001, lambda: None)
    raise RuntimeError("rtpengine did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    async def body(reactor: Any) -> None:
        print(json.dumps(await run(reactor, args.calls, args.rounds)))

    task.react(lambda reactor: defer.Deferred.fromCoroutine(body(reactor)))


if __name__ == "__main__":
    main()
