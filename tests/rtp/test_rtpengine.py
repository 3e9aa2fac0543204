"""
Tests for L{warden.rtp.rtpengine} against the fake rtpengine of
L{warden.testing.ngserver}: the IMediaRelay conformance suite, then what is
particular to driving rtpengine (requests, stats, timeouts, failures).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.rtp.conformance import CALLEE, CALLER, MediaRelayConformanceMixin
from warden.rtp import bencode
from warden.rtp.errors import MediaError
from warden.rtp.rtpengine import MAX_QUERIES, RtpengineRelay, RtpengineSession
from warden.sip.sdp import SdpError, parse_sdp
from warden.testing.ngserver import FakeNgServer
from warden.testing.rtpnet import sdp_body


class RtpengineConformanceTests(MediaRelayConformanceMixin, TestCase):
    """RtpengineRelay against a fake rtpengine, through the IMediaRelay suite."""

    def setUp(self) -> None:
        self.clock = Clock()

    def make_relay(self, port_range: tuple[int, int] = (10000, 10099)) -> RtpengineRelay:
        server = FakeNgServer(port_range=port_range)
        return RtpengineRelay(self.clock, server.listen_udp, server.address)


def crypto_sdp(proto: str = "RTP/AVP") -> bytes:
    """The caller's SDP with an a=crypto line and transport ``proto``."""
    key = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
    body = sdp_body(CALLER, 4000).replace(b"RTP/AVP", proto.encode())
    return body + f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {key}\r\n".encode()


