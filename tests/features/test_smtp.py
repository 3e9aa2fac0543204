"""
Feature email (L{warden.features.smtp}): one attempt through
``ESMTPSenderFactory`` against the test SMTP server in memory (delivered, the
relay's refusal and a refused connection failing with L{MailFailed} whose text
never holds the AUTH transcript), and L{MailQueue}: retries with doubling
delays on the clock, giving up after its attempts, a bounded queue, and a stop
at shutdown; every outcome counted.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from warden.features.smtp import (
    EMAILS,
    MailFailed,
    MailQueue,
    SmtpRelay,
    is_email_address,
    send_mail,
)
from warden.testing.smtpserver import SmtpTestServer

RELAY = SmtpRelay("mail.example.org", 2525, "pbx@example.org", tls="none")
MAIL = b"From: pbx@example.org\nTo: bob@example.org\nSubject: hi\n\nhello\n"


def count(result: str, feature: str = "test") -> float:
    """The counter of ``result``."""
    value: float = EMAILS.labels(feature, result)._value.get()
    return value


class SendMailTests(SynchronousTestCase):
    """One attempt."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def attempt(
        self, server: SmtpTestServer, relay: SmtpRelay = RELAY, **kw: Any
    ) -> Deferred[None]:
        """Send MAIL and run the exchange with ``server`` in memory."""
        d = send_mail(self.reactor, relay, "bob@example.org", MAIL, **kw)
        host, port, factory, timeout, _ = self.reactor.tcpClients[-1]
        self.assertEqual((host, port, timeout), ("mail.example.org", 2525, 30.0))
        server.serve_in_memory(factory.buildProtocol(None))
        return d

    def test_delivered(self) -> None:
        """The relay gets the message for the recipient from the configured sender."""
        server = SmtpTestServer()
        self.assertIsNone(self.successResultOf(self.attempt(server)))
        (mail,) = server.messages
        self.assertEqual((mail.sender, mail.recipients), ("pbx@example.org", ("bob@example.org",)))
        self.assertEqual(mail.message["Subject"], "hi")

    def test_authenticated(self) -> None:
        """With a username the sender logs in before sending."""
        server = SmtpTestServer(username="pbx", password="s3cret-pw")
        relay = SmtpRelay("mail.example.org", 2525, "pbx@example.org", tls="none", username="pbx")
        self.successResultOf(self.attempt(server, relay, password="s3cret-pw"))
        self.assertEqual(server.messages[0].authenticated, "pbx")

    def test_refused_without_secrets(self) -> None:
        """A refusal fails with the relay's answer only: no password, no AUTH line."""
        server = SmtpTestServer(username="pbx", password="right-pw")
        relay = SmtpRelay("mail.example.org", 2525, "pbx@example.org", tls="none", username="pbx")
        failure = self.failureResultOf(
            self.attempt(server, relay, password="wrong-pw"), MailFailed
        )
        text = str(failure.value)
        self.assertTrue(text.startswith("SMTP: "), text)
        for secret in (b"wrong-pw", base64.b64encode(b"\0pbx\0wrong-pw"), b"AUTH"):
            self.assertNotIn(secret.decode(), text)
        self.assertEqual(server.messages, [])

    def test_temporary_refusal(self) -> None:
        """451 at RCPT fails the attempt with that code."""
        failure = self.failureResultOf(self.attempt(SmtpTestServer(refuse=1)), MailFailed)
        self.assertIn("451", str(failure.value))

    def test_connection_refused(self) -> None:
        """Nobody listening: MailFailed naming the error."""
        d = send_mail(self.reactor, RELAY, "bob@example.org", MAIL)
        factory = self.reactor.tcpClients[-1][2]
        connector = self.reactor.connectors[-1]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        failure = self.failureResultOf(d, MailFailed)
        self.assertIn("refused", str(failure.value))

    def test_addresses(self) -> None:
        """Plain ASCII local@domain only."""
        for good in ("bob@example.org", "a.b+c@x-y.example", "x@localhost"):
            self.assertTrue(is_email_address(good), good)
        for bad in ("bob", "@x.org", "a b@x.org", "a@b@c", "b\u00f6b@x.org", "a@x.org\n",
                    "a@-x.org", "a@x..org", "a" * 65 + "@x.org", ""):  # fmt: skip
            self.assertFalse(is_email_address(bad), bad)


