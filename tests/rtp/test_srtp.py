"""
Tests for SRTP in the built-in relay (L{warden.rtp.srtp}, ADR 0019): SDES offer
and answer per leg, decrypting and re-encrypting with pylibsrtp, tampered and
replayed packets dropped and counted, SRTCP and RFC 4733 events.
"""

from __future__ import annotations

from typing import Any

import pylibsrtp
from twisted.trial.unittest import SynchronousTestCase

from tests.rtp.conformance import CALLEE, CALLER
from tests.rtp.test_relay import RelayTestMixin, value
from warden.rtp import metrics, sdes
from warden.rtp.policy import MediaPolicy
from warden.rtp.session import MediaSession
from warden.rtp.srtp import MAX_STREAMS, SrtpDrop, SrtpLeg, SrtpRefused
from warden.sip.sdp import parse_sdp
from warden.testing.rtpnet import dtmf, rtcp_rr, rtp, sdp_body

SUITE = "AES_CM_128_HMAC_SHA1_80"
CALLER_KEY = bytes(range(1, 31))
CALLEE_KEY = bytes(range(101, 131))


def srtp_sdp(host: str, port: int, key: bytes, suite: str = SUITE, version: int = 1) -> bytes:
    """A phone's RTP/SAVP offer or answer with one a=crypto line (tag 1)."""
    text = sdp_body(host, port, version=version).decode().replace("RTP/AVP", "RTP/SAVP")
    return (text + f"a=crypto:{sdes.Crypto(1, suite, key).value()}\r\n").encode()


def crypto_of(body: bytes) -> tuple[str, list[sdes.Crypto]]:
    """The relayed stream's profile and a=crypto lines of an SDP Warden wrote."""
    media = parse_sdp(body).media[0]
    return media.proto, sdes.offered_cryptos(media)


def phone(key: bytes, suite: str = SUITE, outbound: bool = True) -> pylibsrtp.Session:
    """A phone's SRTP context: protecting with its own key, or unprotecting Warden's."""
    profiles = {
        "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    }
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key, kind, 0, profiles[suite]))


class SrtpCallMixin(RelayTestMixin):
    """A relay call where the caller (and maybe the callee) is on TLS."""

    def setUp(self) -> None:
        RelayTestMixin.setUp(self)
        self.caller_out = phone(CALLER_KEY)

    def secure_call(self, callee_tls: bool, callee_srtp: bool = True) -> tuple[MediaSession, Any]:
        """
        An SRTP caller on TLS calls; returns the session and the crypto lines Warden
        gave each phone ({"a": answer line, "b": offer line or None}).
        """
        session = self.allocate()
        session.signalling_encrypted("a", True)
        session.signalling_encrypted("b", callee_tls)
        offer = session.offer_from("a", srtp_sdp(CALLER, 4000, CALLER_KEY))
        proto, offered = crypto_of(offer)
        if callee_tls:
            self.assertEqual((proto, len(offered)), ("RTP/SAVP", 1))
        else:
            self.assertEqual((proto, offered), ("RTP/AVP", []))
        if offered and callee_srtp:
            answer_body = srtp_sdp(CALLEE, 5000, CALLEE_KEY)
        else:
            answer_body = sdp_body(CALLEE, 5000)
        answer = session.answer_from("b", answer_body)
        proto, answered = crypto_of(answer)
        self.assertEqual((proto, len(answered), answered[0].tag), ("RTP/SAVP", 1, 1))
        return session, {"a": answered[0], "b": offered[0] if offered else None}