class RtpengineTestMixin:
    """A relay on a Clock against a FakeNgServer, and helpers."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.server = FakeNgServer()
        self.relay = RtpengineRelay(self.clock, self.server.listen_udp, self.server.address)
        self.timeouts: list[str] = []

    def allocate(self, call_id: str = "call-1") -> RtpengineSession:
        session = self.successResultOf(self.relay.allocate(call_id))  # type: ignore[attr-defined]
        assert isinstance(session, RtpengineSession)
        session.on_timeout = lambda: self.timeouts.append(call_id)
        return session

    def answered(self, call_id: str = "call-1") -> RtpengineSession:
        session = self.allocate(call_id)
        session.offer_from("a", sdp_body(CALLER, 4000))
        session.answer_from("b", sdp_body(CALLEE, 5000))
        return session

    def commands(self) -> list[tuple[str, ...]]:
        """(command, from-tag, to-tag) of every request the server handled."""
        return [
            tuple(r.get(k, b"").decode() for k in ("command", "from-tag", "to-tag"))
            for r in self.server.requests
        ]


class RequestTests(RtpengineTestMixin, SynchronousTestCase):
    """What goes to rtpengine, and what Warden makes of the replies."""

    def test_allocation(self) -> None:
        """A placeholder offer and answer create both legs; the replies give the sides."""
        session = self.allocate()
        self.assertEqual(
            self.commands(),
            [("offer", "warden-a", ""), ("answer", "warden-a", "warden-b")],
        )
        first = self.server.requests[0]
        self.assertEqual(first["call-id"], b"call-1")
        self.assertEqual(first["flags"], [b"port latching"])
        self.assertEqual(first["replace"], [b"zero-address"])
        self.assertIn(b"c=IN IP4 0.0.0.0", first["sdp"])
        tags = self.server.calls["call-1"]
        self.assertEqual(session.side_a.rtp_port, tags["warden-a"].port)
        self.assertEqual(session.side_b.rtp_port, tags["warden-b"].port)
        self.assertEqual(session.side_a.address, "203.0.113.7")
        self.assertEqual(self.relay.ports_in_use(), 4)

    def test_phone_descriptions_forwarded_in_order(self) -> None:
        """Offers and answers go with the right tags; a re-INVITE from b reverses them."""
        session = self.answered()
        session.offer_from("b", sdp_body(CALLEE, 5002, version=2, direction="sendonly"))
        session.answer_from("a", sdp_body(CALLER, 4000, version=2, direction="recvonly"))
        self.assertEqual(
            self.commands()[2:],
            [
                ("offer", "warden-a", "warden-b"),
                ("answer", "warden-a", "warden-b"),
                ("offer", "warden-b", "warden-a"),
                ("answer", "warden-b", "warden-a"),
            ],
        )
        sent = parse_sdp(self.server.requests[4]["sdp"])
        self.assertEqual((sent.media[0].port, sent.connections[0].address), (5002, CALLEE))
        self.assertEqual(self.timeouts, [])

    def test_only_the_relayed_stream_goes_to_rtpengine(self) -> None:
        """A video stream before the audio is not sent; the audio is media 1 for rtpengine."""
        session = self.allocate()
        video = b"m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        body = sdp_body(CALLER, 4000).replace(b"m=audio", video + b"m=audio")
        out = parse_sdp(session.offer_from("a", body))
        self.assertEqual([m.port for m in out.media], [0, session.side_b.rtp_port])
        sent = parse_sdp(self.server.requests[-1]["sdp"])
        self.assertEqual([(m.media, m.port) for m in sent.media], [("audio", 4000)])

    def test_requests_wait_for_each_other(self) -> None:
        """An answer is sent only after the offer before it was answered."""
        session = self.allocate()
        self.server.hold = True
        session.offer_from("a", sdp_body(CALLER, 4000))
        session.answer_from("b", sdp_body(CALLEE, 5000))
        self.assertEqual(len(self.server.requests), 3)
        self.server.release_held()
        self.assertEqual(len(self.server.requests), 4)
        self.server.release_held()
        self.assertEqual(self.timeouts, [])

    def test_srtp_refused_and_keys_removed(self) -> None:
        """RTP/SAVP is refused (488); a=crypto of a plain offer reaches nobody."""
        session = self.allocate()
        self.assertRaises(SdpError, session.offer_from, "a", crypto_sdp("RTP/SAVP"))
        out = session.offer_from("a", crypto_sdp())
        self.assertNotIn(b"crypto", out)
        self.assertNotIn(b"crypto", self.server.requests[-1]["sdp"])

    def test_release_deletes_after_queued_requests(self) -> None:
        """release() sends delete without delay, after what was queued; once."""
        session = self.allocate()
        self.server.hold = True
        session.offer_from("a", sdp_body(CALLER, 4000))
        session.release()
        session.release()
        self.assertEqual(self.relay.sessions(), [])
        self.server.release_held()
        self.server.release_held()
        self.assertEqual([c[0] for c in self.commands()][-2:], ["offer", "delete"])
        self.assertEqual(self.server.requests[-1]["delete-delay"], 0)
        self.assertEqual(self.server.calls, {})
        self.assertEqual(self.timeouts, [])

    def test_close(self) -> None:
        """close() deletes every call and closes the control socket."""
        self.allocate("call-1")
        self.allocate("call-2")
        self.relay.close()
        self.assertEqual(self.server.calls, {})
        self.assertTrue(self.server.ports[0].closed)


class FailureTests(RtpengineTestMixin, SynchronousTestCase):
    """rtpengine down, refusing, forgetting calls or moving ports."""

    def test_allocate_while_down(self) -> None:
        """No reply to the offer: allocate fails with MediaError after the retransmissions."""
        self.server.down = True
        d = self.relay.allocate("call-1")
        self.clock.pump([0.5, 1.0, 2.0])
        self.failureResultOf(d, MediaError)
        self.assertEqual(self.relay.sessions(), [])

    def test_allocate_refused_deletes_half_made_call(self) -> None:
        """An error on the answer deletes what the offer created."""
        server = FakeNgServer(port_range=(10000, 10003))
        relay = RtpengineRelay(self.clock, server.listen_udp, server.address)
        self.successResultOf(relay.allocate("call-1"))
        failure = self.failureResultOf(relay.allocate("call-2"), MediaError)
        self.assertIn("Ran out of ports", str(failure.value))
        self.assertEqual(list(server.calls), ["call-1"])

    def test_out_of_ports_retried_after_deletes_in_flight(self) -> None:
        """
        An offer refused while a released call's delete is not yet answered
        (rtpengine took the later request first) is tried again once it is.
        """
        server = FakeNgServer(port_range=(10000, 10003))
        server.postpone = {b"delete"}
        relay = RtpengineRelay(self.clock, server.listen_udp, server.address)
        self.successResultOf(relay.allocate("call-1")).release()
        d = relay.allocate("call-2")
        self.assertNoResult(d)
        self.assertEqual(list(server.calls), ["call-1"])
        server.run_postponed()
        session = self.successResultOf(d)
        self.assertEqual(list(server.calls), ["call-2"])
        self.assertEqual(relay.sessions(), [session])

    def test_out_of_ports_without_deletes_in_flight_fails_at_once(self) -> None:
        """With no delete outstanding, "Ran out of ports" is final: one offer, no retry."""
        server = FakeNgServer(port_range=(10000, 10003))
        relay = RtpengineRelay(self.clock, server.listen_udp, server.address)
        self.successResultOf(relay.allocate("call-1"))
        self.failureResultOf(relay.allocate("call-2"), MediaError)
        offers = [r for r in server.requests if r["command"] == b"offer"]
        self.assertEqual(len(offers), 2)

    def test_unusable_allocation_reply(self) -> None:
        """A reply without usable SDP fails the allocation."""
        self.server.hold = True
        d = self.relay.allocate("call-1")
        port, reply = self.server.held.pop()
        cookie = reply.partition(b" ")[0]
        self.server.deliver(port, cookie + b" " + bencode.encode({"result": "ok", "sdp": b"v=0"}))
        self.failureResultOf(d, MediaError)

    def test_lost_update_ends_the_call(self) -> None:
        """An offer rtpengine never answers: the call's on_timeout fires, once."""
        session = self.allocate()
        self.server.down = True
        session.offer_from("a", sdp_body(CALLER, 4000))
        session.answer_from("b", sdp_body(CALLEE, 5000))
        self.clock.pump([0.5, 1.0, 2.0] * 2)
        self.assertEqual(self.timeouts, ["call-1"])

    def test_moved_port_ends_the_call(self) -> None:
        """A reply naming other ports than those given out ends the call."""
        session = self.allocate()
        self.server.calls["call-1"]["warden-b"].port += 100
        session.offer_from("a", sdp_body(CALLER, 4000))
        self.assertEqual(self.timeouts, ["call-1"])

    def test_forgotten_call_ends(self) -> None:
        """A query for a call rtpengine no longer knows ends the call."""
        self.answered()
        del self.server.calls["call-1"]
        self.clock.advance(1)
        self.assertEqual(self.timeouts, ["call-1"])

    def test_query_timeout_is_not_fatal(self) -> None:
        """Queries that go unanswered for a while only delay the stats."""
        self.answered()
        self.server.down = True
        self.clock.pump([1.0] * 10)
        self.assertEqual(self.timeouts, [])


