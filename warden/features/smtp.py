"""
Email through an SMTP relay, for feature plugins (voicemail-to-email,
emergency-call notices): one message to one recipient per attempt, with
``twisted.mail.smtp.ESMTPSenderFactory``.

- ``tls = "starttls"``: STARTTLS is required and the relay's certificate must
  chain to ``ca`` (a PEM bundle) or the system's CAs and match ``host``;
  ``"none"``: plain SMTP (a relay on the same host or network).
- ``username``: ``AUTH`` with the password the plugin read from its
  ``*_password_env``/``*_password_file`` (L{warden.secrets.read_password});
  a password is only ever sent after STARTTLS.

A failed attempt fails with L{MailFailed}, whose text holds only the relay's
answer (code and reason) or the connection error: never the SMTP transcript,
which holds the ``AUTH`` lines. Retrying is the caller's (L{MailQueue}).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import Counter
from twisted.application.service import Service
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.mail.smtp import ESMTPSenderFactory, SMTPClientError
from twisted.python.failure import Failure

from warden.errors import ConfigError
from warden.tls import client_tls_options

__all__ = [
    "MailFailed",
    "MailQueue",
    "SmtpRelay",
    "client_tls",
    "is_email_address",
    "load_trust_root",
    "send_mail",
]

TLS_MODES = ("starttls", "none")
#: The largest CA bundle read.
MAX_CA_BYTES = 1024 * 1024
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_HOST = re.compile(r"(?!-)[A-Za-z0-9.:-]{1,253}(?<!-)")


def is_email_address(text: str) -> bool:
    """Whether ``text`` is a plain ASCII ``local@domain`` address (at most 254 characters)."""
    return len(text) <= 254 and _EMAIL.fullmatch(text) is not None


def is_host(text: str) -> bool:
    """Whether ``text`` may be a relay's host name or IP address."""
    return _HOST.fullmatch(text) is not None


class MailFailed(Exception):
    """An attempt failed; the message is safe to log (no transcript, no secret)."""


@attrs.frozen
class SmtpRelay:
    """
    Where and how mail is sent.

    Attributes:
        host, port: the relay.
        sender: the envelope and ``From`` address.
        tls: ``starttls`` (required, certificate verified) or ``none``.
        ca: a PEM bundle the relay's certificate must chain to ("": the
            system's CAs).
        username: the ``AUTH`` login ("" for none).
        timeout: seconds an attempt may wait for the relay.
    """

    host: str
    port: int = 25
    sender: str = ""
    tls: str = "starttls"
    ca: str = ""
    username: str = ""
    timeout: float = 30.0


def load_trust_root(ca_path: str, key: str) -> Any:
    """
    The certificates of the PEM bundle ``ca_path`` as a trust root (None for
    "": the system's CAs).

    Raises:
        ConfigError: the bundle cannot be read or holds no certificate (``key``).
    """
    if not ca_path:
        return None
    try:
        with open(ca_path, "rb") as f:
            certs = x509.load_pem_x509_certificates(f.read(MAX_CA_BYTES))
    except OSError as e:
        raise ConfigError(key, f"cannot read {ca_path}: {e.strerror}") from None
    except ValueError:
        raise ConfigError(key, f"{ca_path} is not a PEM certificate bundle") from None
    roots = [ssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certs]
    return ssl.trustRootFromCertificates(roots)


def client_tls(relay: SmtpRelay, ca_key: str, fips: bool = False) -> Any:
    """
    The TLS client options for STARTTLS to ``relay`` (None for ``tls =
    "none"``); with ``fips`` FIPS-approved TLS only (L{warden.tls.client_tls_options}).
    """
    if relay.tls != "starttls":
        return None
    return client_tls_options(relay.host, load_trust_root(relay.ca, ca_key), fips)


def _why(failure: Failure) -> str:
    error = failure.value
    if isinstance(error, SMTPClientError):
        # Only the relay's answer: the error's transcript holds the AUTH lines.
        answer = (
            error.resp.decode("utf-8", "replace")
            if isinstance(error.resp, bytes)
            else str(error.resp)
        )
        code = f"{error.code} " if error.code and error.code > 0 else ""
        return f"SMTP: {code}{answer}"[:300]
    return f"{type(error).__name__}: {error}"[:300]


def send_mail(
    reactor: IReactorTCP,
    relay: SmtpRelay,
    recipient: str,
    data: bytes,
    password: str = "",
    tls: Any = None,
) -> Deferred[None]:
    """
    Send ``data`` (a whole RFC 5322 message) to ``recipient`` through
    ``relay``; fails with L{MailFailed}.

    Args:
        password: the ``AUTH`` password ("" without ``relay.username``).
        tls: from L{client_tls} (None: plain SMTP).
    """
    sent: Deferred[Any] = Deferred()
    username = relay.username.encode() or None
    factory = ESMTPSenderFactory(
        username, password.encode() or None, relay.sender, [recipient], io.BytesIO(data), sent,
        retries=0, timeout=relay.timeout, contextFactory=tls,
        requireAuthentication=username is not None, requireTransportSecurity=tls is not None,
    )  # fmt: skip
    connector = reactor.connectTCP(relay.host, relay.port, factory, timeout=relay.timeout)

    def failed(failure: Failure) -> None:
        connector.disconnect()
        raise MailFailed(_why(failure))

    done: Deferred[None] = sent.addCallbacks(lambda _: None, failed)
    return done


