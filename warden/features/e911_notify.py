"""
Emergency-call notification (Kari's Law): when an emergency call starts, the
on-site contacts configured in ``[emergency]`` are told who is calling, from
where and how to call back, by SIP MESSAGE to extensions (RFC 3428), by an
HTTPS webhook (a JSON POST) and by email (SMTP), without ever delaying the
call itself.

Each target (an extension, the webhook, an email address) is tried on its
own: an attempt that fails or does not finish within ``notify_timeout`` is
tried again after ``notify_retry_delay`` seconds, doubling up to
L{MAX_RETRY_DELAY}, at most ``notify_attempts`` times in all. Every attempt is
logged (channel, target, attempt number, outcome; never a password or the
webhook's path, which often holds a token) and counted in
``warden_emergency_notifications_total{channel,outcome}``: ``delivered``,
``retried`` (failed, another attempt follows) or ``failed`` (the last attempt
failed). A test call (933) is notified the same way, marked ``TEST CALL
(933)``.

The channels themselves are in L{warden.features.e911_channels}.
"""

from __future__ import annotations

import collections
import datetime
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs
from prometheus_client import Counter
from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.errors import ConfigError
from warden.features.smtp import is_email_address, is_host
from warden.interfaces import IEmergencyObserver, IWardenPlugin
from warden.secrets import read_password

if TYPE_CHECKING:
    from warden.model.emergency import EmergencyCall
    from warden.plugin import BuildContext

__all__ = [
    "NOTIFY_KEYS",
    "EmergencyNotice",
    "EmergencyNotifier",
    "EmergencyNotifyPlugin",
    "NotifierService",
    "NotifyConfig",
    "NotifyFailed",
    "parse_notify",
]

#: The longest wait between two attempts at one target, seconds.
MAX_RETRY_DELAY = 60.0
#: Attempts remembered for inspection (L{EmergencyNotifier.history}).
HISTORY = 1000
#: Longest field (name, location, ...) put into a notification, characters.
MAX_FIELD = 256
#: Why attempts still to come are given up at shutdown.
STOPPING = "Warden stopping"
#: The marker of a test call's notifications.
TEST_MARKER = "TEST CALL (933)"
#: SMTP security modes: ``starttls`` (required, certificate verified) or ``none``.
SMTP_TLS_MODES = ("starttls", "none")

NOTIFICATIONS = Counter(
    "warden_emergency_notifications_total",
    "Emergency-call notification attempts, by channel and outcome",
    ["channel", "outcome"],
)
# Exported at 0 from the start, so an alert on "failed" sees every series.
for _channel in ("sip", "webhook", "email"):
    for _outcome in ("delivered", "retried", "failed"):
        NOTIFICATIONS.labels(_channel, _outcome)

_EXTENSION = re.compile(r"[0-9A-Za-z._-]{1,64}")
#: The longest webhook URL.
MAX_URL = 2048
#: The most extensions or addresses notified.
MAX_TARGETS = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _fail(name: str, problem: str) -> ConfigError:
    return ConfigError(f"emergency.{name}", problem)


