"""
Conformance suite for L{warden.interfaces.IMediaRelay} and
L{warden.interfaces.IMediaSession}.

A subclass mixes ``MediaRelayConformanceMixin`` into a trial ``TestCase`` and
defines ``make_relay(port_range)``, returning the relay (or a Deferred of it)
built with ``self.clock``, its time source. Only the interfaces are used, so
every implementation (the built-in relay on fake sockets, an rtpengine client
against a fake ng server) runs the same checks. Tests are coroutines, so
implementations whose Deferreds fire later run them too.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from warden.interfaces import IMediaRelay, IMediaSession
from warden.rtp.errors import MediaError
from warden.sip import sdp
from warden.sip.sdp import SdpError, parse_sdp
from warden.testing.rtpnet import sdp_body

CALLER = "192.0.2.10"
CALLEE = "198.51.100.20"


class MediaRelayConformanceMixin:
    """
    The behaviour every IMediaRelay and its sessions must have.

    Subclasses set ``self.clock`` (a Clock) in setUp and define ``make_relay``.
    """

    clock: Clock

    def make_relay(self, port_range: tuple[int, int] = (10000, 10099)) -> Any:
        raise NotImplementedError

    async def relay(self, port_range: tuple[int, int] = (10000, 10099)) -> Any:
        return await defer.maybeDeferred(self.make_relay, port_range)

    async def session(self, relay: Any = None, call_id: str = "call-1") -> Any:
        relay = relay if relay is not None else await self.relay()
        return await relay.allocate(call_id)

    async def test_provides_interfaces(self) -> None:
        """The relay and its sessions provide their interfaces completely."""
        relay = await self.relay()
        self.assertTrue(verifyObject(IMediaRelay, relay))
        session = await relay.allocate("call-1")
        self.assertTrue(verifyObject(IMediaSession, session))
        session.release()

    async def test_allocate_sides(self) -> None:
        """Each side is an even RTP port with RTCP on the next; four distinct ports."""
        session = await self.session(call_id="call-7")
        self.assertEqual(session.call_id, "call-7")
        ports = []
        for side in (session.side_a, session.side_b):
            self.assertEqual(side.rtp_port % 2, 0)
            self.assertEqual(side.rtcp_port, side.rtp_port + 1)
            self.assertTrue(10000 <= side.rtp_port < side.rtcp_port <= 10099)
            ports += [side.rtp_port, side.rtcp_port]
        self.assertEqual(len(set(ports)), 4)
        session.release()

    async def test_sessions_and_ports_in_use(self) -> None:
        """sessions() lists live sessions; ports_in_use counts four ports each."""
        relay = await self.relay()
        self.assertEqual((relay.sessions(), relay.ports_in_use()), ([], 0))
        first = await relay.allocate("call-1")
        second = await relay.allocate("call-2")
        self.assertEqual(set(relay.sessions()), {first, second})
        self.assertEqual(relay.ports_in_use(), 8)
        all_ports = {
            port
            for session in (first, second)
            for side in (session.side_a, session.side_b)
            for port in (side.rtp_port, side.rtcp_port)
        }
        self.assertEqual(len(all_ports), 8)
        first.release()
        self.assertEqual(relay.sessions(), [second])
        self.assertEqual(relay.ports_in_use(), 4)
        second.release()

    async def test_release_idempotent(self) -> None:
        """A second release changes nothing and raises nothing."""
        relay = await self.relay()
        session = await relay.allocate("call-1")
        session.release()
        session.release()
        self.assertEqual((relay.sessions(), relay.ports_in_use()), ([], 0))

    async def test_exhaustion(self) -> None:
        """With two pairs in the range, a second call fails with MediaError until one ends."""
        relay = await self.relay((20000, 20003))
        session = await relay.allocate("call-1")
        with self.assertRaises(MediaError) as raised:
            await relay.allocate("call-2")
        self.assertTrue(str(raised.exception))  # says why (the built-in: the range)
        self.assertEqual(relay.sessions(), [session])
        session.release()
        again = await relay.allocate("call-3")
        again.release()

    async def test_offer_and_answer_point_at_the_other_side(self) -> None:
        """The caller's offer points at side b (for the callee); the answer at side a."""
        session = await self.session()
        offer = parse_sdp(session.offer_from("a", sdp_body(CALLER, 4000)))
        self.assertEqual(offer.connections[0].address, session.side_b.address)
        self.assertEqual(offer.media[0].port, session.side_b.rtp_port)
        answer = parse_sdp(session.answer_from("b", sdp_body(CALLEE, 5000)))
        self.assertEqual(answer.connections[0].address, session.side_a.address)
        self.assertEqual(answer.media[0].port, session.side_a.rtp_port)
        session.release()

    async def test_rtcp_attribute_rewritten(self) -> None:
        """An a=rtcp line is pointed at the other side's RTCP port."""
        session = await self.session()
        offer = parse_sdp(session.offer_from("a", sdp_body(CALLER, 4000, rtcp="4001")))
        self.assertEqual(offer.media[0].attribute_values("rtcp"), [str(session.side_b.rtcp_port)])
        session.release()

    async def test_media_parameters_kept(self) -> None:
        """Codecs, ptime, telephone-event and direction pass through unchanged."""
        session = await self.session()
        original = parse_sdp(sdp_body(CALLER, 4000, direction="sendrecv"))
        out = parse_sdp(session.offer_from("a", original.to_bytes()))
        self.assertEqual(sdp.codecs(out.media[0]), ["PCMU", "PCMA", "telephone-event"])
        self.assertEqual(sdp.ptime_ms(out.media[0]), 20.0)
        self.assertEqual(sdp.telephone_events(out.media[0])[0].fmtp, "0-16")
        self.assertEqual(sdp.direction(out.media[0], out), "sendrecv")
        self.assertEqual(out.origin, original.origin)
        session.release()

    async def test_bad_input(self) -> None:
        """Malformed SDP raises SdpError; an unknown side ValueError; released MediaError."""
        session = await self.session()
        self.assertRaises(SdpError, session.offer_from, "a", b"v=0\r\nnonsense\r\n")
        self.assertRaises(SdpError, session.answer_from, "b", b"")
        self.assertRaises(ValueError, session.offer_from, "c", sdp_body())
        session.release()
        self.assertRaises(MediaError, session.offer_from, "a", sdp_body())

    async def test_hold_state(self) -> None:
        """sendonly from a phone puts the session on hold; a new sendrecv offer resumes."""
        session = await self.session()
        self.assertFalse(session.hold_state.on_hold)
        session.offer_from("a", sdp_body(CALLER, 4000))
        session.answer_from("b", sdp_body(CALLEE, 5000))
        self.assertFalse(session.hold_state.on_hold)
        session.offer_from("b", sdp_body(CALLEE, 5000, version=2, direction="sendonly"))
        session.answer_from("a", sdp_body(CALLER, 4000, version=2, direction="recvonly"))
        self.assertTrue(session.hold_state.on_hold)
        self.assertEqual((session.hold_state.a, session.hold_state.b), ("recvonly", "sendonly"))
        session.offer_from("b", sdp_body(CALLEE, 5000, version=3))
        session.answer_from("a", sdp_body(CALLER, 4000, version=3))
        self.assertFalse(session.hold_state.on_hold)
        session.release()

    async def test_legacy_hold(self) -> None:
        """An offer with c=0.0.0.0 is hold (RFC 3264 §8.4) and keeps 0.0.0.0."""
        session = await self.session()
        held = sdp_body(CALLER, 4000).replace(f"c=IN IP4 {CALLER}".encode(), b"c=IN IP4 0.0.0.0")
        out = parse_sdp(session.offer_from("a", held))
        self.assertTrue(session.hold_state.on_hold)
        self.assertTrue(out.connections[0].unspecified)
        session.release()

    async def test_stats_shape(self) -> None:
        """stats() has both sides with every documented counter, zero at first."""
        session = await self.session()
        stats = session.stats()
        self.assertEqual(set(stats), {"a", "b"})
        for side in stats.values():
            for key in ("packets_in", "bytes_in", "lost_in", "packets_out", "bytes_out",
                        "lost_out", "rtcp_in", "rtcp_out", "dtmf_events"):  # fmt: skip
                self.assertEqual(side[key], 0, key)
            for key in ("jitter_ms_in", "jitter_ms_out"):
                self.assertEqual(side[key], 0.0)
            self.assertIsNone(side["last_packet_at_in"])
            self.assertIsNone(side["last_packet_at_out"])
        session.release()

    async def test_idle_for(self) -> None:
        """idle_for counts from allocation, and from the last offer/answer."""
        session = await self.session()
        start = self.clock.seconds()
        self.assertEqual(session.idle_for(start), 0.0)
        self.clock.advance(7)
        self.assertEqual(session.idle_for(self.clock.seconds()), 7.0)
        session.offer_from("a", sdp_body())
        self.assertEqual(session.idle_for(self.clock.seconds()), 0.0)
        session.release()

    async def test_on_timeout_settable(self) -> None:
        """on_timeout starts as None and takes a callable."""
        session = await self.session()
        self.assertIsNone(session.on_timeout)
        session.on_timeout = lambda: None
        self.assertIsNotNone(session.on_timeout)
        session.release()