#: Voicemail and other feature email, by outcome: ``sent``; ``failed`` (an
#: attempt failed, another follows); ``abandoned`` (every attempt failed);
#: ``dropped`` (too many waiting). Bounded labels only.
EMAILS = Counter("warden_email_messages_total", "Feature emails by outcome", ["feature", "result"])


@attrs.define
class _Outgoing:
    recipient: str
    data: bytes
    what: str
    attempts: int = 0
    timer: IDelayedCall | None = None


class MailQueue(Service):
    """
    Sends each message in the background, trying again after ``retry_delay``
    seconds, doubled each time up to ``max_delay``, until ``attempts`` have
    failed; never blocks its caller. Every failed attempt is logged (the
    recipient, what it was, the relay's answer) and counted.

    Args:
        clock: schedules the retries.
        send: one attempt (L{send_mail} bound to a relay): recipient, data.
        feature: the metric label (``voicemail``).
        attempts: attempts per message.
        retry_delay: seconds before the second attempt.
        max_delay: the longest wait between attempts.
        max_waiting: messages held at once; more are dropped (and counted).
        max_bytes: bytes of messages held at once (voicemail carries audio);
            a message that would pass it is dropped too.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        send: Callable[[str, bytes], Deferred[None]],
        feature: str,
        attempts: int = 10,
        retry_delay: float = 30.0,
        max_delay: float = 3600.0,
        max_waiting: int = 1000,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.clock = clock
        self._send = send
        self.feature = feature
        self.attempts = attempts
        self.retry_delay = retry_delay
        self.max_delay = max_delay
        self.max_waiting = max_waiting
        self.max_bytes = max_bytes
        self._waiting: list[_Outgoing] = []
        self._stopped = False

    @property
    def waiting(self) -> int:
        """Messages not yet sent (being tried, or waiting for a retry)."""
        return len(self._waiting)

    def submit(self, recipient: str, data: bytes, what: str) -> None:
        """Send ``data`` to ``recipient`` in the background; ``what`` names it in logs."""
        held = sum(len(item.data) for item in self._waiting)
        if (
            self._stopped
            or len(self._waiting) >= self.max_waiting
            or held + len(data) > self.max_bytes
        ):
            EMAILS.labels(self.feature, "dropped").inc()
            self.log.warn(
                "Email to {recipient} ({what}) dropped: {count} ({bytes} bytes) are waiting"
                " already",
                recipient=recipient, what=what, count=len(self._waiting), bytes=held,
            )  # fmt: skip
            return
        item = _Outgoing(recipient, data, what)
        self._waiting.append(item)
        self._attempt(item)

    def _attempt(self, item: _Outgoing) -> None:
        item.timer = None
        item.attempts += 1
        try:
            d = self._send(item.recipient, item.data)
        except Exception as e:  # a connect that raised at once fails like a refused one
            d = Deferred()
            d.errback(MailFailed(f"{type(e).__name__}: {e}"))
        d.addCallbacks(self._sent, self._failed, callbackArgs=(item,), errbackArgs=(item,))
        d.addErrback(lambda f: self.log.failure("Email bookkeeping failed", f))

    def _sent(self, _: object, item: _Outgoing) -> None:
        self._waiting.remove(item)
        EMAILS.labels(self.feature, "sent").inc()
        self.log.info(
            "Email to {recipient} ({what}) sent", recipient=item.recipient, what=item.what
        )

    def _failed(self, failure: Failure, item: _Outgoing) -> None:
        why = failure.getErrorMessage() if failure.check(MailFailed) else _why(failure)
        if item.attempts >= self.attempts or self._stopped:
            self._waiting.remove(item)
            EMAILS.labels(self.feature, "abandoned").inc()
            self.log.error(
                "Email to {recipient} ({what}) abandoned after {attempts} attempts: {why}",
                recipient=item.recipient, what=item.what, attempts=item.attempts, why=why,
            )  # fmt: skip
            return
        EMAILS.labels(self.feature, "failed").inc()
        delay = min(self.retry_delay * 2 ** (item.attempts - 1), self.max_delay)
        self.log.warn(
            "Email to {recipient} ({what}) failed (attempt {attempts}): {why};"
            " trying again in {delay:g} s",
            recipient=item.recipient, what=item.what, attempts=item.attempts, why=why,
            delay=delay,
        )  # fmt: skip
        item.timer = self.clock.callLater(delay, self._attempt, item)

    def stopService(self) -> None:
        """Stop retrying (at shutdown); attempts in flight finish, none is made again."""
        super().stopService()
        self._stopped = True
        for item in list(self._waiting):
            if item.timer is not None and item.timer.active():
                item.timer.cancel()
                self._waiting.remove(item)
                self.log.warn(
                    "Email to {recipient} ({what}) not sent: Warden is stopping",
                    recipient=item.recipient, what=item.what,
                )  # fmt: skip
