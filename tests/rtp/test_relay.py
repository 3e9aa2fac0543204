"""
Tests for the built-in media relay on fake sockets: the conformance suite, then
relaying, latching, counters, DTMF, media timeout, port binding and metrics.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IListeningPort, IUDPTransport
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.rtp.conformance import CALLEE, CALLER, MediaRelayConformanceMixin
from warden.rtp import metrics
from warden.rtp.errors import MediaError
from warden.rtp.ports import PortPool
from warden.rtp.relay import MediaRelay
from warden.rtp.session import MediaSession
from warden.sip.sdp import parse_sdp
from warden.testing.rtpnet import FakeNetwork, dtmf, rtcp_rr, rtp, sdp_body

RELAY_IP = "203.0.113.1"
NAT = ("203.0.113.50", 31000)


def lowest(n: int) -> int:
    """A port chooser taking the lowest free pair (PortPool keeps them descending)."""
    return n - 1


def value(metric: Any) -> float:
    """The current value of a prometheus counter or gauge child."""
    return float(metric._value.get())


class RelayConformanceTests(MediaRelayConformanceMixin, TestCase):
    """MediaRelay on fake sockets against the IMediaRelay/IMediaSession suite."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = FakeNetwork()

    def make_relay(self, port_range: tuple[int, int] = (10000, 10099)) -> MediaRelay:
        return MediaRelay(self.clock, self.network.listen_udp, RELAY_IP, port_range)


class RelayTestMixin:
    """A relay on a FakeNetwork and a Clock, and helpers to play both phones."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.network = FakeNetwork()
        self.relay = self.make_relay()

    def make_relay(self, **kw: Any) -> MediaRelay:
        """A relay on ports 10000-10099 of RELAY_IP."""
        kw.setdefault("port_range", (10000, 10099))
        kw.setdefault("choose_port", lowest)
        return MediaRelay(self.clock, self.network.listen_udp, RELAY_IP, **kw)

    def exported(self, metric: Any) -> float:
        """``metric``'s value once the relay has exported its sessions' counters."""
        self.relay.flush_metrics()
        return value(metric)

    def allocate(self, relay: MediaRelay | None = None) -> MediaSession:
        """A new session (the allocation must succeed)."""
        session = self.successResultOf((relay or self.relay).allocate("call-1"))  # type: ignore[attr-defined]
        assert isinstance(session, MediaSession)
        return session

    def call(
        self, caller_sdp: bytes | None = None, callee_sdp: bytes | None = None
    ) -> MediaSession:
        """A session with the caller's offer and the callee's answer exchanged."""
        session = self.allocate()
        session.offer_from("a", caller_sdp or sdp_body(CALLER, 4000, user="caller"))
        session.answer_from("b", callee_sdp or sdp_body(CALLEE, 5000, user="callee"))
        return session

    def from_caller(
        self, session: MediaSession, data: bytes, source: tuple[str, int] = (CALLER, 4000)
    ) -> None:
        """The caller sends ``data`` to side a's RTP port."""
        self.network.deliver(session.side_a.rtp_port, data, source)

    def from_callee(
        self, session: MediaSession, data: bytes, source: tuple[str, int] = (CALLEE, 5000)
    ) -> None:
        """The callee sends ``data`` to side b's RTP port."""
        self.network.deliver(session.side_b.rtp_port, data, source)

    def stream(
        self,
        session: MediaSession,
        side: str,
        first: int,
        count: int,
        source: tuple[str, int],
        ssrc: int = 0x11223344,
    ) -> None:
        """``count`` consecutive RTP packets from ``source`` to ``side``'s RTP port."""
        port = session.side_a.rtp_port if side == "a" else session.side_b.rtp_port
        for seq in range(first, first + count):
            self.network.deliver(port, rtp(seq, 160 * seq, ssrc=ssrc), source)

    def to_callee(self, session: MediaSession) -> list[tuple[bytes, tuple[str, int]]]:
        """What the relay sent from side b's RTP port since last asked."""
        return self.network.sent_from(session.side_b.rtp_port)

    def to_caller(self, session: MediaSession) -> list[tuple[bytes, tuple[str, int]]]:
        """What the relay sent from side a's RTP port since last asked."""
        return self.network.sent_from(session.side_a.rtp_port)