class StatsTests(RtpengineTestMixin, SynchronousTestCase):
    """Counters from rtpengine's query replies, and the media timeout."""

    def test_counters(self) -> None:
        """Each side's packets in are what rtpengine got from its phone; out, the other's."""
        session = self.answered()
        self.server.set_media("call-1", "warden-a", 50, 8600, rtcp=2, lost=3, jitter=4)
        self.server.set_media("call-1", "warden-b", 48, 8256)
        self.clock.advance(1)
        stats = session.stats()
        a, b = stats["a"], stats["b"]
        self.assertEqual((a["packets_in"], a["bytes_in"], a["rtcp_in"]), (50, 8600, 2))
        self.assertEqual((a["lost_in"], a["jitter_ms_in"]), (3, 4.0))
        self.assertEqual((a["packets_out"], a["bytes_out"]), (48, 8256))
        self.assertEqual((b["packets_out"], b["lost_out"], b["rtcp_out"]), (50, 3, 2))
        self.assertEqual(a["last_packet_at_in"], 1.0)
        self.assertEqual(a["latched"], f"192.0.2.99:{session.side_a.rtp_port}")
        self.assertEqual(a["engine"], "rtpengine")

    def test_hostile_counters_ignored(self) -> None:
        """Negative, huge or mistyped counters in a reply leave the last good value."""
        session = self.answered()
        self.server.set_media("call-1", "warden-a", 10, 1000)
        self.clock.advance(1)
        tag = self.server.calls["call-1"]["warden-a"]
        for bad in (-5, 2**70, b"12"):
            tag.packets = bad  # type: ignore[assignment]
            self.clock.advance(1)
            self.assertEqual(session.stats()["a"]["packets_in"], 10)

    def test_media_timeout(self) -> None:
        """No packets for media_timeout: on_timeout once; growing counts keep the call."""
        session = self.answered()
        for second in range(1, 40):
            self.server.set_media("call-1", "warden-a", second, 100 * second)
            self.clock.advance(1)
        self.clock.pump([1.0] * 59)
        self.assertEqual(self.timeouts, [])
        self.clock.advance(1)
        self.assertEqual(self.timeouts, ["call-1"])
        self.clock.pump([1.0] * 100)
        self.assertEqual(self.timeouts, ["call-1"])
        self.assertEqual(session.idle_for(self.clock.seconds()), 160.0)

    def test_no_timeout_on_hold(self) -> None:
        """A held call may be silent."""
        session = self.answered()
        session.offer_from("b", sdp_body(CALLEE, 5000, version=2, direction="sendonly"))
        self.clock.pump([1.0] * 120)
        self.assertEqual(self.timeouts, [])

    def test_poll_only_while_sessions(self) -> None:
        """The query loop runs while sessions exist, one query per session at a time."""
        session = self.answered()
        self.server.hold = True
        self.clock.pump([1.0] * 3)
        queries = [c for c in self.commands() if c[0] == "query"]
        self.assertEqual(len(queries), 1)
        self.server.hold = False
        self.server.release_held()
        session.release()
        self.clock.pump([1.0] * 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def queries(self) -> list[str]:
        """The call-id of every query the server handled, in order."""
        return [r["call-id"].decode() for r in self.server.requests if r["command"] == b"query"]

    def test_queries_bounded(self) -> None:
        """
        Of many sessions' queries, at most MAX_QUERIES wait for a reply at once
        (their replies would overflow the control socket's buffer); the rest go
        out as replies come in, each session once per check.
        """
        self.server = FakeNgServer(port_range=(10000, 19999))
        self.relay = RtpengineRelay(self.clock, self.server.listen_udp, self.server.address)
        calls = [f"call-{i}" for i in range(3 * MAX_QUERIES + 5)]
        for call_id in calls:
            self.answered(call_id)
        self.server.hold = True
        self.clock.advance(1)
        self.assertEqual(len(self.queries()), MAX_QUERIES)
        self.assertEqual(self.relay.client.pending, MAX_QUERIES)
        while self.server.held:
            self.server.release_held()
            self.assertLessEqual(self.relay.client.pending, MAX_QUERIES)
        self.assertEqual(sorted(self.queries()), sorted(calls))
        self.assertEqual(self.relay.client.pending, 0)

    def test_released_while_waiting_not_queried(self) -> None:
        """A session released while its query waits for a slot is not queried."""
        sessions = [self.answered(f"call-{i}") for i in range(MAX_QUERIES + 1)]
        self.server.hold = True
        self.clock.advance(1)
        sessions[-1].release()
        self.server.hold = False
        self.server.release_held()
        self.assertNotIn(sessions[-1].call_id, self.queries())
        self.assertEqual(len(self.queries()), MAX_QUERIES)


class TapTests(RtpengineTestMixin, SynchronousTestCase):
    """The recorder hook of IMediaSession: rtpengine never feeds it, release closes it."""

    def test_tap_closed_on_release(self) -> None:
        """A tap set on the session is closed once, at release, having seen no packet."""
        session = self.answered()
        seen: list[tuple[str, float]] = []

        class Tap:
            def rtp(self, *args: object) -> None:
                seen.append(("rtp", 0.0))

            def close(self, now: float) -> None:
                seen.append(("close", now))

        session.tap = Tap()  # type: ignore[assignment]
        self.server.set_media("call-1", "warden-a", 10, 1000)
        self.clock.advance(5)
        session.release()
        session.release()
        self.assertEqual(seen, [("close", 5.0)])
        self.assertIsNone(session.on_dtmf)


class DeleteLogTests(RtpengineTestMixin, SynchronousTestCase):
    """A delete rtpengine never answers is logged; one cut short by shutdown is not."""

    def logged(self) -> list[dict[str, Any]]:
        from twisted.logger import Logger

        events: list[dict[str, Any]] = []
        self.relay.log = Logger(observer=events.append)
        return events

    def test_unanswered_delete_logged(self) -> None:
        """rtpengine silent at release: one warning after the retransmissions."""
        events = self.logged()
        session = self.answered()
        self.server.down = True
        session.release()
        self.clock.pump([0.5, 1.0, 2.0])
        self.assertEqual([e["log_format"] for e in events],
                         ["rtpengine did not delete call {call_id}: {error}"])  # fmt: skip

    def test_shutdown_quiet(self) -> None:
        """close() sends the deletes and closes the socket without a warning per call."""
        events = self.logged()
        self.answered("call-1")
        self.answered("call-2")
        self.server.down = True
        self.relay.close()
        deletes = [d for d, _ in self.server.sent if b"6:delete" in d]
        self.assertEqual(len(deletes), 2)
        self.assertEqual(events, [])
