"""
The channels of emergency-call notification (L{warden.features.e911_notify}):

- L{SipMessageChannel}: a SIP MESSAGE (RFC 3428, ``text/plain``) out of any
  dialog to every registered phone of each notified extension, sent the way
  unsolicited NOTIFYs are (L{warden.features.mwi}); an attempt delivers when
  one phone answers 2xx, and fails when the extension has no phone
  registered, or every phone refuses, times out (RFC 3261 §17.1.2.2, Timer F)
  or cannot be reached.
- L{WebhookChannel}: an HTTPS POST of the JSON notice
  (``twisted.web.client.Agent``); the server's certificate must chain to
  ``notify_webhook_ca`` or the system's CAs and match the URL's host; only a
  2xx answer delivers; redirects are not followed; at most
  L{MAX_RESPONSE_BYTES} of the answer are read.
- L{EmailChannel}: a plain-text email through the configured relay
  (``twisted.mail.smtp.ESMTPSenderFactory``): STARTTLS required and the
  relay's certificate verified unless ``smtp_tls = "none"``, ``AUTH`` with
  ``smtp_username`` and the password read from ``smtp_password_file``.
"""

from __future__ import annotations

import email.message
import email.utils
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IReactorTCP, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from zope.interface import implementer

from warden.features.e911_notify import Channel, EmergencyNotice, NotifyConfig, NotifyFailed
from warden.features.smtp import MailFailed, SmtpRelay, client_tls, load_trust_root, send_mail
from warden.interfaces import IClientTransactionUser
from warden.model import Binding
from warden.sip.message import Request, Response, out_of_dialog_request
from warden.tls import ClientTlsPolicy

if TYPE_CHECKING:
    from warden.sip.flow import Flow
    from warden.sip.service import SipService
    from warden.sip.transaction_client import ClientTransaction

__all__ = [
    "EmailChannel",
    "SipMessageChannel",
    "WebhookChannel",
    "build_channels",
]

#: The most of a webhook's answer read (the rest is dropped with the connection).
MAX_RESPONSE_BYTES = 64 * 1024
#: Who emergency MESSAGEs come from.
SENDER_USER = "emergency"
USER_AGENT = b"Warden emergency notifier"


# -- SIP MESSAGE ---------------------------------------------------------------------------


@implementer(IClientTransactionUser)
class _Answer:
    """Fires ``done`` when the MESSAGE's transaction ends: 2xx or L{NotifyFailed}."""

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()

    def response_received(self, transaction: ClientTransaction, response: Response) -> None:
        """A final answer ends the attempt at this phone."""
        if response.status < 200 or self.done.called:
            return
        if response.status < 300:
            self.done.callback(None)
        else:
            self.done.errback(NotifyFailed(f"{response.status} {response.reason}"))

    def timed_out(self, transaction: ClientTransaction) -> None:
        """No final answer (Timer F)."""
        if not self.done.called:
            self.done.errback(NotifyFailed("no answer"))

    def transport_failed(self, transaction: ClientTransaction) -> None:
        """Not sent."""
        if not self.done.called:
            self.done.errback(NotifyFailed("could not be sent"))


