"""
Inputs the fuzz harnesses in ``fuzz/`` found crashing Warden, kept as regression
tests: each must now get its documented answer (a response, a 400, or a drop)
without an exception escaping or a traceback being logged.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from warden.sip.message import Request, Response, make_response
from warden.sip.parser import parse_datagram
from warden.sip.timers import TimerSettings
from warden.sip.transport import stamp_via
from warden.testing.sipstack import FakeSipStack

PHONE = ("192.0.2.10", 5062)
# A From display name in Latin-1, not UTF-8: the parser keeps such octets as
# surrogate escapes, and they must go back out exactly as they came.
LATIN1_FROM = b'From: "J\xf6rg" <sip:1001@pbx.test>;tag=f1'


def options(max_forwards: bytes = b"70", via_host: bytes = b"192.0.2.10") -> bytes:
    """An OPTIONS request whose From holds non-UTF-8 octets."""
    lines = [
        b"OPTIONS sip:pbx.test SIP/2.0",
        b"Via: SIP/2.0/UDP " + via_host + b":5062;branch=z9hG4bKfuzz1",
        b"Max-Forwards: " + max_forwards,
        LATIN1_FROM,
        b"To: <sip:pbx.test>",
        b"Call-ID: fuzz-1@192.0.2.10",
        b"CSeq: 1 OPTIONS",
        b"Content-Length: 0",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class NonUtf8HeaderTests(SynchronousTestCase):
    """Header octets that are not UTF-8 are echoed byte for byte (fuzz: sip_message)."""

    def test_response_echoes_octets(self) -> None:
        """A response to such a request is sent, its From identical to the request's."""
        stack = FakeSipStack()
        answers = stack.send_udp(options(), PHONE)
        self.assertEqual([m.status for m in answers if isinstance(m, Response)], [200])
        self.assertIn(LATIN1_FROM, stack.sent_udp()[0][0])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_stateless_400_echoes_octets(self) -> None:
        """The stateless 400 for a malformed request with such a From is sent too."""
        stack = FakeSipStack()
        answers = stack.send_udp(options(max_forwards=b"seventy"), PHONE)
        self.assertEqual([m.status for m in answers if isinstance(m, Response)], [400])
        self.assertIn(LATIN1_FROM, stack.sent_udp()[0][0])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_changed_request_serialises(self) -> None:
        """A request changed after parsing (the received stamp) serialises its octets back."""
        request = parse_datagram(options(via_host=b"host.example"))
        assert isinstance(request, Request)
        stamp_via(request, "udp", "192.0.2.10", 5062)
        self.assertIsNone(request.raw)
        self.assertIn(LATIN1_FROM, request.to_bytes())
        self.assertIn(LATIN1_FROM, make_response(request, 400).to_bytes())


class LateHeaderErrorTests(SynchronousTestCase):
    """A header parsed only after the first checks may still be malformed (fuzz: sip_stack)."""

    def test_unbalanced_quote_in_require(self) -> None:
        """``Require`` with an unbalanced quote gets 400, no traceback, no transaction left."""
        data = options().replace(
            b"Content-Length: 0", b'Require: nothin"SupportsThis, other\r\nContent-Length: 0'
        )
        stack = FakeSipStack()
        answers = stack.send_udp(data, PHONE)
        self.assertEqual([m.status for m in answers if isinstance(m, Response)], [400])
        self.assertEqual(self.flushLoggedErrors(), [])
        stack.clock.advance(TimerSettings().timer_j(False))
        self.assertEqual(len(stack.transactions), 0)