class NegotiationTests(SrtpCallMixin, SynchronousTestCase):
    """SDES offer/answer per leg: fresh keys, TLS only, the [media] srtp rules."""

    def test_fresh_keys_per_leg(self) -> None:
        """Each phone gets its own key from Warden: not its own, not the other phone's."""
        session, lines = self.secure_call(callee_tls=True)
        keys = {lines["a"].key, lines["b"].key, CALLER_KEY, CALLEE_KEY}
        self.assertEqual(len(keys), 4)
        self.assertEqual(lines["a"].suite, SUITE)
        stats = session.stats()
        self.assertEqual(
            (stats["a"]["media_encrypted"], stats["b"]["media_encrypted"]), (True, True)
        )
        other = self.allocate()
        other.signalling_encrypted("a", True)
        _, again = crypto_of(other.offer_from("a", srtp_sdp(CALLER, 4002, CALLER_KEY)))
        self.assertEqual(again, [])  # callee not on TLS: nothing offered

    def test_answer_repeats_tag_and_suite(self) -> None:
        """The answer to the caller names the tag and suite it chose, the 80-bit one first."""
        session = self.allocate()
        session.signalling_encrypted("a", True)
        text = sdp_body(CALLER, 4000).decode().replace("RTP/AVP", "RTP/SAVP")
        text += f"a=crypto:{sdes.Crypto(4, 'AES_CM_128_HMAC_SHA1_32', CALLER_KEY).value()}\r\n"
        text += f"a=crypto:{sdes.Crypto(7, SUITE, CALLEE_KEY).value()}\r\n"
        session.offer_from("a", text.encode())
        _, answered = crypto_of(session.answer_from("b", sdp_body(CALLEE, 5000)))
        self.assertEqual((answered[0].tag, answered[0].suite), (7, SUITE))

    def test_srtp_to_plain(self) -> None:
        """
        An SRTP caller and a callee not on TLS: the callee is offered and keeps
        plain RTP; at release each leg is counted by its media.
        """
        before = {m: value(metrics.LEGS_BY_MEDIA[m]) for m in ("srtp", "rtp")}
        session, lines = self.secure_call(callee_tls=False)
        stats = session.stats()
        self.assertEqual(
            (stats["a"]["media_encrypted"], stats["b"]["media_encrypted"]), (True, False)
        )
        self.assertIsNone(lines["b"])
        session.release()
        after = {m: value(metrics.LEGS_BY_MEDIA[m]) - before[m] for m in ("srtp", "rtp")}
        self.assertEqual(after, {"srtp": 1, "rtp": 1})

    def test_savp_over_cleartext_refused(self) -> None:
        """RTP/SAVP offered over UDP or TCP is refused (488): its keys were sent in the clear."""
        session = self.allocate()
        error = self.assertRaises(
            SrtpRefused, session.offer_from, "a", srtp_sdp(CALLER, 4000, CALLER_KEY)
        )
        self.assertIn("TLS", error.reason)

    def test_savp_without_usable_crypto_refused(self) -> None:
        """An RTP/SAVP offer none of whose a=crypto lines Warden can use is refused."""
        session = self.allocate()
        session.signalling_encrypted("a", True)
        body = srtp_sdp(CALLER, 4000, CALLER_KEY).replace(SUITE.encode(), b"F8_128_HMAC_SHA1_80")
        self.assertRaises(SrtpRefused, session.offer_from, "a", body)

    def test_plain_stays_plain(self) -> None:
        """A plain caller's offer reaches a TLS callee as plain RTP (optional), no keys."""
        session = self.allocate()
        session.signalling_encrypted("a", True)
        session.signalling_encrypted("b", True)
        offer = session.offer_from("a", sdp_body(CALLER, 4000))
        self.assertEqual(crypto_of(offer), ("RTP/AVP", []))
        answer = session.answer_from("b", sdp_body(CALLEE, 5000))
        self.assertEqual(crypto_of(answer), ("RTP/AVP", []))
        self.assertEqual(session.stats()["a"]["media_encrypted"], False)

    def test_required_refuses_plain(self) -> None:
        """With srtp = "required" a plain offer, and a callee not on TLS, get 488."""
        self.relay = self.make_relay(policy=MediaPolicy(srtp="required"))
        session = self.allocate()
        session.signalling_encrypted("a", True)
        self.assertRaises(SrtpRefused, session.offer_from, "a", sdp_body(CALLER, 4000))
        self.assertRaises(SrtpRefused, session.offer_from, "a", srtp_sdp(CALLER, 4000, CALLER_KEY))
        session.signalling_encrypted("b", True)
        offer = session.offer_from("a", srtp_sdp(CALLER, 4000, CALLER_KEY))
        self.assertEqual(crypto_of(offer)[0], "RTP/SAVP")
        self.assertRaises(SrtpRefused, session.answer_from, "b", sdp_body(CALLEE, 5000))

    def test_answer_must_match_offer(self) -> None:
        """An SRTP answer with another tag than offered, or to a plain offer, is refused."""
        session = self.allocate()
        session.signalling_encrypted("a", True)
        session.signalling_encrypted("b", True)
        session.offer_from("a", srtp_sdp(CALLER, 4000, CALLER_KEY))
        wrong_tag = srtp_sdp(CALLEE, 5000, CALLEE_KEY).replace(b"a=crypto:1 ", b"a=crypto:2 ")
        self.assertRaises(SrtpRefused, session.answer_from, "b", wrong_tag)
        plain = self.allocate()
        plain.offer_from("a", sdp_body(CALLER, 4000))
        self.assertRaises(SrtpRefused, plain.answer_from, "b", srtp_sdp(CALLEE, 5000, CALLEE_KEY))

    def test_reinvite_keeps_keys_and_context(self) -> None:
        """A re-INVITE with the same keys gets the same answer key and keeps the replay state."""
        session, lines = self.secure_call(callee_tls=True)
        packet = self.caller_out.protect(rtp(1, 160))
        self.from_caller(session, packet)
        self.assertEqual(len(self.to_callee(session)), 1)
        session.offer_from("a", srtp_sdp(CALLER, 4000, CALLER_KEY, version=2))
        _, answered = crypto_of(session.answer_from("b", srtp_sdp(CALLEE, 5000, CALLEE_KEY)))
        self.assertEqual(answered[0], lines["a"])
        self.from_caller(session, packet)
        self.assertEqual(self.to_callee(session), [])
        self.assertEqual(session.stats()["a"]["dropped_replayed"], 1)

    def test_callee_reoffer_keeps_caller_on_srtp(self) -> None:
        """A re-INVITE from a plain callee still offers SRTP to the caller, with its key."""
        session, lines = self.secure_call(callee_tls=False)
        offer = session.offer_from("b", sdp_body(CALLEE, 5000, version=2))
        proto, offered = crypto_of(offer)
        self.assertEqual(proto, "RTP/SAVP")
        self.assertEqual(offered[0].key, lines["a"].key)