class RelayingTests(RelayTestMixin, SynchronousTestCase):
    """Packets go from one side's socket out of the other's, unchanged."""

    def test_both_ways(self) -> None:
        """Caller -> side a -> side b -> callee, and back, byte for byte."""
        session = self.call()
        self.from_caller(session, rtp(1))
        self.assertEqual(self.to_callee(session), [(rtp(1), (CALLEE, 5000))])
        self.from_callee(session, rtp(9, ssrc=7))
        self.assertEqual(self.to_caller(session), [(rtp(9, ssrc=7), (CALLER, 4000))])
        self.assertEqual(self.to_caller(session) + self.to_callee(session), [])

    def test_rtcp_both_ways(self) -> None:
        """RTCP goes between the RTCP ports, to port + 1 or the a=rtcp port."""
        session = self.call(callee_sdp=sdp_body(CALLEE, 5000, rtcp="5011"))
        self.network.deliver(session.side_a.rtcp_port, rtcp_rr(), (CALLER, 4001))
        self.assertEqual(
            self.network.sent_from(session.side_b.rtcp_port), [(rtcp_rr(), (CALLEE, 5011))]
        )
        self.network.deliver(session.side_b.rtcp_port, rtcp_rr(9), (CALLEE, 5011))
        self.assertEqual(
            self.network.sent_from(session.side_a.rtcp_port), [(rtcp_rr(9), (CALLER, 4001))]
        )
        stats = session.stats()
        self.assertEqual((stats["a"]["rtcp_in"], stats["b"]["rtcp_out"]), (1, 1))
        self.assertEqual((stats["b"]["rtcp_in"], stats["a"]["rtcp_out"]), (1, 1))
        self.assertEqual(stats["a"]["packets_in"], 0)

    def test_rtcp_mux(self) -> None:
        """RTCP on the RTP port (RFC 5761) is relayed on the RTP ports and counted as RTCP."""
        session = self.call()
        self.from_caller(session, rtcp_rr())
        self.assertEqual(self.to_callee(session), [(rtcp_rr(), (CALLEE, 5000))])
        stats = session.stats()
        self.assertEqual((stats["a"]["rtcp_in"], stats["a"]["packets_in"]), (1, 0))
        self.assertEqual(stats["b"]["rtcp_out"], 1)

    def test_no_destination_yet(self) -> None:
        """Before the callee's SDP, the caller's packets are dropped; the callee's go through
        once it has proved its stream."""
        session = self.allocate()
        session.offer_from("a", sdp_body(CALLER, 4000))
        session.signalling_from("b", CALLEE)
        before = self.exported(metrics.DROPPED["no_destination"])
        self.from_caller(session, rtp(1))
        self.assertEqual(self.to_callee(session), [])
        self.assertEqual(session.stats()["b"]["dropped_no_destination"], 1)
        self.assertEqual(self.exported(metrics.DROPPED["no_destination"]), before + 1)
        # The callee, heard before its SDP, proves its stream from its SIP address.
        self.stream(session, "b", 1, 3, (CALLEE, 5000), ssrc=2)
        self.assertEqual(self.to_caller(session), [(rtp(3, 480, ssrc=2), (CALLER, 4000))])

    def test_malformed_dropped(self) -> None:
        """Non-RTP datagrams are dropped, counted, and do not latch."""
        session = self.call()
        before = self.exported(metrics.DROPPED["malformed"])
        stun = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x00" * 12
        for garbage in (b"", b"\x80", stun, b"\x40" + rtp(1)[1:]):
            self.from_caller(session, garbage, source=("192.0.2.99", 1))
        self.network.deliver(session.side_a.rtcp_port, b"\x80\xc9", (CALLER, 4001))
        self.assertEqual(self.to_callee(session), [])
        self.assertEqual(session.stats()["a"]["dropped_malformed"], 5)
        self.assertEqual(self.exported(metrics.DROPPED["malformed"]), before + 5)
        self.from_caller(session, rtp(1))
        self.assertEqual(session.stats()["a"]["latched"], f"{CALLER}:4000")

    def test_send_error_counted(self) -> None:
        """A socket that refuses to send drops the packet as send_error."""
        session = self.call()
        self.network.ports[session.side_b.rtp_port].fail_writes = True
        self.from_caller(session, rtp(1))
        self.assertEqual(session.stats()["b"]["dropped_send_error"], 1)
        self.assertEqual(session.stats()["b"]["packets_out"], 0)

    def ipv6_relay(self) -> Any:
        """A relay on 2001:db8::1."""
        relay = self.make_relay(port_range=(30000, 30099))
        relay.address = relay.interface = "2001:db8::1"
        return relay

    def test_ipv6(self) -> None:
        """An IPv6 relay rewrites to IN IP6 and relays between IPv6 phones."""
        session = self.allocate(self.ipv6_relay())
        out = parse_sdp(session.offer_from("a", sdp_body("2001:db8::10", 4000)))
        self.assertEqual(out.connections[0].value(), "IN IP6 2001:db8::1")
        session.answer_from("b", sdp_body("2001:db8::20", 5000))
        self.network.deliver(session.side_a.rtp_port, rtp(1), ("2001:db8::10", 4000, 0, 0))  # type: ignore[arg-type]
        self.assertEqual(self.to_callee(session), [(rtp(1), ("2001:db8::20", 5000))])
        self.assertEqual(self.network.ports[session.side_a.rtp_port].interface, "2001:db8::1")

    def test_rejected_stream_is_no_destination(self) -> None:
        """An answer with port 0 rejects the stream: nothing is sent to port 0."""
        rejected = sdp_body(CALLEE, 5000).replace(b"m=audio 5000", b"m=audio 0")
        session = self.call(callee_sdp=rejected)
        self.from_caller(session, rtp(1))
        self.assertEqual(self.to_callee(session), [])
        self.assertEqual(session.stats()["b"]["dropped_no_destination"], 1)
        self.assertEqual(session.hold_state.b, "inactive")

    def test_wrong_family_is_no_destination(self) -> None:
        """An IPv6 phone address cannot be reached from an IPv4 relay until it is heard."""
        session = self.call(callee_sdp=sdp_body("2001:db8::20", 5000))
        self.from_caller(session, rtp(1))
        self.assertEqual(session.stats()["b"]["dropped_no_destination"], 1)

    def test_metrics(self) -> None:
        """Relayed packets and bytes, and ports in use, are exported."""
        packets = self.exported(metrics.PACKETS_RELAYED)
        octets = self.exported(metrics.BYTES_RELAYED)
        session = self.call()
        self.assertEqual(self.exported(metrics.PORTS_IN_USE), 4)
        self.from_caller(session, rtp(1))
        self.from_callee(session, rtp(1))
        self.assertEqual(self.exported(metrics.PACKETS_RELAYED), packets + 2)
        self.assertEqual(self.exported(metrics.BYTES_RELAYED), octets + 2 * len(rtp(1)))
        session.release()
        self.assertEqual(self.exported(metrics.PORTS_IN_USE), 0)

    def test_metrics_exported_each_interval(self) -> None:
        """Counters reach Prometheus at the next check (every second), without a flush."""
        session = self.call()
        before = value(metrics.PACKETS_RELAYED)
        self.from_caller(session, rtp(1))
        self.clock.advance(1.0)
        self.assertEqual(value(metrics.PACKETS_RELAYED), before + 1)

    def test_metrics_exported_on_release(self) -> None:
        """Release exports what the session counted since the last check."""
        session = self.call()
        before = value(metrics.DROPPED["spoofed"])
        self.from_caller(session, rtp(1))
        self.from_caller(session, rtp(2), source=NAT)
        session.release()
        self.assertEqual(value(metrics.DROPPED["spoofed"]), before + 1)


