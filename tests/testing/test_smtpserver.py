"""
The test ESMTP server (L{warden.testing.smtpserver}) as a sender sees it:
messages kept and handed out in order, temporary refusals, AUTH required when
configured, and STARTTLS when a TLS context is given. Driven in memory with
``twisted.test.iosim`` and twisted.mail's own ESMTP sender.
"""

from __future__ import annotations

import io
import os
from email.message import EmailMessage
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.mail import smtp
from twisted.trial.unittest import SynchronousTestCase

from warden.testing.smtpserver import SmtpTestServer
from warden.tls import build_context, generate_self_signed


def mail_bytes() -> bytes:
    """A message with a small attachment."""
    message = EmailMessage()
    message["From"] = "pbx@example.org"
    message["To"] = "alice@example.org"
    message["Subject"] = "hello"
    message.set_content("body text\n")
    message.add_attachment(b"RIFF1234", maintype="audio", subtype="wav", filename="a.wav")
    return message.as_bytes()


def send(server: SmtpTestServer, **options: Any) -> Deferred[Any]:
    """Send L{mail_bytes} to ``server`` through an in-memory connection."""
    result: Deferred[Any] = Deferred()
    factory = smtp.ESMTPSenderFactory(
        options.pop("username", None), options.pop("password", None),
        "pbx@example.org", ["alice@example.org"], io.BytesIO(mail_bytes()), result,
        retries=0, requireAuthentication=False, requireTransportSecurity=False, **options,
    )  # fmt: skip
    server.serve_in_memory(factory.buildProtocol(None))
    return result


class SmtpTestServerTests(SynchronousTestCase):
    """What a sender gets from the server, and what the test sees."""

    def test_message_kept_and_parsed(self) -> None:
        """A message sent arrives whole: envelope, headers, body and attachment."""
        server = SmtpTestServer()
        waiting = server.next_message()
        self.assertNoResult(waiting)
        self.successResultOf(send(server))
        mail = self.successResultOf(waiting)
        self.assertEqual(mail.sender, "pbx@example.org")
        self.assertEqual(mail.recipients, ("alice@example.org",))
        self.assertEqual(mail.message["Subject"], "hello")
        self.assertEqual(mail.body_text(), "body text\n")
        self.assertEqual(mail.attachments(), [("a.wav", "audio/wav", b"RIFF1234")])
        self.assertEqual(server.messages, [mail])

    def test_messages_handed_out_in_order(self) -> None:
        """Messages already received are handed out one per next_message, in order."""
        server = SmtpTestServer()
        self.successResultOf(send(server))
        self.successResultOf(send(server))
        first = self.successResultOf(server.next_message())
        second = self.successResultOf(server.next_message())
        self.assertIs(first, server.messages[0])
        self.assertIs(second, server.messages[1])
        self.assertNoResult(server.next_message())

    def test_refuse_is_temporary(self) -> None:
        """``refuse`` answers 451 that many times, then takes the message."""
        server = SmtpTestServer(refuse=1)
        failure = self.failureResultOf(send(server), smtp.SMTPDeliveryError)
        self.assertEqual(failure.value.code, 451)
        self.assertEqual((server.refused, server.messages), (1, []))
        self.successResultOf(send(server))
        self.assertEqual(len(server.messages), 1)

    def test_auth_required(self) -> None:
        """With a username, a sender that does not log in is refused; one that does is kept."""
        server = SmtpTestServer(username="pbx", password="s3cret")
        self.failureResultOf(send(server), smtp.SMTPDeliveryError)
        self.failureResultOf(send(server, username=b"pbx", password=b"wrong"))
        self.assertEqual(server.messages, [])
        self.successResultOf(send(server, username=b"pbx", password=b"s3cret"))
        self.assertEqual(server.messages[0].authenticated, "pbx")

    def test_starttls(self) -> None:
        """With a TLS context the sender negotiates STARTTLS and the message says so."""
        directory = self.mktemp()
        os.makedirs(directory)
        cert, key = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
        generate_self_signed(cert, key, Clock())
        server = SmtpTestServer(tls=_Context(build_context(cert, key)))
        self.successResultOf(send(server, contextFactory=_Context(CertificateOptions())))
        self.assertTrue(server.messages[0].tls)


class _Context:
    """
    A context (factory) for iosim's pretend TLS, which checks only that both
    sides started TLS (``iosimVerify``); the handshake itself is not run.
    """

    def __init__(self, context: Any) -> None:
        self._context = context

    def getContext(self) -> Any:
        """The context."""
        return (
            self._context
            if not hasattr(self._context, "getContext")
            else self._context.getContext()
        )

    def iosimVerify(self, other: Any) -> bool:  # noqa: N802 (iosim's name)
        """Both ends negotiate."""
        return True