class SrtpRelayTests(SrtpCallMixin, SynchronousTestCase):
    """Packets decrypted and re-encrypted per leg; forged and replayed ones dropped."""

    def test_srtp_to_plain_both_ways(self) -> None:
        """The plain callee hears the caller's RTP; the caller gets SRTP under its answer key."""
        session, lines = self.secure_call(callee_tls=False)
        original = rtp(1, 160, payload=b"\x11" * 160)
        self.from_caller(session, self.caller_out.protect(original))
        self.assertEqual(self.to_callee(session), [(original, (CALLEE, 5000))])
        reply = rtp(7, 960, ssrc=0x55, payload=b"\x22" * 160)
        self.from_callee(session, reply)
        [(sent, destination)] = self.to_caller(session)
        self.assertEqual(destination, (CALLER, 4000))
        self.assertNotEqual(sent, reply)
        self.assertEqual(phone(lines["a"].key, outbound=False).unprotect(sent), reply)

    def test_srtp_both_legs(self) -> None:
        """Between two SRTP phones each gets the other's audio under its own leg's key."""
        session, lines = self.secure_call(callee_tls=True)
        original = rtp(1, 160, payload=b"\x33" * 160)
        self.from_caller(session, self.caller_out.protect(original))
        [(sent, _)] = self.to_callee(session)
        self.assertEqual(phone(lines["b"].key, outbound=False).unprotect(sent), original)
        reply = rtp(3, 480, ssrc=0x66)
        self.from_callee(session, phone(CALLEE_KEY).protect(reply))
        [(back, _)] = self.to_caller(session)
        self.assertEqual(phone(lines["a"].key, outbound=False).unprotect(back), reply)

    def test_tampered_dropped_and_counted(self) -> None:
        """A packet with a bad authentication tag is never relayed, and is counted."""
        session, _ = self.secure_call(callee_tls=False)
        before = value(metrics.DROPPED["auth_failed"])
        good = self.caller_out.protect(rtp(1, 160))
        forged = good[:20] + bytes([good[20] ^ 1]) + good[21:]
        self.from_caller(session, forged)
        self.from_caller(session, rtp(2, 320))  # plain RTP on an SRTP leg
        self.assertEqual(self.to_callee(session), [])
        self.assertEqual(session.stats()["a"]["dropped_auth_failed"], 2)
        self.assertEqual(self.exported(metrics.DROPPED["auth_failed"]) - before, 2)
        self.from_caller(session, good)  # the genuine packet still gets through
        self.assertEqual(len(self.to_callee(session)), 1)

    def test_replay_dropped(self) -> None:
        """The same SRTP packet twice is relayed once; the copy is counted as replayed."""
        session, _ = self.secure_call(callee_tls=False)
        before = value(metrics.DROPPED["replayed"])
        packet = self.caller_out.protect(rtp(1, 160))
        self.from_caller(session, packet)
        self.from_caller(session, packet)
        self.assertEqual(len(self.to_callee(session)), 1)
        self.assertEqual(session.stats()["a"]["dropped_replayed"], 1)
        self.assertEqual(self.exported(metrics.DROPPED["replayed"]) - before, 1)

    def test_spoofed_before_crypto(self) -> None:
        """A stranger's packets on an SRTP leg are dropped as spoofed, not decrypted."""
        session, _ = self.secure_call(callee_tls=False)
        self.from_caller(session, self.caller_out.protect(rtp(1, 160)), ("203.0.113.66", 4000))
        self.assertEqual(self.to_callee(session), [])
        stats = session.stats()["a"]
        self.assertEqual((stats["dropped_spoofed"], stats["dropped_auth_failed"]), (1, 0))

    def test_srtcp_both_ways(self) -> None:
        """SRTCP from the caller reaches the plain callee as RTCP, and back as SRTCP."""
        session, lines = self.secure_call(callee_tls=False)
        report = rtcp_rr(0x11223344)
        self.network.deliver(
            session.side_a.rtcp_port, self.caller_out.protect_rtcp(report), (CALLER, 4001)
        )
        self.assertEqual(
            self.network.sent_from(session.side_b.rtcp_port), [(report, (CALLEE, 5001))]
        )
        theirs = rtcp_rr(0x55)
        self.network.deliver(session.side_b.rtcp_port, theirs, (CALLEE, 5001))
        [(sent, _)] = self.network.sent_from(session.side_a.rtcp_port)
        self.assertEqual(phone(lines["a"].key, outbound=False).unprotect_rtcp(sent), theirs)
        forged = bytearray(self.caller_out.protect_rtcp(rtcp_rr(0x11223344)))
        forged[9] ^= 0x40
        self.network.deliver(session.side_a.rtcp_port, bytes(forged), (CALLER, 4001))
        self.assertEqual(self.network.sent_from(session.side_b.rtcp_port), [])
        self.assertEqual(session.stats()["a"]["dropped_auth_failed"], 1)

    def test_telephone_events(self) -> None:
        """RFC 4733 events inside SRTP are counted and reach the plain callee intact."""
        session, _ = self.secure_call(callee_tls=False)
        events = [dtmf(1, 800, end=False), dtmf(2, 800, end=True)]
        for event in events:
            self.from_caller(session, self.caller_out.protect(event))
        self.assertEqual([p for p, _ in self.to_callee(session)], events)
        self.assertEqual(session.stats()["a"]["dtmf_events"], 1)