class LatchingTests(RelayTestMixin, SynchronousTestCase):
    """Symmetric RTP: each side follows the source it hears, and only that one."""

    def test_latch_to_nat_address(self) -> None:
        """
        A caller behind NAT (SIP from its public address, SDP naming a private
        one): its private address is no destination; after three consecutive
        packets from its public address the side latches there, both ways.
        """
        session = self.allocate()
        session.signalling_from("a", NAT[0])
        session.offer_from("a", sdp_body("192.168.1.10", 4000, user="caller"))
        session.answer_from("b", sdp_body(CALLEE, 5000, user="callee"))
        self.from_callee(session, rtp(1, ssrc=2))
        self.assertEqual(self.to_caller(session), [])
        self.assertEqual(session.stats()["a"]["dropped_no_destination"], 1)
        self.stream(session, "a", 1, 2, NAT)
        self.assertEqual(self.to_callee(session), [])
        self.assertEqual(session.stats()["a"]["dropped_pending"], 2)
        self.stream(session, "a", 3, 2, NAT)
        self.assertEqual(self.to_callee(session), [(rtp(3, 480), (CALLEE, 5000)),
                                                   (rtp(4, 640), (CALLEE, 5000))])  # fmt: skip
        self.from_callee(session, rtp(2, ssrc=2))
        self.assertEqual(self.to_caller(session), [(rtp(2, ssrc=2), NAT)])
        self.assertEqual(session.stats()["a"]["latched"], "203.0.113.50:31000")

    def test_spoofed_source_dropped(self) -> None:
        """After latching, packets from anyone else are dropped and counted."""
        session = self.call()
        self.from_caller(session, rtp(1))
        self.to_callee(session)
        before = self.exported(metrics.DROPPED["spoofed"])
        self.from_caller(session, rtp(2), source=("198.51.100.66", 4000))
        self.from_caller(session, rtp(3), source=(CALLER, 4002))
        self.assertEqual(self.to_callee(session), [])
        self.assertEqual(session.stats()["a"]["dropped_spoofed"], 1)
        self.assertEqual(session.stats()["a"]["dropped_pending"], 1)
        self.assertEqual(self.exported(metrics.DROPPED["spoofed"]), before + 1)
        self.from_caller(session, rtp(4))
        self.assertEqual(len(self.to_callee(session)), 1)
        self.assertEqual(session.stats()["a"]["packets_in"], 2)

    def test_declared_address_wins_the_latch(self) -> None:
        """After a new SDP moves the caller to another address, the old phone (still
        talking, now neither signalling nor declared) cannot keep the stream; the
        declared address latches at once."""
        session = self.call()
        self.from_caller(session, rtp(1))
        session.offer_from("a", sdp_body("192.0.2.99", 4200, version=2, user="caller"))
        self.from_caller(session, rtp(2))  # the old phone, still talking
        self.assertEqual(session.stats()["a"]["dropped_spoofed"], 1)
        self.to_callee(session)
        self.from_caller(session, rtp(2), source=("192.0.2.99", 4200))
        self.assertEqual(len(self.to_callee(session)), 1)
        self.assertEqual(session.stats()["a"]["latched"], "192.0.2.99:4200")
        self.from_caller(session, rtp(3))  # the old phone is still a stranger
        self.assertEqual(self.to_callee(session), [])

    def test_rtcp_latches_separately(self) -> None:
        """
        RTCP latches on its own port to a port of the IP address RTP latched to
        (the NAT), at once; RTCP from there before RTP latched is pending, a
        stranger's is spoofed.
        """
        session = self.allocate()
        session.signalling_from("a", NAT[0])
        session.offer_from("a", sdp_body("192.168.1.10", 4000, user="caller"))
        session.answer_from("b", sdp_body(CALLEE, 5000, user="callee"))
        self.network.deliver(session.side_a.rtcp_port, rtcp_rr(), ("203.0.113.50", 31001))
        self.assertEqual(session.stats()["a"]["dropped_pending"], 1)
        self.stream(session, "a", 1, 3, NAT)
        self.network.deliver(session.side_a.rtcp_port, rtcp_rr(), ("203.0.113.50", 31001))
        self.network.deliver(session.side_a.rtcp_port, rtcp_rr(), ("198.51.100.66", 1))
        self.assertEqual(session.stats()["a"]["dropped_spoofed"], 1)
        self.network.deliver(session.side_b.rtcp_port, rtcp_rr(5), (CALLEE, 5001))
        self.assertEqual(
            self.network.sent_from(session.side_a.rtcp_port),
            [(rtcp_rr(5), ("203.0.113.50", 31001))],
        )

    def test_new_offer_resets_latch(self) -> None:
        """A re-INVITE from the caller (new o= version) lets it latch anew."""
        session = self.call()
        session.signalling_from("a", NAT[0])
        self.from_caller(session, rtp(1))
        session.offer_from("a", sdp_body("192.0.2.11", 4100, version=2, user="caller"))
        self.from_callee(session, rtp(1, ssrc=2))
        self.assertEqual(self.to_caller(session), [(rtp(1, ssrc=2), ("192.0.2.11", 4100))])
        self.stream(session, "a", 2, 3, NAT)
        self.assertEqual(len(self.to_callee(session)), 2)
        self.from_caller(session, rtp(5))
        self.assertEqual(self.to_callee(session), [])
        self.assertEqual(session.stats()["a"]["latched"], "203.0.113.50:31000")

    def test_new_address_same_version_resets_latch(self) -> None:
        """A phone that moves without bumping its o= version is followed all the same."""
        session = self.call()
        self.from_caller(session, rtp(1))
        session.offer_from("a", sdp_body("192.0.2.11", 4100, user="caller"))
        self.from_caller(session, rtp(2), source=("192.0.2.11", 4100))
        self.assertEqual(session.stats()["a"]["latched"], "192.0.2.11:4100")

    def test_same_description_keeps_latch(self) -> None:
        """The same SDP again (183 then 200: same o= line) keeps the latch."""
        session = self.call()
        session.signalling_from("b", NAT[0])
        self.stream(session, "b", 1, 3, NAT, ssrc=2)
        session.answer_from("b", sdp_body(CALLEE, 5000, user="callee"))
        self.from_caller(session, rtp(1))
        self.assertEqual(self.to_callee(session), [(rtp(1), NAT)])


