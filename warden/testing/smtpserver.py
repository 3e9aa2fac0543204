"""
A small ESMTP server for tests (voicemail-to-email, emergency-call
notifications): it accepts every message on 127.0.0.1 and keeps it.

    server = await start_smtp_server(reactor)           # a free port
    ... configure Warden with smtp_port = server.port ...
    mail = await server.next_message()                   # fires per message
    mail.message["Subject"], mail.attachments()          # parsed with the stdlib

Options a test may need:

- ``refuse=n``: the first ``n`` attempts are refused with a temporary
  ``451`` at ``RCPT TO`` (the sender is expected to retry);
  ``server.refused`` counts them.
- ``username``/``password``: ``AUTH PLAIN``/``LOGIN`` is offered and a message
  is taken only after a successful login (``530`` otherwise).
- ``tls``: a server TLS context factory (e.g. ``warden.tls.build_context`` on a
  pair made by ``generate_self_signed``): ``STARTTLS`` is offered.

Built on ``twisted.mail.smtp.ESMTP``. Unit tests need no socket:
``SmtpTestServer().serve_in_memory(client_protocol)`` runs a session in
memory (``twisted.test.iosim``).
"""

from __future__ import annotations

import email
import email.message
import email.policy
from collections.abc import Callable
from typing import Any

import attrs
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.internet.protocol import ServerFactory
from twisted.mail import smtp
from twisted.mail.imap4 import LOGINCredentials, PLAINCredentials
from zope.interface import implementer

__all__ = ["ReceivedMail", "SmtpTestServer", "start_smtp_server"]

#: Largest message kept (a test's mail is far smaller): bigger ones are refused.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


@attrs.frozen
class ReceivedMail:
    """
    One message as received.

    Attributes:
        sender: the envelope sender (``MAIL FROM``).
        recipients: the envelope recipients (``RCPT TO``).
        data: the message as sent (headers and body, lines ended by LF).
        authenticated: the username it was sent under ("" without ``AUTH``).
        tls: whether it came over ``STARTTLS``.
    """

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    authenticated: str = ""
    tls: bool = False

    @property
    def message(self) -> email.message.EmailMessage:
        """The message parsed by the standard library."""
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed

    def body_text(self) -> str:
        """The plain-text body ("" when there is none)."""
        part = self.message.get_body(preferencelist=("plain",))
        return "" if part is None else str(part.get_content())

    def attachments(self) -> list[tuple[str, str, bytes]]:
        """Each attachment as ``(filename, content type, decoded bytes)``."""
        found = []
        for part in self.message.iter_attachments():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found.append((part.get_filename() or "", part.get_content_type(), payload))
        return found


