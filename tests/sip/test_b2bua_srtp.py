"""
Tests that the B2BUA applies the SRTP rules (ADR 0019) to real INVITEs: keys
never accepted over cleartext signalling, plain RTP refused when SRTP is
required, and a phone's transport telling the relay whether keys may go to it.
"""

from __future__ import annotations

from tests.rtp.test_srtp import CALLER_KEY, srtp_sdp
from tests.sip.test_b2bua import ALICE, BOB, CallTestCase, only
from warden.model import Binding
from warden.rtp.policy import MediaPolicy
from warden.sip.addressing import binding_over_tls
from warden.testing.rtpnet import sdp_body


class SrtpCallTests(CallTestCase):
    """Alice (1001) calls Bob (1002) over UDP."""

    def test_savp_over_udp_refused(self) -> None:
        """An RTP/SAVP offer with a=crypto over UDP gets 488; Bob is not called."""
        _, sent = self.alice.call("1002", body=srtp_sdp(ALICE[0], 4000, CALLER_KEY))
        only(sent, ALICE, 488)
        self.assertFalse([m for m, a in sent if tuple(a) == BOB])
        self.assertEqual(self.stack.media.sessions(), [])

    def test_plain_passes_by_default(self) -> None:
        """With the default srtp = "optional" a plain offer reaches Bob as plain RTP."""
        _, sent = self.alice.call("1002", body=sdp_body(ALICE[0], 4000))
        invite = only(sent, BOB, "INVITE")
        self.assertIn(b"RTP/AVP", invite.body)
        self.assertNotIn(b"crypto", invite.body)

    def test_required_refuses_plain(self) -> None:
        """With srtp = "required" a plain offer gets 488 and allocates nothing."""
        self.stack.media.policy = MediaPolicy(srtp="required")
        _, sent = self.alice.call("1002", body=sdp_body(ALICE[0], 4000))
        only(sent, ALICE, 488)
        self.assertEqual(self.stack.media.sessions(), [])


class TransportTests(CallTestCase):
    """Which bindings SDES keys may be sent to."""

    def test_binding_over_tls(self) -> None:
        """Only a binding whose REGISTER came over TLS counts as encrypted signalling."""

        def binding(received: str) -> Binding:
            return Binding("1002", "sip:1002@h", "1002@h", 0.0, received=received)

        self.assertTrue(binding_over_tls(binding("tls:192.0.2.5:5061")))
        self.assertFalse(binding_over_tls(binding("udp:192.0.2.5:5060")))
        self.assertFalse(binding_over_tls(binding("tcp:192.0.2.5:5060")))
        self.assertFalse(binding_over_tls(binding("")))
