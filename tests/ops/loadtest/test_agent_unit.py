"""
SipAgent on a Clock with a fake UDP transport: the REGISTER exchange message by
message (401 answered with digest credentials, then 200), timing, time-outs, and
stopping with requests in flight.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import SynchronousTestCase

from warden.ops.loadtest.agent import SipAgent
from warden.ops.loadtest.results import Account, RegistrationResult
from warden.sip.auth import challenge, expected_response, parse_credentials
from warden.sip.message import Request, make_response
from warden.sip.parser import parse_datagram

PBX = ("192.0.2.1", 5060)


class _Port:
    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.socket = None

    def getHost(self) -> Any:
        return self

    port = 40000

    def stopListening(self) -> None:
        pass


class FakeReactor(Clock):
    """A Clock that can bind one fake UDP port."""

    def __init__(self) -> None:
        super().__init__()
        self.transport = FakeDatagramTransport()

    def listenUDP(self, port: int, protocol: Any, interface: str = "", size: int = 0) -> _Port:
        protocol.makeConnection(self.transport)
        return _Port(protocol)


class AgentTestCase(SynchronousTestCase):
    """An agent on a L{FakeReactor}, the PBX played by the test."""

    def setUp(self) -> None:
        """A started agent without media."""
        self.reactor = FakeReactor()
        self.agent = SipAgent(self.reactor, *PBX, local_ip="192.0.2.9", media=False)
        self.successResultOf(self.agent.start())
        self.account = Account("1001", "secret-1001")

    def sent(self) -> list[Request]:
        """Requests the agent sent so far (and forget them)."""
        written = [parse_datagram(data) for data, _ in self.reactor.transport.written]
        self.reactor.transport.written.clear()
        return [m for m in written if isinstance(m, Request)]

    def deliver(self, data: bytes) -> None:
        """A datagram from the PBX."""
        self.agent.hub.udp[0].datagramReceived(data, PBX)

    def answer(
        self, request: Request, status: int, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """The PBX answers ``request``."""
        response = make_response(request, status, None, to_tag="pbx", headers=headers or [])
        self.deliver(response.to_bytes())


class AgentUnitTests(AgentTestCase):
    """Register through a PBX played by the test."""

    def test_register_with_challenge(self) -> None:
        """401 answered with a correct digest in a second REGISTER (CSeq + 1), then 200."""
        d = self.agent.register(self.account, expires=120)
        (first,) = self.sent()
        self.assertEqual(first.method, "REGISTER")
        self.assertEqual(first.uri_text, "sip:192.0.2.1")
        self.assertEqual(first.get("Contact"), "<sip:1001@192.0.2.9:40000>")
        self.assertEqual(first.get("Expires"), "120")
        self.reactor.advance(0.010)
        self.answer(first, 401, [("WWW-Authenticate", challenge("pbx", "n1", "MD5"))])
        (second,) = self.sent()
        self.assertEqual(second.call_id, first.call_id)
        self.assertEqual(second.cseq.number, first.cseq.number + 1)
        creds = parse_credentials(second.get("Authorization") or "")
        assert creds is not None
        from warden.sip.auth import digest_hex

        ha1 = digest_hex("MD5", "1001:pbx:secret-1001")
        self.assertEqual(creds.response, expected_response(creds, ha1, "REGISTER"))
        self.reactor.advance(0.020)
        self.answer(second, 200, [("Contact", "<sip:1001@192.0.2.9:40000>;expires=120")])
        result: RegistrationResult = self.successResultOf(d)
        self.assertTrue(result.ok)
        self.assertEqual(result.statuses, (401, 200))
        self.assertAlmostEqual(result.duration, 0.030)
        self.assertAlmostEqual(result.auth_duration, 0.020)  # type: ignore[arg-type]
        self.assertEqual(result.expires, 120)
        self.assertIn("1001", self.agent.answerer.users)

    def test_refused(self) -> None:
        """403 after the credentials: not ok, cause "403"."""
        d = self.agent.register(self.account)
        (first,) = self.sent()
        self.answer(first, 401, [("WWW-Authenticate", challenge("pbx", "n1", "MD5"))])
        (second,) = self.sent()
        self.answer(second, 403, [])
        result = self.successResultOf(d)
        self.assertEqual((result.ok, result.cause, result.statuses), (False, "403", (401, 403)))

    def test_timeout(self) -> None:
        """No answer: retransmitted per Timer E, given up at Timer F (64 T1) as "timeout"."""
        d = self.agent.register(self.account)
        self.sent()
        for _ in range(319):
            self.reactor.advance(0.1)
        self.assertNoResult(d)
        self.assertGreater(len(self.sent()), 5)  # retransmissions
        self.reactor.advance(0.1)
        self.reactor.advance(0.1)
        result = self.successResultOf(d)
        self.assertEqual((result.ok, result.cause, result.status), (False, "timeout", None))

    def test_stop_with_requests_in_flight(self) -> None:
        """stop() ends pending operations as "stopped" and leaves no timer behind."""
        d = self.agent.register(self.account)
        self.successResultOf(self.agent.stop())
        self.assertEqual(self.successResultOf(d).cause, "stopped")
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_not_started(self) -> None:
        """An agent that is not started refuses with "unreachable"."""
        agent = SipAgent(FakeReactor(), *PBX, media=False)
        result = self.successResultOf(agent.register(self.account))
        self.assertEqual(result.cause, "unreachable")