class CounterTests(RelayTestMixin, SynchronousTestCase):
    """Per-side counters: packets, bytes, loss, jitter, last packet, DTMF."""

    def test_packets_bytes_and_times(self) -> None:
        """In counts on the sending side, out on the receiving side, with times."""
        session = self.call()
        start = self.clock.seconds()
        for seq in range(1, 6):
            self.from_caller(session, rtp(seq, 160 * seq))
            self.clock.advance(0.02)
        stats = session.stats()
        self.assertEqual((stats["a"]["packets_in"], stats["a"]["bytes_in"]), (5, 5 * 172))
        self.assertEqual((stats["b"]["packets_out"], stats["b"]["bytes_out"]), (5, 5 * 172))
        self.assertAlmostEqual(stats["a"]["last_packet_at_in"], start + 0.08)
        self.assertAlmostEqual(stats["b"]["last_packet_at_out"], start + 0.08)
        self.assertEqual((stats["b"]["packets_in"], stats["a"]["packets_out"]), (0, 0))

    def test_loss_with_gap(self) -> None:
        """A gap in the caller's sequence is loss on a's in and b's out, and a metric."""
        session = self.call()
        before = self.exported(metrics.LOST)
        for seq in (1, 2, 3, 6, 7):
            self.from_caller(session, rtp(seq, 160 * seq))
        stats = session.stats()
        self.assertEqual((stats["a"]["lost_in"], stats["b"]["lost_out"]), (2, 2))
        self.assertEqual(self.exported(metrics.LOST), before + 2)

    def test_jitter_irregular_arrivals(self) -> None:
        """Arrivals 30 ms then 10 ms apart for 20 ms packets: J = 9.6875 units, 1.211 ms."""
        session = self.call()
        for seq, gap in ((1, 0.030), (2, 0.010), (3, 0.0)):
            self.from_caller(session, rtp(seq, 160 * seq))
            self.clock.advance(gap)
        self.assertEqual(session.stats()["a"]["jitter_ms_in"], 1.211)
        self.assertEqual(session.stats()["b"]["jitter_ms_out"], 1.211)

    def test_jitter_uses_sdp_clock_rate(self) -> None:
        """Jitter in ms uses the rtpmap clock rate of the payload type (opus at 48 kHz)."""
        opus = sdp_body(CALLEE, 5000).replace(b"RTP/AVP 0 8 101", b"RTP/AVP 96 0 8 101")
        opus += b"a=rtpmap:96 opus/48000/2\r\n"
        session = self.call(callee_sdp=opus)
        self.from_caller(session, rtp(1, 0, payload_type=96))
        self.clock.advance(0.030)
        self.from_caller(session, rtp(2, 960, payload_type=96))
        self.assertEqual(session.stats()["a"]["jitter_ms_in"], 0.625)

    def test_dtmf_counted_and_untouched(self) -> None:
        """RFC 4733 events pass unchanged and count once per event."""
        session = self.call()
        packets = [dtmf(10, 8000, duration=160 * n) for n in (1, 2, 3)]
        packets += [dtmf(n, 8000, end=True, duration=480) for n in (13, 14, 15)]
        packets += [dtmf(16, 9600, event=11), dtmf(17, 9600, event=11, end=True)]
        before = self.exported(metrics.DTMF_EVENTS)
        for data in packets:
            self.from_caller(session, data)
        self.assertEqual([p for p, _ in self.to_callee(session)], packets)
        self.assertEqual(session.stats()["a"]["dtmf_events"], 2)
        self.assertEqual(self.exported(metrics.DTMF_EVENTS), before + 2)
        self.assertEqual(session.stats()["a"]["jitter_ms_in"], 0.0)


