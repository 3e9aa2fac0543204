"""
L{warden.rtp.rtpengine} against a real rtpengine (Debian's ``rtpengine-daemon``,
userspace, started per test on free ports by L{warden.testing.rtpengined}): the
same IMediaRelay conformance suite as the built-in relay and the fake, then RTP
relayed both ways between two phones' sockets with the counters checked.
Skipped locally without ``rtpengine``; an error under ``CI=true``.
"""

from __future__ import annotations

import functools
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet import task
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.rtp.conformance import MediaRelayConformanceMixin
from warden.rtp import udp as media_udp
from warden.rtp.errors import MediaError
from warden.rtp.ng import NgError
from warden.rtp.rtpengine import RtpengineRelay
from warden.testing.rtpengined import RtpengineServer
from warden.testing.rtpnet import rtp, sdp_body

reactor: Any = _reactor
# Generous bounds for a busy machine: seconds to wait for packets or counters.
WAIT = 30.0
STEP = 0.02


def start_rtpengine(testcase: TestCase, port_range: tuple[int, int]) -> RtpengineServer:
    """A running rtpengine on ``port_range``, destroyed at the test's end."""
    server = RtpengineServer(port_range)
    testcase.addCleanup(server.destroy)
    server.start()
    return server


class RealRtpengineConformanceTests(MediaRelayConformanceMixin, TestCase):
    """RtpengineRelay against a real rtpengine, through the IMediaRelay suite."""

    timeout = 120

    def setUp(self) -> None:
        self.clock = Clock()

    def make_relay(self, port_range: tuple[int, int] = (10000, 10099)) -> RtpengineRelay:
        server = start_rtpengine(self, port_range)
        relay = RtpengineRelay(
            self.clock, functools.partial(media_udp.listen_udp, reactor), server.ng
        )
        self.addCleanup(relay.close)
        return relay


class Phone(DatagramProtocol):
    """A phone's RTP socket: counts what arrives and where from."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, (addr[0], addr[1])))


class RealMediaTests(TestCase):
    """RTP through a real rtpengine, driven by RtpengineRelay on the real reactor."""

    timeout = 120

    def setUp(self) -> None:
        server = start_rtpengine(self, (45000, 45999))
        self.relay = RtpengineRelay(
            reactor,
            functools.partial(media_udp.listen_udp, reactor),
            server.ng,
            check_interval=0.2,
        )
        self.addCleanup(self.relay.close)
        self.phones = {}
        self.ports = {}
        for side in ("a", "b"):
            phone = Phone()
            port = reactor.listenUDP(0, phone, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.phones[side], self.ports[side] = phone, port

    async def until(self, check: Any, what: str, send: Any = None) -> None:
        """Wait (bounded) for ``check()``, calling ``send()`` every step."""
        for _ in range(int(WAIT / STEP)):
            if check():
                return
            if send is not None:
                send()
            await task.deferLater(reactor, STEP, lambda: None)
        self.fail(f"timed out waiting for {what}")

    async def test_relays_both_ways_with_counters(self) -> None:
        """Each phone's RTP reaches the other through rtpengine; stats() counts it."""
        session = await self.relay.allocate("real-call-1")
        lost: list[bool] = []
        session.on_timeout = lambda: lost.append(True)
        port_a = self.ports["a"].getHost().port
        port_b = self.ports["b"].getHost().port
        offer = session.offer_from("a", sdp_body("127.0.0.1", port_a))
        self.assertIn(f"m=audio {session.side_b.rtp_port} ".encode(), offer)
        answer = session.answer_from("b", sdp_body("127.0.0.1", port_b))
        self.assertIn(f"m=audio {session.side_a.rtp_port} ".encode(), answer)
        sequence = [0]

        def send() -> None:
            seq = sequence[0] = sequence[0] + 1
            a, b = session.side_a, session.side_b
            self.ports["a"].write(rtp(seq, seq * 160, ssrc=0xA), (a.address, a.rtp_port))
            self.ports["b"].write(rtp(seq, seq * 160, ssrc=0xB), (b.address, b.rtp_port))

        def both_heard() -> bool:
            return all(len(p.received) >= 20 for p in self.phones.values())

        await self.until(both_heard, "RTP at both phones", send)
        for side, ssrc in (("a", 0xB), ("b", 0xA)):
            packet, source = self.phones[side].received[-1]
            expected = session.side_a if side == "a" else session.side_b
            self.assertEqual(source, (expected.address, expected.rtp_port))
            self.assertEqual(packet[8:12], ssrc.to_bytes(4, "big"))

        def counted() -> bool:
            stats = session.stats()
            return all(stats[s]["packets_in"] >= 20 for s in ("a", "b"))

        await self.until(counted, "rtpengine's counters in stats()")
        stats = session.stats()
        for side in ("a", "b"):
            counts = stats[side]
            self.assertEqual(counts["bytes_in"], counts["packets_in"] * 172)
            self.assertGreaterEqual(counts["packets_out"], 20)
            self.assertEqual(counts["latched"], f"127.0.0.1:{self.ports[side].getHost().port}")
            self.assertIsNotNone(counts["last_packet_at_in"])
        self.assertEqual(stats["a"]["packets_out"], stats["b"]["packets_in"])
        # Hold and resume from the callee: rtpengine keeps the ports given out.
        session.offer_from("b", sdp_body("127.0.0.1", port_b, version=2, direction="sendonly"))
        session.answer_from("a", sdp_body("127.0.0.1", port_a, version=2, direction="recvonly"))
        session.offer_from("b", sdp_body("127.0.0.1", port_b, version=3))
        session.answer_from("a", sdp_body("127.0.0.1", port_a, version=3))
        await self.until(lambda: self.relay.client.pending == 0, "the re-INVITE's replies")
        heard = len(self.phones["a"].received)
        await self.until(lambda: len(self.phones["a"].received) > heard + 10, "RTP again", send)
        self.assertEqual(lost, [])
        session.release()
        # Deleted at once in rtpengine: a query no longer finds the call.
        await self.until(lambda: self.relay.client.pending == 0, "the delete's reply")
        with self.assertRaises(NgError) as raised:
            await self.relay.client.request("query", {"call-id": "real-call-1"})
        self.assertIn("Unknown call-id", raised.exception.reason)

    async def test_rtpengine_gone(self) -> None:
        """rtpengine stopped: a new call fails with MediaError (the caller gets 503)."""
        relay = RtpengineRelay(
            Clock(), functools.partial(media_udp.listen_udp, reactor), ("127.0.0.1", 9)
        )
        self.addCleanup(relay.close)
        relay.client.attempts = 1
        relay.client.timeout = 0.0
        d = relay.allocate("real-call-2")
        relay.client.clock.advance(0)  # type: ignore[attr-defined]
        with self.assertRaises(MediaError):
            await d
