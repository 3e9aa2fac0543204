"""
The load generator's REGISTER path: responses read from bytes (good ones,
compact and folded forms, and hostile ones, which are counted as errors and
never raise), and the transactions through an agent on a Clock: retransmission
(Timer E doubling, T2 once provisional), 423, unusable challenges.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.ops.loadtest.test_agent_unit import AgentTestCase
from warden.ops.loadtest.registration import MAX_HEADER_LINES, Registrations, parse_reply
from warden.ops.loadtest.results import RegistrationResult
from warden.sip.auth import challenge
from warden.sip.message import make_response
from warden.sip.timers import TimerSettings

CHALLENGE = (
    b"SIP/2.0 401 Unauthorized\r\n"
    b"v: SIP/2.0/UDP 192.0.2.9:40000;rport=40000;BRANCH=z9hG4bKabc;received=192.0.2.9\r\n"
    b"From: <sip:1001@pbx>;tag=t1\r\n"
    b"To: <sip:1001@pbx>;tag=pbx\r\n"
    b"i: c1@192.0.2.9\r\n"
    b"cSeq:  7  REGISTER\r\n"
    b'WWW-Authenticate: Digest realm="pbx", nonce="n1", algorithm=SHA-256,\r\n'
    b' qop="auth"\r\n'
    b'www-authenticate: Digest realm="pbx", nonce="n2", algorithm=MD5, qop="auth"\r\n'
    b"Content-Length: 0\r\n\r\n"
)
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.9:40000;branch=z9hG4bKok, SIP/2.0/UDP 10.0.0.1;branch=other\r\n"
    b"Call-ID: c1@192.0.2.9\r\n"
    b"CSeq: 8 REGISTER\r\n"
    b"m: <sip:1001@10.9.9.9:5060>;expires=3000, <sip:1001@192.0.2.9:40000>;q=1;EXPIRES=120\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n\r\n"
)


class ParseReplyTests(SynchronousTestCase):
    """L{parse_reply} on good and hostile bytes."""

    def test_challenge(self) -> None:
        """Compact and mixed-case names, a folded line, every challenge in order."""
        reply = parse_reply(CHALLENGE)
        assert reply is not None
        self.assertIsNone(reply.problem)
        self.assertEqual(
            (reply.status, reply.branch, reply.call_id, reply.cseq, reply.method),
            (401, "z9hG4bKabc", "c1@192.0.2.9", 7, "REGISTER"),
        )
        self.assertEqual(len(reply.challenges), 2)
        self.assertIn("SHA-256, qop=", reply.challenges[0])
        self.assertIn('nonce="n2"', reply.challenges[1])

    def test_granted_expiry(self) -> None:
        """Our Contact's expires, else the Expires header; the top Via's branch only."""
        reply = parse_reply(OK)
        assert reply is not None
        self.assertIsNone(reply.problem)
        self.assertEqual((reply.status, reply.branch), (200, "z9hG4bKok"))
        self.assertEqual(reply.granted("sip:1001@192.0.2.9:40000"), 120)
        self.assertEqual(reply.granted("sip:1001@192.0.2.9:40001"), 3600)

    def test_not_a_response(self) -> None:
        """Requests, keep-alives and other protocols are not read (None)."""
        for data in (b"", b"\r\n\r\n", b"INVITE sip:a@b SIP/2.0\r\n\r\n", b"SIP/2.1 200 OK\r\n"):
            self.assertIsNone(parse_reply(data), data)

    def test_malformed(self) -> None:
        """Each hostile response is read with a problem named, never an exception."""
        good = OK.split(b"\r\n")
        cases = {
            "short status": OK.replace(b"200 OK", b"20 OK"),
            "status not digits": OK.replace(b"200 OK", b"2x0 OK"),
            "status four digits": OK.replace(b"200 OK", b"2000 OK"),
            "status out of range": OK.replace(b"200 OK", b"999 OK"),
            "status Arabic-Indic digits": OK.replace(b"200", "٢٠٠".encode()),
            "no CSeq": OK.replace(b"CSeq: 8 REGISTER\r\n", b""),
            "CSeq not digits": OK.replace(b"CSeq: 8", "CSeq: \uff18".encode()),
            "CSeq too long": OK.replace(b"CSeq: 8", b"CSeq: 12345678901"),
            "no branch": OK.replace(b";branch=z9hG4bKok", b""),
            "branch not ASCII": OK.replace(b"z9hG4bKok", "z9hG4bKé".encode()),
            "no Call-ID": OK.replace(b"Call-ID: c1@192.0.2.9\r\n", b""),
            "no end of header": OK[:-4],
            "line without colon": OK.replace(b"Expires: 3600", b"Expires 3600"),
            "too many lines": b"\r\n".join(good[:2] + [b"X: y"] * MAX_HEADER_LINES + good[2:]),
        }
        for name, data in cases.items():
            reply = parse_reply(data)
            assert reply is not None, name
            self.assertIsNotNone(reply.problem, name)

    def test_odd_expiry_is_ignored(self) -> None:
        """Expires and Min-Expires that are not ASCII digits (or too big) read as absent."""
        for value in ("\uff11\uff12".encode(), b"-1", b"99999999999", b"12 34"):
            reply = parse_reply(OK.replace(b"Expires: 3600", b"Expires: " + value))
            assert reply is not None
            self.assertIsNone(reply.problem)
            self.assertIsNone(reply.expires, value)

    def test_mangled_bytes_never_raise(self) -> None:
        """Every truncation and many random corruptions of good responses are read safely."""
        rng = random.Random(18)
        for good in (OK, CHALLENGE):
            for end in range(len(good)):
                parse_reply(good[:end])
            for _ in range(2000):
                data = bytearray(good)
                for _ in range(rng.randint(1, 8)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                parse_reply(bytes(data))


class RegistrationTransactionTests(AgentTestCase):
    """REGISTER transactions of an agent, the PBX played by the test."""

    def assert_clean(self) -> None:
        """Nothing pending, no timer left."""
        self.assertEqual(self.agent.registrations.pending, {})
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_malformed_response_is_an_error(self) -> None:
        """A garbled response to a pending REGISTER fails it as bad-response, counted."""
        d = self.agent.register(self.account)
        (request,) = self.sent()
        data = make_response(request, 200, None, to_tag="pbx").to_bytes()
        self.deliver(data.replace(b"SIP/2.0 200", b"SIP/2.0 2x0"))
        result: RegistrationResult = self.successResultOf(d)
        self.assertEqual((result.ok, result.cause, result.statuses), (False, "bad-response", ()))
        self.assertEqual(self.agent.registrations.malformed, 1)
        self.assert_clean()

    def test_other_call_id_is_an_error(self) -> None:
        """A response with our branch but another Call-ID is not a valid answer."""
        d = self.agent.register(self.account)
        (request,) = self.sent()
        data = make_response(request, 200, None, to_tag="pbx").to_bytes()
        self.deliver(data.replace(request.call_id.encode(), b"forged@elsewhere"))
        self.assertEqual(self.successResultOf(d).cause, "bad-response")

    def test_unknown_branch_goes_to_the_stack(self) -> None:
        """A response no REGISTER waits for is left to the general stack; ours still waits."""
        d = self.agent.register(self.account)
        (request,) = self.sent()
        data = make_response(request, 200, None, to_tag="pbx").to_bytes()
        self.deliver(data.replace(b"branch=z9hG4bK", b"branch=z9hG4bKX"))
        self.deliver(b"SIP/2.0 200 OK\r\n\r\n")
        self.assertNoResult(d)
        self.answer(request, 200)
        self.assertTrue(self.successResultOf(d).ok)

    def test_retransmissions(self) -> None:
        """
        Timer E: the same bytes after 0.5, 1, 2, 4 s (each at most a wheel slot
        late, plus a clock step here); every T2 (4 s) once a 100 came.
        """
        d = self.agent.register(self.account)
        (first,) = self.sent()
        original = first.to_bytes()
        times = []
        for _ in range(1000):  # 10 s in 10 ms steps
            self.reactor.advance(0.01)
            for data, _ in self.reactor.transport.written:
                self.assertEqual(data, original)
                times.append(round(self.reactor.seconds(), 2))
            self.reactor.transport.written.clear()
        intervals = [b - a for a, b in zip([0.0, *times], times, strict=False)]
        self.assertEqual(len(intervals), 4, times)
        for interval, nominal in zip(intervals, [0.5, 1.0, 2.0, 4.0], strict=True):
            self.assertTrue(nominal <= interval + 1e-9 <= nominal + 0.021, times)
        self.answer(first, 100)
        for _ in range(800):
            self.reactor.advance(0.01)
        self.assertEqual(len(self.sent()), 2)  # at 11.5 and 15.5: every T2
        self.answer(first, 200)
        self.assertTrue(self.successResultOf(d).ok)
        self.assert_clean()

    def test_interval_too_brief(self) -> None:
        """423 with Min-Expires: asked again once with that expiry, challenged, registered."""
        d = self.agent.register(self.account, expires=60)
        (first,) = self.sent()
        self.answer(first, 423, [("Min-Expires", "600")])
        (second,) = self.sent()
        self.assertEqual(second.get("Expires"), "600")
        self.assertEqual(second.cseq.number, first.cseq.number + 1)
        self.answer(second, 401, [("WWW-Authenticate", challenge("pbx", "n1", "MD5"))])
        (third,) = self.sent()
        self.assertIsNotNone(third.get("Authorization"))
        self.answer(third, 200, [("Expires", "600")])
        result = self.successResultOf(d)
        self.assertEqual(
            (result.ok, result.statuses, result.expires), (True, (423, 401, 200), 600)
        )

    def test_unusable_challenge(self) -> None:
        """A challenge without a nonce fails as bad-challenge; none at all as the status."""
        d = self.agent.register(self.account)
        (first,) = self.sent()
        self.answer(first, 401, [("WWW-Authenticate", 'Digest realm="pbx", algorithm=MD5')])
        result = self.successResultOf(d)
        self.assertEqual(
            (result.ok, result.cause, result.statuses), (False, "bad-challenge", (401,))
        )
        d = self.agent.register(self.account)
        (first,) = self.sent()
        self.answer(first, 407)
        self.assertEqual(self.successResultOf(d).cause, "407")
        self.assert_clean()

    def test_proxy_challenge(self) -> None:
        """407 is answered with Proxy-Authorization."""
        d = self.agent.register(self.account)
        (first,) = self.sent()
        self.answer(first, 407, [("Proxy-Authenticate", challenge("pbx", "n1", "MD5"))])
        (second,) = self.sent()
        self.assertIsNotNone(second.get("Proxy-Authorization"))
        self.answer(second, 200)
        self.assertTrue(self.successResultOf(d).ok)


class ReliableTransportTests(SynchronousTestCase):
    """Over a stream transport a REGISTER is sent once and times out at Timer F."""

    def test_no_retransmission_then_timeout(self) -> None:
        """One send; "timeout" at 64 T1 (32 s), not before; nothing left pending."""
        clock = Clock()
        sent: list[bytes] = []
        outcomes: list[tuple[object, str]] = []
        registrations = Registrations(clock, TimerSettings(), sent.append, reliable=True)
        registrations.start(b"REGISTER", "z9hG4bKx", "c1", 1, lambda r, c: outcomes.append((r, c)))
        for _ in range(319):
            clock.advance(0.1)
        self.assertEqual((sent, outcomes), ([b"REGISTER"], []))
        clock.advance(0.2)
        self.assertEqual(outcomes, [(None, "timeout")])
        self.assertEqual((registrations.pending, clock.getDelayedCalls()), ({}, []))

    def test_send_failure(self) -> None:
        """A request that cannot be sent fails at once as "transport", nothing pending."""

        def broken(data: bytes) -> None:
            raise OSError("no route")

        clock = Clock()
        outcomes: list[tuple[object, str]] = []
        registrations = Registrations(clock, TimerSettings(), broken, reliable=False)
        registrations.start(b"REGISTER", "z9hG4bKx", "c1", 1, lambda r, c: outcomes.append((r, c)))
        self.assertEqual(outcomes, [(None, "transport")])
        self.assertEqual((registrations.pending, clock.getDelayedCalls()), ({}, []))
