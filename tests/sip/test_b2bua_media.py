"""
Tests that the B2BUA gives the media relay each phone's signalling source, so
the relay's source and destination rules (ADR 0013) hold in a real call: phones
behind NAT latch, strangers do not, and SDP aimed at loopback is not followed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.sip.test_b2bua import ALICE, BOB, CallTestCase, only
from warden.rtp.session import MediaSession
from warden.sip.message import Response
from warden.testing.callstack import Phone
from warden.testing.rtpnet import rtcp_rr, rtp, sdp_body

STRANGER = ("198.51.100.66", 40000)
CAROL = ("192.0.2.14", 5066)


class MediaSourceTests(CallTestCase):
    """Alice (1001) calls Bob (1002); both phones sit behind NAT."""

    def nat_call(self, alice_sdp: bytes, bob_sdp: bytes) -> MediaSession:
        """An answered call with the phones' own SDP; returns the relay session."""
        invite, sent = self.alice.call("1002", body=alice_sdp)
        bob_invite = only(sent, BOB, "INVITE")
        bob_ok = self.bob.answer(bob_invite, 200, body=bob_sdp)  # type: ignore[arg-type]
        alice_ok = only(self.stack.deliver(bob_ok, BOB), ALICE, 200)
        assert isinstance(alice_ok, Response)
        self.stack.deliver(self.alice.ack_for(invite, alice_ok), ALICE)
        self.bob_dialog = (bob_invite, bob_ok)
        (session,) = self.stack.media.sessions()
        assert isinstance(session, MediaSession)
        return session

    def send(self, port: int, source: tuple[str, int], first: int, count: int = 1) -> None:
        """``count`` consecutive RTP packets from ``source`` to relay ``port``."""
        for seq in range(first, first + count):
            self.stack.network.deliver(port, rtp(seq, 160 * seq, ssrc=source[1]), source)

    def sent(self, port: int) -> list[tuple[bytes, Any]]:
        """What the relay sent from ``port`` since last asked."""
        return self.stack.network.sent_from(port)

    def test_nat_phones_latch_strangers_do_not(self) -> None:
        """
        Both phones' SDP name private addresses (not followed: they signal from
        public ones). Each phone's media, from its signalling address on another
        port, latches its side after three packets; a stranger sending first and
        longer to both relay ports is never followed and receives nothing.
        """
        session = self.nat_call(sdp_body("192.168.1.10", 4000), sdp_body("10.0.0.20", 5000))
        a, b = session.side_a.rtp_port, session.side_b.rtp_port
        self.send(a, STRANGER, 1, 10)
        self.send(b, STRANGER, 1, 10)
        alice_media, bob_media = (ALICE[0], 7000), (BOB[0], 7002)
        self.send(a, alice_media, 1, 4)
        self.send(b, bob_media, 1, 4)
        self.send(a, alice_media, 5)
        to_bob, to_alice = self.sent(b), self.sent(a)
        self.assertEqual({dest for _, dest in to_bob}, {bob_media})
        self.assertEqual({dest for _, dest in to_alice}, {alice_media})
        # Alice's 3rd and 4th packets had no destination yet (Bob's SDP named a
        # private address and Bob had not latched): only her 5th reached him.
        self.assertEqual((len(to_bob), len(to_alice)), (1, 2))
        stats = session.stats()
        self.assertEqual(stats["a"]["latched"], f"{ALICE[0]}:7000")
        self.assertEqual(stats["b"]["latched"], f"{BOB[0]}:7002")
        self.assertEqual((stats["a"]["dropped_spoofed"], stats["b"]["dropped_spoofed"]), (10, 10))

    def test_sdp_aimed_at_loopback_is_refused(self) -> None:
        """
        A phone signalling from a public address whose SDP names 127.0.0.1 (or
        a=rtcp at a private address) gets no media sent there: the relay waits
        until the phone itself is heard.
        """
        session = self.nat_call(
            sdp_body("127.0.0.1", 22), sdp_body(BOB[0], 5000, rtcp="5001 IN IP4 10.1.2.3")
        )
        self.send(session.side_b.rtp_port, (BOB[0], 5000), 1)
        self.assertEqual(self.sent(session.side_a.rtp_port), [])
        self.assertEqual(session.stats()["a"]["dropped_no_destination"], 1)
        self.send(session.side_a.rtp_port, (ALICE[0], 7000), 1, 3)
        self.send(session.side_b.rtp_port, (BOB[0], 5000), 2)
        self.assertEqual(
            [dest for _, dest in self.sent(session.side_a.rtp_port)], [(ALICE[0], 7000)]
        )
        # Alice's RTCP (from her latched address) has nowhere to go: Bob's a=rtcp
        # named a private address.
        self.stack.network.deliver(session.side_a.rtcp_port, rtcp_rr(), (ALICE[0], 7001))
        self.assertEqual(self.sent(session.side_b.rtcp_port), [])
        self.assertEqual(session.stats()["b"]["dropped_no_destination"], 1)

    def test_blind_transfer_target_behind_nat(self) -> None:
        """
        Bob transfers Alice to Carol, whose SDP names a private address: once
        Carol answers, her media from her signalling address latches side b and
        Bob's (still sending) is a stranger's.
        """
        session = self.nat_call(sdp_body("192.168.1.10", 4000), sdp_body("10.0.0.20", 5000))
        b = session.side_b.rtp_port
        self.send(b, (BOB[0], 7002), 1, 3)
        carol = Phone(self.stack, "1003", CAROL)
        self.stack.register("1003", CAROL)
        bob_invite, bob_ok = self.bob_dialog
        refer = self.bob.in_dialog("REFER", bob_invite, bob_ok, uac=False)  # type: ignore[arg-type]
        refer.set("Refer-To", "<sip:1003@pbx.test>")
        carol_invite = only(self.stack.deliver(refer, BOB), CAROL, "INVITE")
        carol_ok = carol.answer(carol_invite, 200, body=sdp_body("10.9.9.9", 6000))  # type: ignore[arg-type]
        self.stack.deliver(carol_ok, CAROL)
        self.send(b, (BOB[0], 7002), 4)
        self.assertEqual(session.stats()["b"]["dropped_spoofed"], 1)
        self.send(b, (CAROL[0], 7004), 1, 3)
        self.assertEqual(session.stats()["b"]["latched"], f"{CAROL[0]}:7004")
        self.sent(b)
        self.send(session.side_a.rtp_port, (ALICE[0], 7000), 1, 3)
        self.assertEqual({dest for _, dest in self.sent(b)}, {(CAROL[0], 7004)})

    def test_attended_transfer_brings_the_transferee_s_address(self) -> None:
        """
        Alice (behind NAT) talks to Bob; Bob calls Carol and joins Alice into
        that call in his place (REFER with Replaces): Alice's media from her
        signalling address latches the side of the second call that faced Bob.
        """
        first = self.nat_call(sdp_body("192.168.1.10", 4000), sdp_body(BOB[0], 5000))
        carol = Phone(self.stack, "1003", CAROL)
        self.stack.register("1003", CAROL)
        bob_uac = Phone(self.stack, "1002", BOB)
        bob_uac.tag = "bobtag2"
        invite2, _, _, bob_ok2 = bob_uac.call_answered("1003", carol)
        (second,) = [s for s in self.stack.media.sessions() if s is not first]
        assert isinstance(second, MediaSession)
        replaces = quote(f"{invite2.call_id};to-tag={bob_ok2.to.tag};from-tag=bobtag2", safe="")
        bob_invite, bob_ok = self.bob_dialog
        refer = self.bob.in_dialog("REFER", bob_invite, bob_ok, uac=False)  # type: ignore[arg-type]
        refer.set("Refer-To", f"<sip:1003@pbx.test?Replaces={replaces}>")
        only(self.stack.deliver(refer, BOB), BOB, 202)
        self.send(second.side_a.rtp_port, (ALICE[0], 7000), 1, 3)
        self.assertEqual(second.stats()["a"]["latched"], f"{ALICE[0]}:7000")
        self.send(second.side_a.rtp_port, (BOB[0], 7002), 1)
        self.assertEqual(second.stats()["a"]["dropped_spoofed"], 1)