class _NullTap:
    """A tap that keeps nothing: a tapped session takes the general packet path."""

    def rtp(self, *args: Any) -> None:
        pass

    def close(self, now: float) -> None:
        pass


def _counters(session: MediaSession) -> dict[str, dict[str, Any]]:
    """A session's stats without its own ports."""
    return {
        side: {k: v for k, v in stats.items() if not k.endswith("_port")}
        for side, stats in session.stats().items()
    }


class FastPathTests(RelayTestMixin, SynchronousTestCase):
    """
    The common packet (plain RTP from the latched source, untapped; see
    ``MediaSession._relay_plain``) is relayed and counted exactly as the
    general path relays and counts it, whatever else is mixed in.
    """

    def mixed(self, session: MediaSession) -> list[tuple[bytes, tuple[str, int]]]:
        """A mixed stream both ways, with gaps and irregular arrivals; what was sent."""
        caller, callee = (CALLER, 4000), (CALLEE, 5000)
        packets = [
            (caller, rtp(1, 160)), (callee, rtp(50, 8000, ssrc=9)), (caller, rtp(2, 320)),
            (caller, rtp(4, 640, marker=True)), (caller, rtp(5, 800, csrcs=(7, 8))),
            (caller, rtp(6, 960, extension=b"\x00\x01\x02\x03")),
            (caller, rtp(7, 1120, padding=4)), (caller, dtmf(8, 1120)),
            (caller, dtmf(9, 1120, end=True)), (caller, rtcp_rr()), (caller, b"\x80"),
            (caller, rtp(10, 1600, payload_type=8)), (caller, rtp(10, 1600)),
            (("192.0.2.99", 4000), rtp(11, 1760)), ((CALLER, 4002), rtp(11, 1760)),
            (caller, rtp(9, 1440)), (callee, rtp(51, 8160, ssrc=9, payload_type=96)),
            (caller, rtp(3000, 480000)), (caller, rtp(12, 1920)),
            (caller, rtp(13, 9600, payload_type=96)), (caller, rtp(14, 10560, payload_type=96)),
            (caller, rtp(15, 11520, payload_type=96)),
        ]  # fmt: skip
        for i, (source, data) in enumerate(packets):
            self.clock.advance(0.013 + 0.011 * (i % 3))
            port = session.side_a.rtp_port if source[0] != CALLEE else session.side_b.rtp_port
            self.network.deliver(port, data, source)
        return self.to_callee(session) + self.to_caller(session)

    def test_same_as_general_path(self) -> None:
        """Every counter and every packet sent match a tapped session's (the general path)."""
        start = self.clock.seconds()
        opus = sdp_body(CALLEE, 5000).replace(b"RTP/AVP 0 8 101", b"RTP/AVP 96 0 8 101")
        opus += b"a=rtpmap:96 opus/48000/2\r\n"
        plain = self.call(callee_sdp=opus)
        plain_sent = self.mixed(plain)
        self.clock.rightNow = start
        tapped = self.call(callee_sdp=opus)
        tapped.tap = _NullTap()
        tapped_sent = self.mixed(tapped)
        self.assertEqual(plain_sent, tapped_sent)
        self.assertEqual(_counters(plain), _counters(tapped))
        self.assertEqual(plain.stats()["a"]["dtmf_events"], 1)
        self.assertEqual(plain.stats()["a"]["dropped_spoofed"], 1)
        self.assertEqual(plain.stats()["a"]["dropped_malformed"], 1)