def _string_list(
    name: str, value: object, valid: Callable[[str], object], what: str
) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _fail(name, f"must be a list of {what}")
    if len(value) > MAX_TARGETS:
        raise _fail(name, f"must list at most {MAX_TARGETS} {what}")
    for v in value:
        if not valid(v):
            raise _fail(name, f"must be a list of {what}, got {json.dumps(v)}")
    if len(set(value)) != len(value):
        raise _fail(name, "lists a value twice")
    return tuple(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(name: str, value: object, low: float, high: float) -> float:
    if not (_is_int(value) or isinstance(value, float)) or not low <= value <= high:  # type: ignore[operator]
        raise _fail(name, f"must be a number {low:g}..{high:g} (seconds), got {value!r}")
    return float(value)  # type: ignore[arg-type]


@attrs.frozen
class NotifyConfig:
    """
    The notification keys of ``[emergency]``.

    Attributes:
        notify_extensions: extensions sent a SIP MESSAGE (each registered phone).
        notify_webhook: an ``https://`` URL POSTed a JSON document ("": none).
        notify_webhook_ca: a PEM bundle the webhook's certificate must chain
            to ("": the system's trusted CAs).
        notify_email: addresses emailed.
        smtp_from: the sender of those emails.
        smtp_host, smtp_port: the mail relay (needed with ``notify_email``).
        smtp_username: the relay's login ("" for none).
        smtp_password_file: a file holding the relay's password (first line).
        smtp_tls: ``starttls`` (required; the certificate is verified against
            ``smtp_ca`` or the system's CAs) or ``none``.
        smtp_ca: a PEM bundle for the relay's certificate ("": system CAs).
        notify_attempts: attempts at each target, 1..10.
        notify_retry_delay: seconds before the second attempt (then doubled,
            up to L{MAX_RETRY_DELAY}).
        notify_timeout: seconds one attempt may take.
    """

    notify_extensions: tuple[str, ...] = ()
    notify_webhook: str = ""
    notify_webhook_ca: str = ""
    notify_email: tuple[str, ...] = ()
    smtp_from: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password_file: str = ""
    smtp_tls: str = "starttls"
    smtp_ca: str = ""
    notify_attempts: int = 4
    notify_retry_delay: float = 5.0
    notify_timeout: float = 10.0

    SECTION: ClassVar[str] = "emergency"

    @property
    def targets(self) -> int:
        """How many targets are notified of each call."""
        return len(self.notify_extensions) + bool(self.notify_webhook) + len(self.notify_email)

    def retry_delay(self, attempt: int) -> float:
        """Seconds between failed attempt ``attempt`` (1-based) and the next."""
        return float(min(self.notify_retry_delay * 2 ** (attempt - 1), MAX_RETRY_DELAY))


#: The keys of ``[emergency]`` that L{parse_notify} reads.
NOTIFY_KEYS = tuple(f.name for f in attrs.fields(NotifyConfig))


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or _CONTROL.search(value):
        raise _fail(name, "must be a string without control characters")
    return value


def parse_notify(table: Mapping[str, object]) -> NotifyConfig:
    """
    The L{NOTIFY_KEYS} of an ``[emergency]`` table (other keys are ignored:
    the routing's).

    Raises:
        ConfigError: a bad value, naming ``emergency.<key>``.
    """
    values: dict[str, Any] = {}
    for key in ("notify_webhook", "notify_webhook_ca", "smtp_from", "smtp_username",
                "smtp_password_file", "smtp_ca", "smtp_host", "smtp_tls"):  # fmt: skip
        if key in table:
            values[key] = _text(key, table[key])
    if "notify_extensions" in table:
        values["notify_extensions"] = _string_list(
            "notify_extensions",
            table["notify_extensions"],
            _EXTENSION.fullmatch,
            "extension numbers",
        )
    if "notify_email" in table:
        values["notify_email"] = _string_list(
            "notify_email", table["notify_email"], is_email_address, "email addresses"
        )
    webhook = values.get("notify_webhook", "")
    if webhook and not _is_https_url(webhook):
        raise _fail(
            "notify_webhook", f"must be an https:// URL with a host, got {json.dumps(webhook)}"
        )
    sender = values.get("smtp_from", "")
    if sender and not is_email_address(sender):
        raise _fail("smtp_from", f"must be an email address, got {json.dumps(sender)}")
    host = values.get("smtp_host", "")
    if host and not is_host(host):
        raise _fail("smtp_host", f"must be a host name or IP address, got {json.dumps(host)}")
    if values.get("notify_email") and not (host and sender):
        raise _fail("notify_email", "needs smtp_host and smtp_from")
    if values.get("smtp_tls", "starttls") not in SMTP_TLS_MODES:
        raise _fail("smtp_tls", f"must be one of {', '.join(SMTP_TLS_MODES)}")
    if values.get("smtp_username") and not values.get("smtp_password_file"):
        raise _fail("smtp_password_file", "must be set when smtp_username is")
    if values.get("smtp_username") and values.get("smtp_tls", "starttls") != "starttls":
        raise _fail("smtp_tls", 'must be "starttls" with smtp_username: no password in clear')
    if "smtp_port" in table:
        port = table["smtp_port"]
        if not _is_int(port) or not 1 <= port <= 65535:  # type: ignore[operator]
            raise _fail("smtp_port", f"must be an integer 1..65535, got {port!r}")
        values["smtp_port"] = port
    if "notify_attempts" in table:
        attempts = table["notify_attempts"]
        if not _is_int(attempts) or not 1 <= attempts <= 10:  # type: ignore[operator]
            raise _fail("notify_attempts", f"must be an integer 1..10, got {attempts!r}")
        values["notify_attempts"] = attempts
    if "notify_retry_delay" in table:
        values["notify_retry_delay"] = _number(
            "notify_retry_delay", table["notify_retry_delay"], 0.1, MAX_RETRY_DELAY
        )
    if "notify_timeout" in table:
        values["notify_timeout"] = _number("notify_timeout", table["notify_timeout"], 1.0, 120.0)
    return NotifyConfig(**values)


def _is_https_url(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return False
    printable = url.isascii() and url.isprintable() and " " not in url
    return parts.scheme == "https" and bool(parts.hostname) and printable and len(url) <= MAX_URL


# -- what a notification says ------------------------------------------------------------


def _clean(value: object, limit: int = MAX_FIELD) -> str:
    """``value`` as one line of at most ``limit`` characters (control characters spaced)."""
    text = _CONTROL.sub(" ", "" if value is None else str(value)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _civic(civic: Mapping[str, str]) -> dict[str, str]:
    """A civic address (RFC 5139 element names) as a JSON object of its non-empty elements."""
    return {_clean(k, 32): _clean(v) for k, v in civic.items() if v}


@attrs.frozen
class EmergencyNotice:
    """
    What every channel says of one emergency call (built once, when it starts).

    Attributes:
        subject: one line (email subject).
        text: the plain-text message (SIP MESSAGE, email body).
        document: the webhook's JSON object.
    """

    subject: str
    text: str
    document: Mapping[str, Any]

    @classmethod
    def of(cls, call: EmergencyCall) -> EmergencyNotice:
        """The notice of ``call``."""
        when = datetime.datetime.fromtimestamp(float(call.started_at), datetime.UTC)
        at = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        extension, name = _clean(call.extension, 64), _clean(call.caller_name)
        callback, dialled = _clean(call.callback_number, 64), _clean(call.dialled, 64)
        location = _clean(call.location_text, 2 * MAX_FIELD)
        default = bool(call.location_is_default)
        kind = TEST_MARKER if call.test else f"EMERGENCY CALL ({dialled})"
        who = f"{extension} ({name})" if name else extension
        where = location + (
            " [site default: the phone has no location of its own]" if default else ""
        )
        subject = f"{kind} from {who}"
        text = "\r\n".join([
            f"{kind}: extension {who} dialled {dialled}",
            f"Callback number: {callback}",
            f"Location: {where}",
            f"Time: {at}",
        ]) + "\r\n"  # fmt: skip
        document = {
            "event": "emergency_call",
            "test": bool(call.test),
            "call_id": _clean(call.call_id),
            "extension": extension,
            "caller_name": name,
            "callback_number": callback,
            "dialled": dialled,
            "location": {
                "name": _clean(call.location_name),
                "text": location,
                "civic": _civic(call.civic),
                "default": default,
            },
            "started_at": at,
            "node": _clean(call.node),
        }
        return cls(subject, text, document)

    def json(self) -> bytes:
        """The webhook body."""
        return json.dumps(self.document, ensure_ascii=False, sort_keys=True).encode()


# -- delivery with retries -----------------------------------------------------------------


class NotifyFailed(Exception):
    """One attempt did not deliver; the message says why (never a secret)."""


class Channel(Protocol):
    """One way of notifying: SIP MESSAGE, webhook or email (L{warden.features.e911_channels})."""

    @property
    def name(self) -> str:
        """``sip``, ``webhook`` or ``email`` (the metric's label)."""

    @property
    def targets(self) -> Sequence[str]:
        """Whom it notifies."""

    def describe(self, target: str) -> str:
        """``target`` as logs may show it."""

    def send(self, target: str, notice: EmergencyNotice) -> Deferred[None]:
        """Deliver ``notice`` to ``target``; fails with L{NotifyFailed}."""


@attrs.frozen
class Attempt:
    """One attempt's outcome, as logged."""

    call_id: str
    channel: str
    target: str
    attempt: int
    outcome: str
    reason: str = ""


@implementer(IEmergencyObserver)
class EmergencyNotifier:
    """
    The emergency observer that notifies (``IEmergencyObserver``): each call
    is announced on every channel to every target, each target retried on its
    own; the call is never waited for nor failed by a notification.

    Args:
        clock: for retries and attempt timeouts.
        channels: the configured channels with their targets.
        config: attempts, delays and timeout.
    """

    log = Logger()

    def __init__(
        self, clock: IReactorTime, channels: Sequence[Channel], config: NotifyConfig
    ) -> None:
        self.clock = clock
        self.channels = tuple(channels)
        self.config = config
        #: The latest attempts, oldest first.
        self.history: collections.deque[Attempt] = collections.deque(maxlen=HISTORY)
        #: Attempts waiting for their time, each with how to give it up.
        self._pending: dict[IDelayedCall, Callable[[], None]] = {}
        self._running: set[Deferred[None]] = set()
        self._stopped = False

    def emergency_call_started(self, call: EmergencyCall) -> None:
        """
        Notify every target of ``call``: the first attempts start in the next
        turn of the reactor, once the call's INVITE has gone out.
        """
        if self._stopped or not self.channels:
            return
        try:
            notice = EmergencyNotice.of(call)
            call_id = _clean(call.call_id)
        except Exception:  # a bug must not touch the call: logged, and nothing sent
            self.log.failure("Emergency notification not built")
            return

        def start() -> None:
            self._pending.pop(delayed, None)
            for channel in self.channels:
                for target in channel.targets:
                    self._attempt(call_id, channel, target, notice, 1)

        def abandon() -> None:
            for channel in self.channels:
                for target in channel.targets:
                    entry = Attempt(call_id, channel.name, target, 1, "failed", STOPPING)
                    self._record(entry, channel)

        delayed = self.clock.callLater(0, start)
        self._pending[delayed] = abandon

    def _attempt(
        self, call_id: str, channel: Channel, target: str, notice: EmergencyNotice, attempt: int
    ) -> None:
        try:
            sending = channel.send(target, notice)
        except Exception as e:
            sending = defer.fail(e)
        sending.addTimeout(self.config.notify_timeout, self.clock)
        self._running.add(sending)

        def done(result: Failure | None) -> None:
            self._running.discard(sending)
            if isinstance(result, Failure):
                reason = STOPPING if self._stopped else _reason(result)
                self._failed(call_id, channel, target, notice, attempt, reason)
            else:
                self._record(Attempt(call_id, channel.name, target, attempt, "delivered"), channel)

        sending.addBoth(done)

    def _failed(
        self,
        call_id: str,
        channel: Channel,
        target: str,
        notice: EmergencyNotice,
        attempt: int,
        reason: str,
    ) -> None:
        last = attempt >= self.config.notify_attempts or self._stopped
        outcome = "failed" if last else "retried"
        self._record(Attempt(call_id, channel.name, target, attempt, outcome, reason), channel)
        if last:
            return

        def again() -> None:
            self._pending.pop(delayed, None)
            self._attempt(call_id, channel, target, notice, attempt + 1)

        def abandon() -> None:
            entry = Attempt(call_id, channel.name, target, attempt + 1, "failed", STOPPING)
            self._record(entry, channel)

        delayed = self.clock.callLater(self.config.retry_delay(attempt), again)
        self._pending[delayed] = abandon

    def _record(self, entry: Attempt, channel: Channel) -> None:
        self.history.append(entry)
        NOTIFICATIONS.labels(entry.channel, entry.outcome).inc()
        emit = self.log.info if entry.outcome == "delivered" else self.log.warn
        emit(
            "Emergency notification of call {call_id} by {channel} to {target}:"
            " attempt {attempt}/{attempts} {outcome}{reason}",
            call_id=entry.call_id,
            channel=entry.channel,
            target=channel.describe(entry.target),
            attempt=entry.attempt,
            attempts=self.config.notify_attempts,
            outcome=entry.outcome,
            reason=f" ({entry.reason})" if entry.reason else "",
        )

    def stop(self) -> None:
        """
        Give up the attempts waiting for their time and those in flight
        (shutdown): each is logged and counted as failed.
        """
        self._stopped = True
        pending, self._pending = self._pending, {}
        for delayed, abandon in pending.items():
            if delayed.active():
                delayed.cancel()
                abandon()
        for running in list(self._running):
            running.cancel()


def _reason(failure: Failure) -> str:
    """Why an attempt failed, in a few words."""
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return "timed out"
    if failure.check(NotifyFailed):
        return _clean(failure.getErrorMessage(), 200)
    kind = failure.type.__name__ if failure.type is not None else "error"
    return _clean(f"{kind}: {failure.getErrorMessage()}", 200)


class NotifierService(service.Service):
    """Stops the notifier's retries when Warden stops."""

    def __init__(self, notifier: EmergencyNotifier) -> None:
        self.notifier = notifier

    def stopService(self) -> Deferred[None] | None:
        """Cancel pending retries."""
        self.notifier.stop()
        result: Deferred[None] | None = super().stopService()
        return result


@implementer(IPlugin, IWardenPlugin, IEmergencyObserver)
class EmergencyNotifyPlugin:
    """
    The on-site notifications of emergency calls as a plugin: an observer of
    the ``e911`` plugin (L{IEmergencyObserver}), configured by the
    ``notify_*`` and ``smtp_*`` keys of its ``[emergency]`` section.
    """

    name = "e911notify"
    description = (
        "On-site notification of emergency calls: SIP MESSAGE, HTTPS webhook, email"
        " ([emergency] notify_*, smtp_*)"
    )
    sections: tuple[str, ...] = ()
    needs: tuple[str, ...] = ("sip", "e911")
    provides: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.notifier: EmergencyNotifier | None = None

    def parse_section(
        self, name: str, table: Mapping[str, object], filename: str | None
    ) -> object:
        """It owns no section (``[emergency]`` is the ``e911`` plugin's)."""
        raise KeyError(name)

    def make(self, context: BuildContext) -> None:
        """
        The channels ``[emergency]`` configures, on the SIP service's
        transactions and the reactor; their retries stop with Warden.

        Raises:
            ConfigError: the SMTP password file or a CA bundle cannot be read.
        """
        from warden.features.e911_channels import build_channels
        from warden.features.e911_config import EmergencyConfig
        from warden.sip.service import SipService

        section = context.config.plugin_sections.get("emergency", EmergencyConfig())
        assert isinstance(section, EmergencyConfig)
        config = section.notify
        password = ""
        if config.notify_email and config.smtp_username:
            password = read_password(
                "", config.smtp_password_file, "", "emergency.smtp_password_file"
            )
        sip = context.need("sip", SipService)
        channels = build_channels(
            context.reactor, config, sip, context.config.realm, password,
            context.config.security.fips,
        )  # fmt: skip
        self.notifier = EmergencyNotifier(context.reactor, channels, config)
        if channels:
            context.add_service(NotifierService(self.notifier))

    def emergency_call_started(self, call: EmergencyCall) -> None:
        """Notify every configured target of ``call`` (in the background)."""
        if self.notifier is not None:
            self.notifier.emergency_call_started(call)


plugin = EmergencyNotifyPlugin()