@implementer(smtp.IMessage)
class _Message:
    """``IMessage``: the lines of one message to one recipient."""

    def __init__(self, done: Callable[[bytes], None]) -> None:
        self._lines: list[bytes] = []
        self._size = 0
        self._done = done

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 (Twisted's name)
        self._size += len(line) + 1
        if self._size <= MAX_MESSAGE_BYTES:
            self._lines.append(line)

    def eomReceived(self) -> Deferred[None]:  # noqa: N802 (Twisted's name)
        if self._size > MAX_MESSAGE_BYTES:
            return defer.fail(ValueError("message too large"))
        self._done(b"\n".join(self._lines) + b"\n")
        return defer.succeed(None)

    def connectionLost(self) -> None:
        self._lines = []


@implementer(smtp.IMessageDelivery)
class _Delivery:
    """``IMessageDelivery`` of one session: collects recipients, one message each time."""

    def __init__(self, server: SmtpTestServer, protocol: _Protocol, username: str) -> None:
        self._server = server
        self._protocol = protocol
        self._username = username
        self._sender = ""
        self._recipients: list[str] = []
        self._pending = 0

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:  # noqa: N802
        return b"Received: from warden-test-smtp"

    def validateFrom(self, helo: Any, origin: smtp.Address) -> smtp.Address:  # noqa: N802
        if self._server.username and not self._username:
            raise smtp.SMTPServerError(530, "Authentication required")
        self._sender = str(origin)
        self._recipients = []
        return origin

    def validateTo(self, user: smtp.User) -> Callable[[], _Message]:  # noqa: N802
        if self._server.refuse > self._server.refused:
            self._server.refused += 1
            raise smtp.SMTPServerError(451, "Try again later")
        self._recipients.append(str(user.dest))
        self._pending += 1
        return lambda: _Message(self._received)

    def _received(self, data: bytes) -> None:
        # One IMessage per recipient carries the same data: keep it once.
        self._pending -= 1
        if self._pending:
            return
        self._server._keep(
            ReceivedMail(
                self._sender,
                tuple(self._recipients),
                data,
                self._username,
                bool(self._protocol.startedTLS),
            )
        )


class _Protocol(smtp.ESMTP):
    """ESMTP keeping the messages on the server; AUTH delivery bound to its user."""

    server: SmtpTestServer

    def connectionMade(self) -> None:
        super().connectionMade()
        self.delivery = _Delivery(self.server, self, "")

    def _cbAuthenticated(self, loginInfo: Any) -> None:  # noqa: N802,N803 (Twisted's name)
        super()._cbAuthenticated(loginInfo)
        self.delivery = _Delivery(self.server, self, self.server.username)


@implementer(IRealm)
class _Realm:
    """Any authenticated user gets a placeholder delivery (the protocol sets its own)."""

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:  # noqa: N802,N803
        return smtp.IMessageDelivery, object(), lambda: None


class SmtpTestServer:
    """
    The server's state: the messages kept and who waits for the next one.

    Args:
        refuse: attempts refused with ``451`` before messages are taken.
        username: with ``password``, ``AUTH`` is required.
        password: the password of ``username``.
        tls: a server context factory for ``STARTTLS`` (None: not offered).
    """

    def __init__(
        self,
        refuse: int = 0,
        username: str = "",
        password: str = "",
        tls: Any = None,
    ) -> None:
        self.refuse = refuse
        self.refused = 0
        self.username = username
        self._password = password
        self._tls = tls
        self.messages: list[ReceivedMail] = []
        self._waiting: list[Deferred[ReceivedMail]] = []
        self._handed_out = 0
        self._port: IListeningPort | None = None

    @property
    def port(self) -> int:
        """The TCP port listened on (after L{start_smtp_server})."""
        assert self._port is not None, "not listening"
        address = self._port.getHost()
        assert isinstance(address, IPv4Address)
        return address.port

    def factory(self) -> ServerFactory:
        """A protocol factory serving this server's sessions."""
        portal = None
        challengers: dict[bytes, Any] = {}
        if self.username:
            checker = InMemoryUsernamePasswordDatabaseDontUse()
            checker.addUser(self.username.encode(), self._password.encode())
            portal = Portal(_Realm(), [checker])
            challengers = {b"PLAIN": PLAINCredentials, b"LOGIN": LOGINCredentials}
        server = self

        class ServerFactory(smtp.SMTPFactory):
            def buildProtocol(self, addr: Any) -> _Protocol:
                p = _Protocol(challengers, server._tls)
                p.server = server
                p.portal = portal  # type: ignore[assignment]
                p.factory = self
                p.host = b"warden-test-smtp"
                return p

        return ServerFactory(portal)

    def serve_in_memory(self, client: Any) -> Any:
        """
        Connect the client protocol ``client`` (e.g. from an
        ``ESMTPSenderFactory`` a fake reactor was asked to connect) to a new
        session of this server in memory (``twisted.test.iosim``), run the
        exchange, and return the pump (``pump.flush()`` after changes).
        """
        from twisted.test.iosim import FakeTransport, connect

        server_address = IPv4Address("TCP", "127.0.0.1", 25)
        client_address = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol = self.factory().buildProtocol(server_address)
        return connect(
            protocol, FakeTransport(protocol, True, server_address, client_address),
            client, FakeTransport(client, False, client_address, server_address),
        )  # fmt: skip

    def next_message(self) -> Deferred[ReceivedMail]:
        """Fires with the next message not yet handed out by this method."""
        if self._handed_out < len(self.messages):
            self._handed_out += 1
            return defer.succeed(self.messages[self._handed_out - 1])
        waiting: Deferred[ReceivedMail] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def _keep(self, mail: ReceivedMail) -> None:
        self.messages.append(mail)
        if self._waiting:
            self._handed_out += 1
            self._waiting.pop(0).callback(mail)

    def stop(self) -> Deferred[None]:
        """Stop listening."""
        if self._port is None:
            return defer.succeed(None)
        port, self._port = self._port, None
        stopping = port.stopListening()
        if isinstance(stopping, Deferred):
            return stopping.addCallback(lambda _: None)
        return defer.succeed(None)


def start_smtp_server(
    reactor: IReactorTCP,
    interface: str = "127.0.0.1",
    port: int = 0,
    **options: Any,
) -> SmtpTestServer:
    """
    Listen on ``interface`` (a free port by default; ``server.port`` says
    which) with an L{SmtpTestServer} built from ``options`` (``refuse``,
    ``username``, ``password``, ``tls``). Stop it with ``server.stop()``
    (e.g. ``self.addCleanup(server.stop)``).
    """
    server = SmtpTestServer(**options)
    server._port = reactor.listenTCP(port, server.factory(), interface=interface)
    return server