class TimeoutTests(RelayTestMixin, SynchronousTestCase):
    """Media timeout: fires once after media_timeout without RTP, never on hold."""

    #: Timed loops running while sessions exist (the relay's check).
    LOOPS = 1

    def watched(self) -> tuple[MediaSession, list[float]]:
        """A call whose on_timeout records the time it fired."""
        session = self.call()
        fired: list[float] = []
        session.on_timeout = lambda: fired.append(self.clock.seconds())
        return session, fired

    def test_fires_once(self) -> None:
        """Nothing at 59.9 s of silence; once at 60 s; never again."""
        _session, fired = self.watched()
        start = self.clock.seconds()
        self.clock.advance(59.9)
        self.assertEqual(fired, [])
        self.clock.advance(0.1)
        self.assertEqual(fired, [start + 60])
        self.clock.pump([1.0] * 300)
        self.assertEqual(fired, [start + 60])

    def test_media_keeps_call_alive(self) -> None:
        """RTP from either phone resets the clock."""
        session, fired = self.watched()
        for i in range(20):
            self.clock.advance(30)
            if i % 2:
                self.from_caller(session, rtp(i))
            else:
                self.from_callee(session, rtp(i))
        self.assertEqual(fired, [])
        self.assertEqual(session.idle_for(self.clock.seconds()), 0.0)

    def test_not_on_hold(self) -> None:
        """While a phone holds, silence is expected; after resume the timer starts anew."""
        session, fired = self.watched()
        self.clock.advance(30)
        session.offer_from("a", sdp_body(CALLER, 4000, version=2, direction="sendonly"))
        session.answer_from("b", sdp_body(CALLEE, 5000, version=2, direction="recvonly"))
        self.clock.pump([1.0] * 600)
        self.assertEqual(fired, [])
        session.offer_from("a", sdp_body(CALLER, 4000, version=3))
        session.answer_from("b", sdp_body(CALLEE, 5000, version=3))
        resumed = self.clock.seconds()
        self.clock.advance(59)
        self.assertEqual(fired, [])
        self.clock.advance(1)
        self.assertEqual(fired, [resumed + 60])

    def test_failing_callback_logged(self) -> None:
        """An on_timeout that raises is logged and does not stop the checks."""
        first = self.call()
        second = self.allocate()

        def boom() -> None:
            raise RuntimeError("controller bug")

        fired: list[str] = []
        first.on_timeout = boom
        second.on_timeout = lambda: fired.append("second")
        self.clock.advance(60)
        self.assertEqual(fired, ["second"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), self.LOOPS)

    def test_release_in_callback(self) -> None:
        """The controller may release the session from on_timeout; the loop then stops."""
        session = self.call()
        session.on_timeout = session.release
        self.clock.advance(60)
        self.assertEqual(self.relay.sessions(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_loop_only_while_sessions(self) -> None:
        """The timeout check runs while sessions exist and stops with the last one."""
        self.assertEqual(self.clock.getDelayedCalls(), [])
        first, second = self.allocate(), self.allocate()
        self.assertEqual(len(self.clock.getDelayedCalls()), self.LOOPS)
        first.release()
        self.assertEqual(len(self.clock.getDelayedCalls()), self.LOOPS)
        second.release()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PortTests(RelayTestMixin, SynchronousTestCase):
    """Binding: even ports on the media interface, skipping ports that will not bind."""

    def test_fake_socket_interfaces(self) -> None:
        """The fake sockets provide what reactor.listenUDP's ports provide."""
        session = self.allocate()
        port = self.network.ports[session.side_a.rtp_port]
        self.assertTrue(verifyObject(IListeningPort, port))
        self.assertTrue(verifyObject(IUDPTransport, port))

    def test_bad_configuration(self) -> None:
        """A media address that is no IP, or a range without an even/odd pair, is refused."""
        self.assertRaises(ValueError, self.make_relay, port_range=(10001, 10002))
        self.assertRaises(ValueError, self.make_relay, port_range=(0, 10))
        self.assertRaises(ValueError, MediaRelay, self.clock, self.network.listen_udp, "media")

    def test_pool_order(self) -> None:
        """
        Odd range starts round up; the chooser picks among the free pairs; a
        released pair cools down (reused after half the range was released
        after it, or when nothing else is free).
        """
        pool = PortPool(10001, 10010, choose=lowest)
        self.assertEqual((pool.size, pool.take(), pool.take()), (4, 10002, 10004))
        pool.give_back(10002)
        self.assertEqual((pool.free, pool.take(), pool.take()), (3, 10006, 10008))
        self.assertEqual(pool.take(), 10002)  # nothing else free
        self.assertRaises(MediaError, pool.take)
        self.assertRaises(ValueError, pool.give_back, 10010)
        for port in (10004, 10006, 10008):
            pool.give_back(port)
        # Cooling holds half the range (2 pairs): 10004 became free again.
        self.assertEqual(pool.take(), 10004)

    def test_pool_random(self) -> None:
        """
        By default the pool picks pairs with the system's cryptographic random
        source: consecutive allocations are not consecutive ports, and two pools
        do not give the same sequence, yet every port is an even one in range.
        """
        first, second = PortPool(10000, 19999), PortPool(10000, 19999)
        taken = [first.take() for _ in range(50)]
        self.assertNotEqual(taken, sorted(taken))
        self.assertNotEqual(taken, [second.take() for _ in range(50)])
        self.assertTrue(all(p % 2 == 0 and 10000 <= p <= 19998 for p in taken))
        self.assertEqual(len(set(taken)), 50)
        for port in taken:
            first.give_back(port)
        self.assertEqual((first.free, first.in_use), (first.size, 0))

    def test_bound_on_interface(self) -> None:
        """All four sockets are bound on the configured interface."""
        relay = self.make_relay(interface="10.0.0.5")
        session = self.allocate(relay)
        self.assertEqual(session.side_a.address, RELAY_IP)
        for port in (session.side_a.rtp_port, session.side_a.rtcp_port):
            self.assertEqual(self.network.ports[port].interface, "10.0.0.5")

    def test_refused_port_skipped_and_retried_later(self) -> None:
        """A port that will not bind is skipped now and taken again later."""
        relay = self.make_relay(port_range=(10000, 10007))
        self.network.refused = {10000}
        first = self.allocate(relay)
        self.assertEqual((first.side_a.rtp_port, first.side_b.rtp_port), (10002, 10004))
        self.network.refused = set()
        second = self.allocate(relay)
        self.assertEqual((second.side_a.rtp_port, second.side_b.rtp_port), (10006, 10000))

    def test_refused_rtcp_port_closes_rtp(self) -> None:
        """When only the RTCP port fails, the bound RTP port is closed and the pair skipped."""
        self.network.refused = {10001}
        session = self.allocate()
        self.assertEqual(session.side_a.rtp_port, 10002)
        self.assertNotIn(10000, self.network.ports)

    def test_nothing_binds(self) -> None:
        """When no pair binds, MediaError, and nothing stays bound or taken."""
        relay = self.make_relay(port_range=(10000, 10007))
        self.network.refused = {10000, 10002, 10004, 10006}
        failure = self.failureResultOf(relay.allocate("call-1"), MediaError)
        self.assertIn("could be bound", str(failure.value))
        self.assertEqual((self.network.ports, relay.pool.free), ({}, 4))

    def test_exhausted(self) -> None:
        """Out of pairs: MediaError naming the range, counted."""
        relay = self.make_relay(port_range=(10000, 10003))
        before = self.exported(metrics.ALLOCATION_FAILURES)
        session = self.allocate(relay)
        failure = self.failureResultOf(relay.allocate("call-2"), MediaError)
        self.assertIn("10000-10003 exhausted", str(failure.value))
        self.assertEqual(self.exported(metrics.ALLOCATION_FAILURES), before + 1)
        session.release()

    def test_unexpected_error_fails_deferred(self) -> None:
        """An unforeseen error while binding fails the Deferred and leaks nothing."""

        def broken(port: int) -> None:
            if port == 10003:
                raise RuntimeError("unforeseen")

        self.network.fail_bind = broken
        self.failureResultOf(self.relay.allocate("call-1"), RuntimeError)
        self.assertEqual(self.network.ports, {})
        self.assertEqual(self.relay.pool.in_use, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_release_closes_and_returns(self) -> None:
        """release closes the four sockets and returns both pairs, even if closing fails."""
        session = self.allocate()
        self.network.fail_close = True
        session.release()
        self.assertEqual(self.network.ports, {})
        self.assertEqual(self.relay.ports_in_use(), 0)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 4)

    def test_packets_after_release_ignored(self) -> None:
        """A datagram delivered to a released session's protocol does nothing."""
        session = self.call()
        protocol = self.network.ports[session.side_a.rtp_port].protocol
        session.release()
        protocol.datagramReceived(rtp(1), (CALLER, 4000))
        self.assertEqual(session.stats()["a"]["packets_in"], 0)

    def test_close_releases_all(self) -> None:
        """close() releases every session."""
        self.allocate()
        self.allocate()
        self.relay.close()
        self.assertEqual((self.relay.sessions(), self.network.ports), ([], {}))
