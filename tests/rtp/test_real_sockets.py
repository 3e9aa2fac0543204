"""
The relay on real UDP sockets on 127.0.0.1: a packet from the "caller" socket
reaches the "callee" socket through the relay, from side b's RTP port.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from warden.rtp.relay import MediaRelay
from warden.rtp.session import MediaSession
from warden.testing.rtpnet import rtp, sdp_body

LOOPBACK = "127.0.0.1"


class Phone(DatagramProtocol):
    """A UDP socket that fires ``received`` with the first datagram and its source."""

    noisy = False

    def __init__(self) -> None:
        self.received: defer.Deferred[tuple[bytes, tuple[str, int]]] = defer.Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if not self.received.called:
            self.received.callback((datagram, (addr[0], addr[1])))


class RealSocketTests(TestCase):
    """End to end through the kernel's UDP on loopback."""

    timeout = 10

    def listen(self, protocol: DatagramProtocol) -> int:
        """Bind ``protocol`` to a free loopback port, closed at cleanup; return the port."""
        port = reactor.listenUDP(0, protocol, interface=LOOPBACK)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def close(self, relay: MediaRelay) -> defer.Deferred[None]:
        """Release everything and let the reactor close the ports (next turn)."""
        relay.close()
        return deferLater(reactor, 0.01, lambda: None)

    async def test_rtp_through_relay(self) -> None:
        """Caller -> relay side a -> relay side b -> callee, with side b as the source."""
        relay = MediaRelay(
            reactor,
            reactor.listenUDP,  # type: ignore[attr-defined]
            LOOPBACK,
            port_range=(40000, 40100),
        )
        self.addCleanup(self.close, relay)
        session = await relay.allocate("real-1")
        assert isinstance(session, MediaSession)
        caller, callee = Phone(), Phone()
        caller_port, callee_port = self.listen(caller), self.listen(callee)
        session.offer_from("a", sdp_body(LOOPBACK, caller_port))
        session.answer_from("b", sdp_body(LOOPBACK, callee_port))

        packet = rtp(1, 160)
        assert caller.transport is not None
        caller.transport.write(packet, (LOOPBACK, session.side_a.rtp_port))
        datagram, source = await callee.received
        self.assertEqual(datagram, packet)
        self.assertEqual(source, (LOOPBACK, session.side_b.rtp_port))

        assert callee.transport is not None
        callee.transport.write(rtp(7, ssrc=9), (LOOPBACK, session.side_b.rtp_port))
        datagram, source = await caller.received
        self.assertEqual((datagram, source), (rtp(7, ssrc=9), (LOOPBACK, session.side_a.rtp_port)))
        self.assertEqual(session.stats()["a"]["latched"], f"{LOOPBACK}:{caller_port}")

        session.release()
        self.assertEqual(relay.ports_in_use(), 0)