class MailQueueTests(SynchronousTestCase):
    """Background sending with retries."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.results: list[Deferred[None]] = []
        self.sent: list[tuple[str, bytes]] = []
        self.events: list[dict[str, Any]] = []
        self.queue = MailQueue(self.reactor, self.send, "test", attempts=3, retry_delay=10.0,
                               max_delay=15.0, max_waiting=2)  # fmt: skip
        self.queue.log = Logger(observer=self.events.append)

    def send(self, recipient: str, data: bytes) -> Deferred[None]:
        """The next scripted result."""
        self.sent.append((recipient, data))
        return self.results.pop(0) if self.results else succeed(None)

    def test_sent_at_once(self) -> None:
        """A message is tried at once; success is counted and nothing stays queued."""
        before = count("sent")
        self.queue.submit("bob@example.org", MAIL, "m1")
        self.assertEqual(self.sent, [("bob@example.org", MAIL)])
        self.assertEqual((self.queue.waiting, count("sent")), (0, before + 1))

    def test_retried_with_backoff(self) -> None:
        """Failed attempts are retried after 10 s, then 15 s (capped), and then sent."""
        failed = count("failed")
        self.results = [fail(MailFailed("SMTP: 451 later")), fail(MailFailed("SMTP: 451 later"))]
        self.queue.submit("bob@example.org", MAIL, "m1")
        self.reactor.advance(9.9)
        self.assertEqual(len(self.sent), 1)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.sent), 2)
        self.reactor.advance(14.9)
        self.assertEqual(len(self.sent), 2)
        self.reactor.advance(0.1)
        self.assertEqual((len(self.sent), self.queue.waiting), (3, 0))
        self.assertEqual(count("failed"), failed + 2)
        warnings = [e for e in self.events if e["log_level"].name == "warn"]
        self.assertEqual([e["why"] for e in warnings], ["SMTP: 451 later"] * 2)

    def test_abandoned(self) -> None:
        """After ``attempts`` failures the message is given up, logged and counted."""
        abandoned = count("abandoned")
        self.results = [fail(MailFailed("x")) for _ in range(3)]
        self.queue.submit("bob@example.org", MAIL, "m1")
        self.reactor.advance(10.0)
        self.reactor.advance(15.0)
        self.assertEqual((len(self.sent), self.queue.waiting), (3, 0))
        self.assertEqual(count("abandoned"), abandoned + 1)
        self.assertEqual(self.events[-1]["log_level"].name, "error")

    def test_bounded(self) -> None:
        """Beyond ``max_waiting`` messages a new one is dropped and counted."""
        dropped = count("dropped")
        self.results = [Deferred(), Deferred()]
        for n in range(3):
            self.queue.submit("bob@example.org", MAIL, f"m{n}")
        self.assertEqual((len(self.sent), self.queue.waiting), (2, 2))
        self.assertEqual(count("dropped"), dropped + 1)

    def test_bounded_bytes(self) -> None:
        """A message that would take the bytes held past ``max_bytes`` is dropped."""
        queue = MailQueue(self.reactor, self.send, "test", max_bytes=2 * len(MAIL))
        self.results = [Deferred(), Deferred()]
        dropped = count("dropped")
        queue.submit("bob@example.org", MAIL, "m1")
        queue.submit("bob@example.org", MAIL + b"x", "m2")
        self.assertEqual((len(self.sent), queue.waiting, count("dropped")), (1, 1, dropped + 1))
        queue.submit("bob@example.org", MAIL, "m3")
        self.assertEqual(queue.waiting, 2)

    def test_raising_send(self) -> None:
        """A send that raises at once counts as a failed attempt and is retried."""

        def broken(recipient: str, data: bytes) -> Deferred[None]:
            raise OSError("no route")

        queue = MailQueue(self.reactor, broken, "test", attempts=2, retry_delay=1.0)
        queue.log = Logger(observer=self.events.append)
        queue.submit("bob@example.org", MAIL, "m1")
        self.assertEqual(queue.waiting, 1)
        self.assertIn("no route", self.events[-1]["why"])
        self.reactor.advance(1.0)
        self.assertEqual(queue.waiting, 0)

    def test_stop(self) -> None:
        """At shutdown waiting retries are cancelled and nothing new is taken."""
        self.results = [fail(MailFailed("x"))]
        self.queue.startService()
        self.queue.submit("bob@example.org", MAIL, "m1")
        self.queue.stopService()
        self.assertEqual((self.queue.waiting, self.reactor.getDelayedCalls()), (0, []))
        self.queue.submit("bob@example.org", MAIL, "m2")
        self.assertEqual(len(self.sent), 1)