class SipMessageChannel:
    """
    SIP MESSAGE to the registered phones of extensions.

    Args:
        clock: the time bindings are looked up at.
        targets: the extensions.
        bindings: an extension's registered phones now (the location service's).
        flow_for: how to reach a binding (None: it cannot be reached).
        via_for: our ``host:port`` towards a flow.
        contact_for: our Contact URI towards a flow.
        send_request: sends a request in a new client transaction.
        new_branch: a fresh Via branch.
        domain: the domain of From and To.
    """

    name = "sip"

    def __init__(
        self,
        clock: IReactorTime,
        targets: Sequence[str],
        bindings: Callable[[str, float], Deferred[list[Binding]]],
        flow_for: Callable[[Binding], Flow | None],
        via_for: Callable[[Flow], str],
        contact_for: Callable[[Flow], str],
        send_request: Callable[[Request, Flow, IClientTransactionUser], object],
        new_branch: Callable[[], str],
        domain: str,
    ) -> None:
        self.clock = clock
        self.targets = tuple(targets)
        self.bindings = bindings
        self.flow_for = flow_for
        self.via_for = via_for
        self.contact_for = contact_for
        self.send_request = send_request
        self.new_branch = new_branch
        self.domain = domain

    def describe(self, target: str) -> str:
        """The extension."""
        return f"extension {target}"

    def send(self, target: str, notice: EmergencyNotice) -> Deferred[None]:
        """A MESSAGE to each phone of ``target``; delivered when one accepts it."""
        return Deferred.fromCoroutine(self._send(target, notice))

    async def _send(self, target: str, notice: EmergencyNotice) -> None:
        sent: list[Deferred[None]] = []
        bindings = await self.bindings(target, self.clock.seconds())
        for binding in bindings:
            flow = self.flow_for(binding)
            if flow is not None:
                sent.append(self._message(target, binding, flow, notice))
        if not bindings:
            raise NotifyFailed("no phone registered")
        if not sent:
            raise NotifyFailed("no registered phone reachable (its connection is gone)")
        results = await defer.DeferredList(sent, consumeErrors=True)
        if any(ok for ok, _ in results):
            return
        reasons = sorted({self._why(value) for ok, value in results if not ok})
        raise NotifyFailed(", ".join(reasons))

    @staticmethod
    def _why(failure: object) -> str:
        return failure.getErrorMessage() if isinstance(failure, Failure) else str(failure)

    def _message(
        self, target: str, binding: Binding, flow: Flow, notice: EmergencyNotice
    ) -> Deferred[None]:
        request = out_of_dialog_request(
            "MESSAGE", binding.contact, flow.transport, self.via_for(flow), self.new_branch(),
            f'"Emergency alert" <sip:{SENDER_USER}@{self.domain}>',
            f"<sip:{target}@{self.domain}>", self.domain,
            [("Contact", f"<{self.contact_for(flow)}>"),
             ("Content-Type", "text/plain;charset=UTF-8")],
        )  # fmt: skip
        request.set_body(notice.text.encode())
        answer = _Answer()
        self.send_request(request, flow, answer)
        return answer.done


# -- HTTPS webhook ----------------------------------------------------------------------------


@implementer(IBodyProducer)
class _Body:
    """A request body known in full."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:  # noqa: N802
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


class _Discard(Protocol):
    """Reads an answer's body up to a bound, then drops the connection."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.done: Deferred[int] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit and self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(self.size)


def trust_policy(ca_path: str, name: str, fips: bool = False) -> ClientTlsPolicy:
    """
    Certificates verified against the PEM bundle ``ca_path`` ("": the
    system's CAs) and the host name; with ``fips`` FIPS-approved TLS only
    (``[security] fips``, L{warden.tls.ClientTlsPolicy}).

    Raises:
        ConfigError: the bundle cannot be read or holds no certificate (``name``).
    """
    if not ca_path:
        return ClientTlsPolicy(None, fips)
    return ClientTlsPolicy(load_trust_root(ca_path, name), fips)


