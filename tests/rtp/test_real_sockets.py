"""
The relay on real UDP sockets on 127.0.0.1: a packet from the "caller" socket
reaches the "callee" socket through the relay, from side b's RTP port; and an
attacker on another loopback address racing the phones gets nothing in or out
(ADR 0013).
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
        self.datagrams: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Send from this phone's socket."""
        assert self.transport is not None
        self.transport.write(datagram, addr)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.datagrams.append((datagram, (addr[0], addr[1])))
        if not self.received.called:
            self.received.callback((datagram, (addr[0], addr[1])))


class RealSocketTests(TestCase):
    """End to end through the kernel's UDP on loopback."""

    timeout = 10

    def listen(self, protocol: DatagramProtocol, host: str = LOOPBACK) -> int:
        """Bind ``protocol`` to a free port of ``host``, closed at cleanup; return the port."""
        port = reactor.listenUDP(0, protocol, interface=host)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def close(self, relay: MediaRelay) -> defer.Deferred[None]:
        """Release everything and let the reactor close the ports (next turn)."""
        relay.close()
        return deferLater(reactor, 0.01, lambda: None)

    async def relay_session(self, port_range: tuple[int, int]) -> tuple[MediaRelay, MediaSession]:
        """A relay on 127.0.0.1 (released at cleanup) and one session of it."""
        relay = MediaRelay(
            reactor,
            reactor.listenUDP,  # type: ignore[attr-defined]
            LOOPBACK,
            port_range=port_range,
        )
        self.addCleanup(self.close, relay)
        session = await relay.allocate("real")
        assert isinstance(session, MediaSession)
        return relay, session

    async def test_rtp_through_relay(self) -> None:
        """Caller -> relay side a -> relay side b -> callee, with side b as the source."""
        relay, session = await self.relay_session((40000, 40100))
        caller, callee = Phone(), Phone()
        caller_port, callee_port = self.listen(caller), self.listen(callee)
        session.signalling_from("a", LOOPBACK)
        session.signalling_from("b", LOOPBACK)
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

    async def until(self, condition: Any, what: str) -> None:
        """Wait (at most 5 s of reactor time) until ``condition()`` is true."""
        for _ in range(500):
            if condition():
                return
            await deferLater(reactor, 0.01, lambda: None)
        self.fail(f"timed out waiting for {what}")

    async def test_attacker_racing_the_phones(self) -> None:
        """
        The relay on 127.0.0.1, the caller on 127.0.0.2, the callee on 127.0.0.4.
        An attacker on 127.0.0.3 who learnt the caller's relay port sends a
        consistent RTP stream there before the caller speaks: every packet is
        dropped as spoofed, the phones then hear each other (each other's
        packets only), and the attacker receives nothing of the callee's audio.
        """
        caller_ip, attacker_ip, callee_ip = "127.0.0.2", "127.0.0.3", "127.0.0.4"
        _relay, session = await self.relay_session((40200, 40299))
        caller, callee, attacker = Phone(), Phone(), Phone()
        caller_port = self.listen(caller, caller_ip)
        callee_port = self.listen(callee, callee_ip)
        self.listen(attacker, attacker_ip)
        session.signalling_from("a", caller_ip)
        session.offer_from("a", sdp_body(caller_ip, caller_port, user="caller"))
        session.signalling_from("b", callee_ip)
        session.answer_from("b", sdp_body(callee_ip, callee_port, user="callee"))
        side_a = (LOOPBACK, session.side_a.rtp_port)
        side_b = (LOOPBACK, session.side_b.rtp_port)

        for seq in range(1, 11):
            attacker.send(rtp(seq, 160 * seq, ssrc=0xBAD), side_a)

        def handled() -> int:
            stats = session.stats()["a"]
            return int(stats["packets_in"] + stats["dropped_spoofed"])

        await self.until(lambda: handled() == 10, "the attacker's packets")
        # The callee speaks first: its audio must reach the caller, not the attacker.
        for seq in range(1, 6):
            callee.send(rtp(seq, 160 * seq, ssrc=0xB), side_b)
        await self.until(
            lambda: len(caller.datagrams + attacker.datagrams) >= 5, "the callee's media"
        )
        self.assertEqual(attacker.datagrams, [])
        for seq in range(1, 6):
            caller.send(rtp(seq, 160 * seq, ssrc=0xA), side_a)
        await self.until(lambda: len(callee.datagrams) >= 5, "the caller's media")
        self.assertEqual(
            callee.datagrams, [(rtp(seq, 160 * seq, ssrc=0xA), side_b) for seq in range(1, 6)]
        )
        self.assertEqual(
            caller.datagrams, [(rtp(seq, 160 * seq, ssrc=0xB), side_a) for seq in range(1, 6)]
        )
        stats = session.stats()
        self.assertEqual(stats["a"]["latched"], f"{caller_ip}:{caller_port}")
        self.assertEqual(stats["b"]["latched"], f"{callee_ip}:{callee_port}")
        self.assertEqual(stats["a"]["dropped_spoofed"], 10)
