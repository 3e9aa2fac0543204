"""
Warden registering at a provider (warden.sip.registration): the REGISTER it
sends, the digest answer to a challenge, the refresh before expiry, 423, and
the back-off after failures, on a Clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warden.sip.auth import challenge, digest_hex, expected_response, parse_credentials
from warden.sip.flow import Flow
from warden.sip.message import Request, make_response
from warden.sip.registration import Registration, RegistrationSettings, RegistrationState
from warden.testing.reactor import seconds_until_changed

PROVIDER = Flow("udp", "192.0.2.50", 5060)


class FakeTransactions:
    """Keeps each request sent and the user to answer it."""

    def __init__(self) -> None:
        self.sent: list[tuple[Request, Flow, Any]] = []
        self._branch = 0

    def new_branch(self) -> str:
        self._branch += 1
        return f"z9hG4bKtest{self._branch}"

    def send_request(self, request: Request, flow: Flow, user: Any) -> object:
        self.sent.append((request, flow, user))
        return object()


class RegistrationTests(SynchronousTestCase):
    """One registration of ``acct`` at itsp.example."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.txns = FakeTransactions()
        self.changes: list[RegistrationState] = []
        self.failures: list[str] = []
        settings = RegistrationSettings(
            PROVIDER, "itsp.example", "acct", "pw", expires=600,
            backoff_first=10.0, backoff_max=60.0,
        )  # fmt: skip
        self.reg = Registration(
            self.clock, self.txns, lambda flow: "192.0.2.1:5060", settings,
            on_change=lambda r: self.changes.append(r.state),
            on_failure=self.failures.append,
        )  # fmt: skip

    def last(self) -> tuple[Request, Any]:
        request, flow, user = self.txns.sent[-1]
        self.assertEqual(flow, PROVIDER)
        return request, user

    def answer(self, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        request, user = self.last()
        user.response_received(None, make_response(request, status, headers=headers or []))

    def challenge(self, status: int = 401) -> None:
        name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
        self.answer(status, [(name, challenge("itsp.example", "abc", "MD5"))])

    def test_register_request(self) -> None:
        """REGISTER sip:domain, AOR in From and To, our Contact, Expires asked for."""
        self.reg.start()
        request, _ = self.last()
        self.assertEqual(request.method, "REGISTER")
        self.assertEqual(request.uri_text, "sip:itsp.example")
        self.assertEqual(str(request.from_.uri), "sip:acct@itsp.example")
        self.assertEqual(str(request.to.uri), "sip:acct@itsp.example")
        self.assertEqual(str(request.contacts[0].uri), "sip:acct@192.0.2.1:5060")
        self.assertEqual(request.get("Expires"), "600")
        self.assertEqual(self.reg.state, RegistrationState.REGISTERING)

    def test_challenge_answered(self) -> None:
        """A 401 is answered with a valid digest, same Call-ID, next CSeq."""
        self.reg.start()
        first, _ = self.last()
        self.challenge()
        second, _ = self.last()
        self.assertEqual(second.call_id, first.call_id)
        self.assertEqual(second.cseq.number, first.cseq.number + 1)
        creds = parse_credentials(second.get("Authorization") or "")
        assert creds is not None
        ha1 = digest_hex("MD5", "acct:itsp.example:pw")
        self.assertEqual(creds.response, expected_response(creds, ha1, "REGISTER"))
        self.assertEqual(creds.uri, "sip:itsp.example")

    def test_proxy_challenge_answered(self) -> None:
        """A 407 is answered in Proxy-Authorization."""
        self.reg.start()
        self.challenge(407)
        request, _ = self.last()
        self.assertIsNotNone(request.get("Proxy-Authorization"))

    def test_registered_and_refreshed(self) -> None:
        """200 with the granted lifetime: registered; refreshed at 80% of it."""
        self.reg.start()
        self.challenge()
        self.answer(200, [("Contact", "<sip:acct@192.0.2.1:5060>;expires=300")])
        self.assertEqual(self.reg.state, RegistrationState.REGISTERED)
        self.assertEqual(self.reg.expires_at, 300)
        count = len(self.txns.sent)
        self.clock.advance(239.9)
        self.assertEqual(len(self.txns.sent), count)
        self.clock.advance(0.2)
        self.assertEqual(len(self.txns.sent), count + 1)
        self.assertEqual(self.reg.state, RegistrationState.REGISTERED)  # while refreshing

    def test_expires_header(self) -> None:
        """Without an expires parameter the Expires header gives the lifetime."""
        self.reg.start()
        self.answer(200, [("Expires", "120")])
        self.assertEqual(self.reg.expires_at, 120)

    def test_wrong_password(self) -> None:
        """A second challenge is not answered: failed (auth), retried after back-off."""
        self.reg.start()
        self.challenge()
        self.challenge()
        self.assertEqual(self.reg.state, RegistrationState.FAILED)
        self.assertEqual(self.failures, ["auth"])
        self.assertIn("401", self.reg.last_error)
        count = len(self.txns.sent)
        self.clock.advance(9.9)
        self.assertEqual(len(self.txns.sent), count)
        self.clock.advance(0.2)
        self.assertEqual(len(self.txns.sent), count + 1)

    def test_backoff_doubles_up_to_max(self) -> None:
        """Time-outs: retries after 10, 20, 40, 60, 60 seconds."""
        self.reg.start()
        waits = []
        for _ in range(5):
            _, user = self.last()
            user.timed_out(None)
            waits.append(seconds_until_changed(self.clock, lambda: len(self.txns.sent), 1.0))
        self.assertEqual(waits, [10.0, 20.0, 40.0, 60.0, 60.0])
        self.assertEqual(self.failures, ["timeout"] * 5)

    def test_success_resets_backoff(self) -> None:
        """After a success the next failure waits the first back-off again."""
        self.reg.start()
        _, user = self.last()
        user.timed_out(None)
        self.clock.advance(10)
        _, user = self.last()
        user.timed_out(None)
        self.clock.advance(20)
        self.answer(200, [("Expires", "600")])
        self.clock.advance(480)
        _, user = self.last()
        user.timed_out(None)
        count = len(self.txns.sent)
        self.clock.advance(10)
        self.assertEqual(len(self.txns.sent), count + 1)

    def test_interval_too_brief(self) -> None:
        """423: asked again with the registrar's Min-Expires."""
        self.reg.start()
        self.answer(423, [("Min-Expires", "1800")])
        request, _ = self.last()
        self.assertEqual(request.get("Expires"), "1800")

    def test_rejected(self) -> None:
        """403: failed (rejected), the status in the last error."""
        self.reg.start()
        self.answer(403)
        self.assertEqual(self.reg.state, RegistrationState.FAILED)
        self.assertEqual(self.failures, ["rejected"])
        self.assertEqual(self.reg.last_error, "403 Forbidden")

    def test_stop_unregisters(self) -> None:
        """Stopping a registered binding sends Expires: 0 and stops refreshing."""
        self.reg.start()
        self.answer(200, [("Expires", "600")])
        self.reg.stop()
        request, _ = self.last()
        self.assertEqual(request.get("Expires"), "0")
        count = len(self.txns.sent)
        self.clock.advance(10_000)
        self.assertEqual(len(self.txns.sent), count)
        self.assertEqual(self.reg.state, RegistrationState.UNREGISTERED)

    def test_late_answer_ignored(self) -> None:
        """An answer to a REGISTER of an earlier attempt changes nothing."""
        self.reg.start()
        _, old_user = self.last()
        old_request, _ = self.last()
        old_user.timed_out(None)
        self.clock.advance(10)
        old_user.response_received(None, make_response(old_request, 200))
        self.assertEqual(self.reg.state, RegistrationState.REGISTERING)
        self.assertNotIn(RegistrationState.REGISTERED, self.changes)

    def test_transport_failure(self) -> None:
        """A socket that refuses the REGISTER is a failure, retried later."""

        def refuse(request: Request, flow: Flow, user: Any) -> object:
            raise OSError("unreachable")

        self.txns.send_request = refuse  # type: ignore[method-assign]
        self.reg.start()
        self.assertEqual(self.reg.state, RegistrationState.FAILED)
        self.assertEqual(self.failures, ["transport"])

    def test_unreadable_challenge(self) -> None:
        """A challenge that cannot be answered: failed (auth)."""
        self.reg.start()
        for value in ("Digest garbage", "!!"):
            self.answer(401, [("WWW-Authenticate", value)])
            self.assertEqual(self.reg.state, RegistrationState.FAILED)
            self.clock.advance(600)
        self.assertEqual(self.failures, ["auth", "auth"])

    def test_garbage_expiry(self) -> None:
        """An unreadable lifetime: the one asked for is assumed."""
        self.reg.start()
        self.answer(200, [("Contact", "<sip:acct@192.0.2.1:5060>;expires=soon"),
                          ("Expires", "-5")])  # fmt: skip
        self.assertEqual(self.reg.state, RegistrationState.REGISTERED)
        self.assertEqual(self.reg.expires_at, 600)


class StreamRegistrationTests(SynchronousTestCase):
    """Over TCP the REGISTER goes on the connection ``open_flow`` gives."""

    def test_tcp(self) -> None:
        """Via says TCP, the Contact asks for TCP, the flow has the connection."""
        txns = FakeTransactions()
        connection = object()
        tcp = Flow("tcp", "192.0.2.50", 5060)
        settings = RegistrationSettings(tcp, "itsp.example", "acct", "pw")
        reg = Registration(
            Clock(), txns, lambda flow: "192.0.2.1:5060", settings,
            open_flow=lambda flow: Flow("tcp", flow.host, flow.port, connection),
        )  # fmt: skip
        reg.start()
        request, flow, _ = txns.sent[-1]
        self.assertIs(flow.connection, connection)
        self.assertEqual(request.top_via.transport.upper(), "TCP")
        self.assertEqual(str(request.contacts[0].uri), "sip:acct@192.0.2.1:5060;transport=tcp")

    def test_tls(self) -> None:
        """
        Over TLS: Via says TLS, the Contact and the Request-URI ask for TLS
        (``sip:`` with ``;transport=tls``, RFC 5630 §3.2).
        """
        txns = FakeTransactions()
        tls = Flow("tls", "192.0.2.50", 5061)
        settings = RegistrationSettings(tls, "itsp.example", "acct", "pw")
        reg = Registration(Clock(), txns, lambda flow: "192.0.2.1:5061", settings)
        reg.start()
        request, flow, _ = txns.sent[-1]
        self.assertEqual(flow, tls)
        self.assertEqual(str(request.uri), "sip:itsp.example;transport=tls")
        self.assertEqual(request.top_via.transport.upper(), "TLS")
        self.assertEqual(str(request.contacts[0].uri), "sip:acct@192.0.2.1:5061;transport=tls")