class WebhookChannel:
    """
    A JSON POST to an HTTPS URL.

    Args:
        reactor: connects (TCP, TLS) and times the connection.
        url: the webhook (``https://``).
        ca_path: the CA bundle its certificate must chain to ("": the system's).
        timeout: seconds to connect.
        fips: FIPS-approved TLS only (``[security] fips``).
    """

    name = "webhook"

    def __init__(
        self, reactor: Any, url: str, ca_path: str, timeout: float, fips: bool = False
    ) -> None:
        self.targets = (url,)
        self.agent = Agent(
            reactor, contextFactory=trust_policy(ca_path, "emergency.notify_webhook_ca", fips),
            connectTimeout=timeout,
        )  # fmt: skip

    def describe(self, target: str) -> str:
        """Scheme, host and port only: the path and query often hold a token."""
        parts = urlsplit(target)
        return f"webhook https://{parts.netloc.rpartition('@')[2]}/..."

    def send(self, target: str, notice: EmergencyNotice) -> Deferred[None]:
        """POST ``notice``'s JSON; delivered on a 2xx answer."""
        return Deferred.fromCoroutine(self._send(target, notice))

    async def _send(self, target: str, notice: EmergencyNotice) -> None:
        headers = Headers({
            b"Content-Type": [b"application/json"],
            b"User-Agent": [USER_AGENT],
        })  # fmt: skip
        try:
            response: IResponse = await self.agent.request(
                b"POST", target.encode("ascii"), headers, _Body(notice.json())
            )
        except (
            ResponseNeverReceived,
            ResponseFailed,
            RequestTransmissionFailed,
        ) as e:  # what failed underneath (TLS, connection)
            raise NotifyFailed("; ".join(f.getErrorMessage() for f in e.reasons)) from None
        reader = _Discard(MAX_RESPONSE_BYTES)
        if response.length is UNKNOWN_LENGTH or response.length:
            response.deliverBody(reader)
            await reader.done
        if not 200 <= response.code < 300:
            raise NotifyFailed(f"HTTP {response.code}")


# -- email -----------------------------------------------------------------------------------


class EmailChannel:
    """
    Plain-text email through an SMTP relay.

    Args:
        reactor: connects to the relay.
        config: the relay, sender, recipients and timeout.
        password: the relay's password ("" without ``smtp_username``).
        fips: FIPS-approved TLS only for STARTTLS (``[security] fips``).
    """

    name = "email"

    def __init__(
        self, reactor: IReactorTCP, config: NotifyConfig, password: str = "", fips: bool = False
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.targets = config.notify_email
        self.relay = SmtpRelay(
            config.smtp_host, config.smtp_port, config.smtp_from, config.smtp_tls,
            config.smtp_ca, config.smtp_username, config.notify_timeout,
        )  # fmt: skip
        self._password = password
        self._tls = client_tls(self.relay, "emergency.smtp_ca", fips)

    def describe(self, target: str) -> str:
        """The address."""
        return f"email {target}"

    def message(self, target: str, notice: EmergencyNotice) -> bytes:
        """The email to ``target``."""
        mail = email.message.EmailMessage()
        mail["From"] = self.config.smtp_from
        mail["To"] = target
        mail["Subject"] = notice.subject
        mail["Date"] = email.utils.formatdate(usegmt=True)
        mail["Message-ID"] = email.utils.make_msgid(domain=self.config.smtp_from.partition("@")[2])
        mail.set_content(notice.text.replace("\r\n", "\n"))
        return mail.as_bytes()

    def send(self, target: str, notice: EmergencyNotice) -> Deferred[None]:
        """Send the email to ``target``."""
        data = self.message(target, notice)
        sent = send_mail(self.reactor, self.relay, target, data, self._password, self._tls)

        def failed(failure: Failure) -> None:
            failure.trap(MailFailed)  # its text holds the relay's answer, never AUTH lines
            raise NotifyFailed(failure.getErrorMessage())

        return sent.addErrback(failed)


def build_channels(
    reactor: Any,
    config: NotifyConfig,
    sip: SipService,
    domain: str,
    password: str = "",
    fips: bool = False,
) -> list[Channel]:
    """
    The channels ``config`` asks for: SIP MESSAGE through ``sip`` (its
    location service, addressing and transactions), the webhook, email (with
    ``fips``, their TLS FIPS-approved only).
    """
    channels: list[Channel] = []
    calls = sip.calls
    if config.notify_extensions and calls is not None:
        channels.append(
            SipMessageChannel(
                reactor, config.notify_extensions, sip.location.bindings_for,
                sip.addressing.flow_for, sip.addressing.via_for, calls.contact_for,
                sip.transactions.send_request, sip.transactions.new_branch, domain,
            )
        )  # fmt: skip
    if config.notify_webhook:
        channels.append(
            WebhookChannel(
                reactor, config.notify_webhook, config.notify_webhook_ca, config.notify_timeout,
                fips,
            )
        )  # fmt: skip
    if config.notify_email:
        channels.append(EmailChannel(reactor, config, password, fips))
    return channels