class SrtpLegTests(SynchronousTestCase):
    """One leg's contexts on their own."""

    def setUp(self) -> None:
        self.ours = sdes.Crypto(1, SUITE, CALLEE_KEY)
        self.leg = SrtpLeg(sdes.Crypto(1, SUITE, CALLER_KEY), self.ours)

    def test_round_trip_32(self) -> None:
        """The 32-bit tag suite protects and unprotects too, with its shorter tag."""
        leg = SrtpLeg(
            sdes.Crypto(1, "AES_CM_128_HMAC_SHA1_32", CALLER_KEY),
            sdes.Crypto(1, "AES_CM_128_HMAC_SHA1_32", CALLEE_KEY),
        )
        packet = rtp(1, 160)
        protected = phone(CALLER_KEY, "AES_CM_128_HMAC_SHA1_32").protect(packet)
        self.assertEqual(len(protected), len(packet) + 4)
        self.assertEqual(leg.unprotect(protected, rtcp=False), packet)
        out = leg.protect(packet, rtcp=False)
        reader = phone(CALLEE_KEY, "AES_CM_128_HMAC_SHA1_32", outbound=False)
        self.assertEqual(reader.unprotect(out), packet)

    def test_duplicate_not_protected_twice(self) -> None:
        """The same RTP packet index is not encrypted twice (no keystream reuse)."""
        self.leg.protect(rtp(1, 160), rtcp=False)
        error = self.assertRaises(SrtpDrop, self.leg.protect, rtp(1, 160), False)
        self.assertEqual(error.reason, "replayed")

    def test_stream_limit(self) -> None:
        """A far phone cycling SSRCs cannot make the outbound context grow without bound."""
        for ssrc in range(MAX_STREAMS):
            self.leg.protect(rtp(1, 160, ssrc=ssrc), rtcp=False)
        error = self.assertRaises(SrtpDrop, self.leg.protect, rtp(1, 160, ssrc=MAX_STREAMS), False)
        self.assertEqual(error.reason, "protect_failed")
        self.leg.protect(rtp(2, 320, ssrc=0), rtcp=False)  # known streams go on

    def test_garbage(self) -> None:
        """Too short or too long input is dropped, never raised past the leg."""
        for data in (b"\x80", b"\x80" * 2000):
            error = self.assertRaises(SrtpDrop, self.leg.unprotect, data, False)
            self.assertIn(error.reason, ("malformed", "auth_failed"))
