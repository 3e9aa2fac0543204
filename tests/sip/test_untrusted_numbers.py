"""
Numbers in SIP messages are ASCII digits only (RFC 3261 §25.1 ``DIGIT``): a
message carrying a Unicode digit (``²``, ``٣``) where a number belongs is
answered 400 when a response can be routed, dropped otherwise, and in every case
leaves no transaction, timer or logged traceback behind.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from warden.sip import metrics
from warden.sip.message import Response
from warden.sip.timers import TimerSettings
from warden.testing.sipstack import FakeSipStack

PHONE = ("192.0.2.10", 5062)
TIMERS = TimerSettings()  # what FakeSipStack runs with


def options(
    uri: str = "sip:pbx.test",
    via_port: str = "5062",
    max_forwards: str = "70",
    cseq: str = "1",
    content_length: str = "0",
    to: str = "<sip:pbx.test>",
) -> bytes:
    """An OPTIONS request with the given fields spelled as given."""
    lines = [
        f"OPTIONS {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.10:{via_port};branch=z9hG4bKdigits1;rport",
        f"Max-Forwards: {max_forwards}",
        "From: <sip:1001@pbx.test>;tag=f1",
        f"To: {to}",
        "Call-ID: digits-1@192.0.2.10",
        f"CSeq: {cseq} OPTIONS",
        f"Content-Length: {content_length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class UnicodeDigitTests(SynchronousTestCase):
    """Each field that holds a number refuses non-ASCII digits cleanly."""

    def setUp(self) -> None:
        self.stack = FakeSipStack()

    def answer(self, data: bytes) -> list[int]:
        """Send ``data`` over UDP; the statuses answered. No state or error may remain."""
        answers = self.stack.send_udp(data, PHONE)
        self.stack.clock.advance(TIMERS.timer_h)
        self.assertEqual(len(self.stack.transactions), 0)
        self.assertEqual(self.stack.clock.getDelayedCalls(), [])
        self.assertEqual(self.flushLoggedErrors(), [])
        return [m.status for m in answers if isinstance(m, Response)]

    def test_plain_request_answered(self) -> None:
        """The baseline: the same OPTIONS with ASCII numbers gets 200."""
        self.assertEqual(self.answer(options()), [200])

    def test_max_forwards(self) -> None:
        """``Max-Forwards: ²`` (isdigit() is true, int() fails) gets 400."""
        self.assertEqual(self.answer(options(max_forwards="²")), [400])

    def test_max_forwards_arabic_indic(self) -> None:
        """``Max-Forwards`` in Arabic-Indic digits seven, zero (int() would read 70)
        gets 400, not 200."""
        self.assertEqual(self.answer(options(max_forwards="\u0667\u0660")), [400])

    def test_content_length(self) -> None:
        """``Content-Length: ²`` gets 400."""
        self.assertEqual(self.answer(options(content_length="²")), [400])

    def test_request_uri_port(self) -> None:
        """A Request-URI port ``:²`` gets 400."""
        self.assertEqual(self.answer(options(uri="sip:pbx.test:²")), [400])

    def test_to_uri_port(self) -> None:
        """A To URI port ``:²`` gets 400."""
        self.assertEqual(self.answer(options(to="<sip:pbx.test:²>")), [400])

    def test_cseq(self) -> None:
        """A CSeq number in Arabic-Indic digits gets 400."""
        self.assertEqual(self.answer(options(cseq="\u0661")), [400])

    def test_via_port(self) -> None:
        """A Via port ``²``: no response can be routed, so it is dropped and counted."""
        before = metrics.PARSE_ERRORS.labels("udp")._value.get()
        self.assertEqual(self.answer(options(via_port="²")), [])
        self.assertEqual(metrics.PARSE_ERRORS.labels("udp")._value.get(), before + 1)

    def test_over_tcp(self) -> None:
        """On TCP, ``Content-Length: ²`` gets 400 and the unframable stream is closed."""
        peer = self.stack.connect_tcp()
        answers = peer.send(options(content_length="²").replace(b"/UDP", b"/TCP"))
        self.assertEqual([m.status for m in answers if isinstance(m, Response)], [400])
        self.assertTrue(peer.closed)
        self.assertEqual(self.flushLoggedErrors(), [])


class CatchAllTests(SynchronousTestCase):
    """An unexpected error while handling a request is answered 500 and leaks nothing."""

    def test_error_answered_500(self) -> None:
        """
        A bug in request handling (here the local-domain check raising) is logged
        once, answered 500, and the transaction ends.
        """
        stack = FakeSipStack()

        def broken(host: str) -> bool:
            raise RuntimeError("a bug")

        stack.dispatcher._is_local = broken
        answers = stack.send_udp(options(), PHONE)
        self.assertEqual([m.status for m in answers if isinstance(m, Response)], [500])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        stack.clock.advance(TIMERS.timer_j(False))
        self.assertEqual(len(stack.transactions), 0)
        self.assertEqual(stack.clock.getDelayedCalls(), [])
