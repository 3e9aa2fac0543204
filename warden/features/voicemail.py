"""
Voicemail as a feature plugin (ADR 0022), on by default for every extension
(mailbox number = extension number).

- **Leaving a message.** Before routing, a call to an extension is marked for
  voicemail and rings at most the extension's own ring timeout (``wardenctl
  extension set NUMBER --ring-timeout``), else ``[voicemail] ring_timeout``
  seconds; when it
  fails busy, declined, unanswered or unregistered (486, 600, 603, 408, 480,
  and do-not-disturb's 486) the call goes to the local application
  ``voicemail:<mailbox>``: Warden answers, plays the mailbox's greeting (its
  own, or the default prompt), a beep, and records until ``#``, silence, the
  caller hanging up or ``max_message_seconds``. The message (a WAV file under
  ``<data_dir>/voicemail/<mailbox>/``, and its caller, time and duration in
  L{IVoicemailStore}) is kept unless it is shorter than a second. A mailbox
  holding ``quota_messages`` messages takes no more: the caller is told so.
- **Mailbox access.** ``*97`` opens the caller's own mailbox, ``*98`` asks for
  a mailbox number (local application ``voicemail-access``), both with the
  mailbox's PIN (``wardenctl voicemail pin``, or from the menu; a mailbox
  without a PIN opens only from its own, authenticated extension with
  ``*97``). Wrong PINs count
  in the store; ``pin_attempts`` in a row lock the mailbox for
  ``lockout_seconds``. The DTMF menu (RFC 4733 or SIP INFO): 1 new messages,
  2 saved messages, 3 record the greeting, 4 change the PIN, * hang up; while
  a message plays: 1 replay, 7 delete, 9 save, 6 next, * back. A new message
  listened to becomes saved.
- **Voicemail to email** (L{warden.features.voicemail_email}): a mailbox with
  an email address gets each new message there, the WAV attached, through
  the ``[voicemail] smtp_*`` relay; sent in the background and retried.
- **Message waiting** (L{warden.features.mwi}): ``SUBSCRIBE`` for
  ``message-summary`` (RFC 3842), and every change of a mailbox tells its
  subscribers and, unsolicited, its extension's other registered phones.

The default prompts are 8 kHz WAV files in ``warden/features/prompts``, made
from their texts by ``tools/voicemail_prompts.py``.
"""

from __future__ import annotations

import functools
import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs
from prometheus_client import Counter, Gauge
from twisted.application.internet import TimerService
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from warden import secrets as warden_secrets
from warden.digits import is_digits
from warden.errors import ConfigError, SipError
from warden.features.blf import DialogEventsService
from warden.features.mwi import MessageWaiting
from warden.features.smtp import MailQueue
from warden.features.voicemail_api import VoicemailEndpoints
from warden.features.voicemail_email import check_smtp, mail_queue, voicemail_email
from warden.interfaces import (
    IAdminEndpoints,
    ICallHook,
    IDirectory,
    ILocalApplication,
    IVoicemailStore,
    IWardenPlugin,
)
from warden.model.admin import PluginEndpoint
from warden.model.voicemail import Mailbox, VoicemailMessage
from warden.rtp import g711
from warden.rtp.endpoint import RtpEndpoint
from warden.sip.hooks import CallAttempt, CallHookBase
from warden.sip.local import LocalCall

if TYPE_CHECKING:
    from warden.plugin import BuildContext
    from warden.sip.flow import Flow
    from warden.sip.message import Request, Response

__all__ = ["VoicemailAudio", "VoicemailConfig", "VoicemailPlugin", "plugin", "prompt"]

T = TypeVar("T")

#: Failures of a ringing call that go to voicemail: busy, no answer (timeout,
#: not registered), declined.
TO_VOICEMAIL = frozenset({408, 480, 486, 600, 603})
#: Messages shorter than this are not kept (a caller who hung up at the beep).
MIN_MESSAGE_SECONDS = 1.0
#: Seconds to wait for each digit of a PIN or a menu choice.
DIGIT_TIMEOUT = 8.0
#: Menu prompts played without an answer before Warden hangs up.
MENU_TIMEOUTS = 3
#: Longest mailbox number and PIN read.
MAX_MAILBOX_DIGITS = 16
MIN_PIN_DIGITS = 4
MAX_PIN_DIGITS = 12
#: Longest custom greeting recorded, in seconds.
MAX_GREETING_SECONDS = 60.0
#: The beep before recording: 1 kHz for a quarter of a second.
BEEP = g711.tone(1000, 0.25)
#: Digits that stop a prompt (the menus answer them).
ANY_DIGIT = "0123456789*#"


def _number(minimum: float, integer: bool = False) -> Callable[[Any, Any, Any], None]:
    def validate(instance: Any, attribute: Any, value: Any) -> None:
        ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < minimum:
            kind = "an integer" if integer else "a number"
            raise ConfigError(
                f"voicemail.{attribute.name}", f"must be {kind} >= {minimum:g}, got {value!r}"
            )

    return validate


def _bool(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"voicemail.{attribute.name}", f"must be true or false, got {value!r}")


@attrs.frozen
class VoicemailConfig:
    """
    ``[voicemail]``.

    Attributes:
        enabled: calls go to voicemail and ``*97``/``*98`` open mailboxes.
        ring_timeout: seconds an extension rings before the call goes to its
            mailbox (at most ``[calls] ring_timeout``).
        max_message_seconds: longest message recorded.
        quota_messages: messages a mailbox holds at most.
        silence_seconds: silence that ends a message.
        pin_attempts: wrong PINs in a row that lock a mailbox.
        lockout_seconds: how long a locked mailbox refuses PINs.
        smtp_host ... smtp_password_file: the relay new messages are emailed
            through (L{warden.features.voicemail_email}; ``smtp_host = ""``:
            none).
    """

    SECTION: ClassVar[str] = "voicemail"

    enabled: bool = attrs.field(default=True, validator=_bool)
    ring_timeout: float = attrs.field(default=20.0, validator=_number(1.0))
    max_message_seconds: float = attrs.field(default=180.0, validator=_number(1.0))
    quota_messages: int = attrs.field(default=100, validator=_number(1, integer=True))
    silence_seconds: float = attrs.field(default=5.0, validator=_number(1.0))
    pin_attempts: int = attrs.field(default=3, validator=_number(1, integer=True))
    lockout_seconds: float = attrs.field(default=300.0, validator=_number(0.0))
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = ""
    smtp_tls: str = "starttls"
    smtp_ca: str = ""
    smtp_username: str = ""
    smtp_password_env: str = ""
    smtp_password_file: str = ""


@functools.cache
def prompt(name: str) -> bytes:
    """The 16-bit PCM of the shipped prompt ``name`` (``greeting``, ``0``...)."""
    data = resources.files("warden.features").joinpath("prompts", f"{name}.wav").read_bytes()
    return g711.read_wav(data)


def spoken_number(number: int) -> bytes:
    """``number`` read digit by digit."""
    return b"".join(prompt(d) for d in str(number))


class VoicemailAudio:
    """
    The WAV files of messages and greetings, under ``root``
    (``<data_dir>/voicemail``), each named ``<mailbox>/<file>.wav``. File work
    runs through ``run`` (a thread in production).
    """

    def __init__(
        self, root: Path, run: Callable[[Callable[[], Any]], Deferred[Any]] | None = None
    ) -> None:
        self.root = root
        self._run = run if run is not None else defer.maybeDeferred

    def path(self, name: str) -> Path:
        """The file ``name`` (``1001/<id>.wav``): only such names are accepted."""
        mailbox, _, file = name.partition("/")
        stem = file[: -len(".wav")] if file.endswith(".wav") else ""
        if (
            not is_digits(mailbox)
            or not stem
            or not all(c.isalnum() and c.isascii() for c in stem)
        ):
            raise ValueError(f"not a voicemail file name: {name!r}")
        return self.root / mailbox / file

    def save(self, name: str, pcm: bytes) -> Deferred[int]:
        """Write ``pcm`` as the WAV file ``name`` (atomically); fires with its size."""
        path = self.path(name)
        data = g711.wav_bytes(pcm)

        def write() -> int:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary = path.with_suffix(".tmp")
            with open(temporary, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
            return len(data)

        result: Deferred[int] = self._run(write)
        return result

    def load(self, name: str) -> Deferred[bytes]:
        """The PCM of the WAV file ``name``."""
        path = self.path(name)
        result: Deferred[bytes] = self._run(lambda: g711.read_wav(path.read_bytes()))
        return result

    def remove(self, name: str) -> Deferred[None]:
        """Delete the file ``name`` (gone already is fine)."""
        path = self.path(name)
        result: Deferred[None] = self._run(lambda: path.unlink(missing_ok=True))
        return result


#: The store's messages by folder and the audio's bytes (refreshed after each
#: change and every minute); bounded labels only, never a mailbox number.
MESSAGES = Gauge("warden_voicemail_messages", "Voicemail messages stored", ["folder"])
STORAGE_BYTES = Gauge("warden_voicemail_storage_bytes", "Bytes of voicemail audio stored")
LEFT = Counter("warden_voicemail_messages_left_total", "Voicemail messages recorded")
FULL = Counter("warden_voicemail_mailbox_full_total", "Callers refused by a full mailbox")
PIN_FAILURES = Counter("warden_voicemail_pin_failures_total", "Wrong mailbox PINs entered")
#: Seconds between refreshes of the message gauges.
METRICS_INTERVAL = 60.0


@implementer(IPlugin, IWardenPlugin, ICallHook, ILocalApplication, IAdminEndpoints)
class VoicemailPlugin(CallHookBase):
    """Voicemail per extension, mailbox access with ``*97``/``*98``, message waiting."""

    name = "voicemail"
    description = "Voicemail per extension, *97/*98 mailbox access, MWI ([voicemail])"
    sections: tuple[str, ...] = ("voicemail",)
    needs: tuple[str, ...] = ("stores", "directory", "sip")
    provides: tuple[str, ...] = ("voicemail",)
    applications: tuple[str, ...] = ("voicemail", "voicemail-access")
    methods: tuple[str, ...] = ("SUBSCRIBE",)
    events: tuple[str, ...] = ("message-summary",)

    log = Logger()

    def __init__(self) -> None:
        self.config = VoicemailConfig()
        self.store: IVoicemailStore | None = None
        self.audio: VoicemailAudio | None = None
        self.directory: IDirectory | None = None
        self.clock: IReactorTime | None = None
        self._blocking: Callable[[Callable[[], Any]], Deferred[Any]] = defer.maybeDeferred
        #: Tells phones of a mailbox's changes (RFC 3842; None until built).
        self.mwi: MessageWaiting | None = None
        #: Emails new messages (None without ``[voicemail] smtp_host``).
        self.mailer: MailQueue | None = None
        #: PIN hashes: scrypt, or PBKDF2-HMAC-SHA256 in FIPS mode ([security] fips).
        self.pins = warden_secrets.PasswordHasher()

    def parse_section(
        self, name: str, table: Mapping[str, object], filename: str | None
    ) -> object:
        """``[voicemail]``."""
        known = [f.name for f in attrs.fields(VoicemailConfig)]
        values: dict[str, Any] = dict(table)
        values.update(check_smtp(values))
        for key in table:
            if key not in known:
                raise ConfigError(f"voicemail.{key}", f"unknown key (known: {', '.join(known)})")
        return VoicemailConfig(**values)

    def make(self, context: BuildContext) -> None:
        """The voicemail store on the shared database and the audio under the data dir."""
        from warden.features.callfeatures import dialog_events
        from warden.sip.service import SipService
        from warden.store.backend import Stores
        from warden.store.voicemail import SQLVoicemailStore

        config = context.config.plugin_sections.get("voicemail", VoicemailConfig())
        assert isinstance(config, VoicemailConfig)
        reactor = context.reactor

        def in_thread(f: Callable[[], T]) -> Deferred[T]:
            return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f)

        root = Path(context.config.server.data_dir) / "voicemail"
        self.use(
            SQLVoicemailStore(context.need("stores", Stores).pool),
            VoicemailAudio(root, in_thread),
            context.need("directory", IDirectory),
            reactor,
            config,
            in_thread,
        )
        self.pins = warden_secrets.PasswordHasher(context.config.security.fips)
        sip = context.need("sip", SipService)
        store, directory = self.store, self.directory
        assert store is not None and directory is not None
        self.use_mwi(
            MessageWaiting(
                dialog_events(reactor, directory, sip), store.count_messages,
                sip.location.bindings_for, sip.addressing.flow_for, sip.addressing.via_for,
                context.config.realm,
            )
        )  # fmt: skip
        assert self.mwi is not None
        context.add_service(DialogEventsService(self.mwi))
        if config.smtp_host:
            self.use_mailer(mail_queue(reactor, config, context.config.security.fips))
            assert self.mailer is not None
            context.add_service(self.mailer)
        refresh = TimerService(METRICS_INTERVAL, self.refresh_metrics)
        refresh.clock = reactor
        context.add_service(refresh)
        context.provide("voicemail", self)

    def use_mailer(self, mailer: MailQueue) -> None:
        """Email new messages through ``mailer`` (tests; L{make} builds it from the config)."""
        self.mailer = mailer

    def email_message(self, address: str, message: VoicemailMessage, pcm: bytes) -> None:
        """
        Queue the email of ``message`` (its audio ``pcm``) to ``address``; built
        in a thread, sent in the background (never delays the caller).
        """
        if not address:
            return
        if self.mailer is None:
            self.log.info(
                "Mailbox {mailbox} has an email address but voicemail.smtp_host is not set",
                mailbox=message.mailbox,
            )
            return
        mailer = self.mailer
        what = f"voicemail {message.mailbox}/{message.message_id}"
        built: Deferred[bytes] = self._blocking(
            functools.partial(voicemail_email, self.config.smtp_from, address, message, pcm)
        )
        built.addCallback(lambda data: mailer.submit(address, data, what))
        built.addErrback(lambda f: self.log.failure("Email of {what} not built", f, what=what))

    def refresh_metrics(self) -> Deferred[None]:
        """Set the message and storage gauges from the store's totals."""
        return Deferred.fromCoroutine(self._refresh_metrics())

    async def _refresh_metrics(self) -> None:
        if self.store is None:
            return
        try:
            totals = await self.store.totals()
        except Exception as e:  # the store is down: the next refresh tries again
            self.log.warn("Voicemail metrics not refreshed: {error}", error=e)
            return
        MESSAGES.labels("new").set(sum(t[0] for t in totals.values()))
        MESSAGES.labels("saved").set(sum(t[1] for t in totals.values()))
        STORAGE_BYTES.set(sum(t[2] for t in totals.values()))

    def admin_endpoints(self) -> Sequence[PluginEndpoint]:
        """See L{IAdminEndpoints.admin_endpoints}."""
        return VoicemailEndpoints(
            lambda: self.store, lambda: self.directory, self.delete_message, self._hash_pin
        ).endpoints()

    async def _hash_pin(self, pin: str) -> str:
        hashed: str = await self._blocking(functools.partial(self.pins.hash, pin))
        return hashed

    async def delete_message(self, message: VoicemailMessage) -> None:
        """Forget ``message`` and its audio; phones are told."""
        store, audio, _ = self._parts()
        await store.remove_message(message.mailbox, message.message_id)
        await audio.remove(message.audio)
        self.changed(message.mailbox)

    def use_mwi(self, mwi: MessageWaiting) -> None:
        """Tell phones of mailbox changes through ``mwi`` (tests; L{make} builds it)."""
        self.mwi = mwi

    def changed(self, mailbox: str) -> None:
        """A mailbox's messages changed: message waiting tells its phones."""
        self.refresh_metrics()
        if self.mwi is None:
            return
        self.mwi.changed(mailbox).addErrback(
            lambda f: self.log.failure("Message waiting for {mailbox} failed", f, mailbox=mailbox)
        )

    def handle_request(self, request: Request, flow: Flow) -> Deferred[Response]:
        """SUBSCRIBE for the ``message-summary`` event package (L{warden.features.mwi})."""
        if self.mwi is None or not self.config.enabled:
            raise SipError(489, "Bad Event", (("Allow-Events", "dialog"),))
        return self.mwi.subscribe(request, flow)

    def use(
        self,
        store: IVoicemailStore,
        audio: VoicemailAudio,
        directory: IDirectory,
        clock: IReactorTime,
        config: VoicemailConfig | None = None,
        blocking: Callable[[Callable[[], Any]], Deferred[Any]] | None = None,
    ) -> None:
        """Run on these collaborators (tests; L{make} gives the production ones)."""
        self.store, self.audio, self.directory, self.clock = store, audio, directory, clock
        self.config = config if config is not None else VoicemailConfig()
        if blocking is not None:
            self._blocking = blocking

    @property
    def ready(self) -> bool:
        """Enabled and built."""
        return self.config.enabled and self.store is not None

    # -- call hooks ---------------------------------------------------------------------

    def before_routing(self, attempt: CallAttempt) -> Deferred[None] | None:
        """``*97``/``*98`` to mailbox access; a call to an extension is marked for voicemail."""
        if not self.ready:
            return None
        if attempt.dialled == "*97":
            attempt.dialled = f"voicemail-access:{attempt.caller.number}"
            return None
        if attempt.dialled == "*98":
            attempt.dialled = "voicemail-access:"
            return None
        return Deferred.fromCoroutine(self._mark(attempt))

    async def _mark(self, attempt: CallAttempt) -> None:
        assert self.directory is not None
        if not is_digits(attempt.dialled) or len(attempt.dialled) > MAX_MAILBOX_DIGITS:
            return
        extension = await self.directory.get_extension(attempt.dialled)
        if extension is None or not extension.enabled:
            return
        attempt.marks.add("voicemail")
        if extension.ring_timeout > 0:
            return  # the call controller rings it for the extension's own ring timeout
        ring = self.config.ring_timeout
        attempt.ring_timeout = min(attempt.ring_timeout or ring, ring)

    def routing_failed(self, attempt: CallAttempt, status: int, reason: str) -> str | None:
        """A marked call that failed busy, unanswered or unregistered: its mailbox."""
        if not self.ready or "voicemail" not in attempt.marks or status not in TO_VOICEMAIL:
            return None
        return f"voicemail:{attempt.dialled}"

    # -- local applications -------------------------------------------------------------

    def run_application(self, name: str, argument: str, call: LocalCall) -> Deferred[None]:
        """``voicemail`` leaves a message; ``voicemail-access`` opens a mailbox."""
        if name == "voicemail":
            return Deferred.fromCoroutine(self.leave_message(call, argument))
        return Deferred.fromCoroutine(self.access(call, argument))

    def _parts(self) -> tuple[IVoicemailStore, VoicemailAudio, IReactorTime]:
        assert self.store is not None and self.audio is not None and self.clock is not None
        return self.store, self.audio, self.clock

    async def leave_message(self, call: LocalCall, mailbox: str) -> None:
        """Greeting, beep, recording, and the message kept (or the mailbox is full)."""
        store, audio, clock = self._parts()
        endpoint = call.endpoint
        new, saved = await store.count_messages(mailbox)
        if new + saved >= self.config.quota_messages:
            self.log.info("Mailbox {mailbox} is full: no message taken", mailbox=mailbox)
            FULL.inc()
            await endpoint.play(prompt("mailbox-full"))
            return
        box = await store.get_mailbox(mailbox)
        await endpoint.play(await self._greeting(box), interrupt="#")
        await endpoint.play(BEEP)
        started = clock.seconds()
        recording = await endpoint.record(
            self.config.max_message_seconds, self.config.silence_seconds
        )
        if recording.ended_by == "silence":
            recording = recording.trimmed()
        if recording.seconds < MIN_MESSAGE_SECONDS:
            if recording.ended_by != "hangup":
                await endpoint.play(prompt("goodbye"))
            return
        message_id = uuid.uuid4().hex
        name = f"{mailbox}/{message_id}.wav"
        size = await audio.save(name, recording.pcm)
        message = VoicemailMessage(
            message_id, mailbox, call.caller.number, call.caller.name, started,
            round(recording.seconds, 2), "new", name, size,
        )  # fmt: skip
        await store.add_message(message)
        LEFT.inc()
        self.log.info(
            "Voicemail for {mailbox} from {caller}: {seconds:.1f} s",
            mailbox=mailbox, caller=call.caller.number, seconds=recording.seconds,
        )  # fmt: skip
        self.changed(mailbox)
        self.email_message(box.email, message, recording.pcm)
        if recording.ended_by != "hangup":
            await endpoint.play(prompt("recorded"))

    async def _greeting(self, box: Mailbox) -> bytes:
        if box.greeting:
            assert self.audio is not None
            try:
                pcm: bytes = await self.audio.load(box.greeting)
                return pcm
            except (OSError, ValueError) as e:
                self.log.warn(
                    "Greeting of mailbox {mailbox} unreadable, default played: {error}",
                    mailbox=box.number, error=e,
                )  # fmt: skip
        return prompt("greeting")

    # -- mailbox access -----------------------------------------------------------------

    async def access(self, call: LocalCall, argument: str) -> None:
        """``*97`` (own mailbox: ``argument``) or ``*98`` (asked): PIN, then the menu."""
        endpoint = call.endpoint
        mailbox = argument or await ask(endpoint, prompt("enter-mailbox"), MAX_MAILBOX_DIGITS)
        if not mailbox or not await self._exists(mailbox):
            await endpoint.play(prompt("invalid") + prompt("goodbye"))
            return
        own = bool(argument) and argument == call.caller.number
        if not await self._login(endpoint, mailbox, own):
            return
        await self._menu(endpoint, mailbox)

    async def _exists(self, mailbox: str) -> bool:
        assert self.directory is not None
        if not is_digits(mailbox):
            return False
        extension = await self.directory.get_extension(mailbox)
        return extension is not None

    async def _login(self, endpoint: RtpEndpoint, mailbox: str, own: bool) -> bool:
        """The PIN, with the lockout; a mailbox without one opens only as the owner's ``*97``."""
        store, _, clock = self._parts()
        while True:
            box = await store.get_mailbox(mailbox)
            if not box.pin_hash:
                if own:
                    return True
                await endpoint.play(prompt("no-pin"))
                return False
            if box.locked_until > clock.seconds():
                await endpoint.play(prompt("locked"))
                return False
            if not self.pins.usable(box.pin_hash):
                self._unusable_pin(mailbox, warden_secrets.hash_scheme(box.pin_hash))
                await endpoint.play(prompt("locked"))
                return False
            pin = await ask(endpoint, prompt("enter-pin"), MAX_PIN_DIGITS)
            right = bool(pin) and await self._blocking(
                functools.partial(self.pins.verify, pin, box.pin_hash)
            )
            box = await store.get_mailbox(mailbox)  # other calls may have counted meanwhile
            if right:
                if box.failed_logins or box.locked_until:
                    await store.set_mailbox(attrs.evolve(box, failed_logins=0, locked_until=0.0))
                return True
            failed = box.failed_logins + 1
            PIN_FAILURES.inc()
            self.log.warn("Wrong PIN for mailbox {mailbox} ({failed} in a row)",
                          mailbox=mailbox, failed=failed)  # fmt: skip
            if failed >= self.config.pin_attempts:
                until = clock.seconds() + self.config.lockout_seconds
                await store.set_mailbox(attrs.evolve(box, failed_logins=0, locked_until=until))
                await endpoint.play(prompt("locked"))
                return False
            await store.set_mailbox(attrs.evolve(box, failed_logins=failed))
            await endpoint.play(prompt("wrong-pin"))

    def _unusable_pin(self, mailbox: str, scheme: str) -> None:
        """A PIN hash this mode cannot verify (scrypt in FIPS mode): closed until reset."""
        self.log.warn(
            "Mailbox {mailbox} cannot be opened: its PIN hash is {scheme}, which FIPS mode"
            " ([security] fips) does not use; set the PIN again with wardenctl voicemail"
            " pin {mailbox}",
            mailbox=mailbox,
            scheme=scheme or "unknown",
        )

    async def _menu(self, endpoint: RtpEndpoint, mailbox: str) -> None:
        store, _, _ = self._parts()
        new, saved = await store.count_messages(mailbox)
        endpoint.clear_digits()
        typed = await endpoint.play(  # a choice may be typed during the announcement
            prompt("you-have") + spoken_number(new) + prompt("new-messages")
            + spoken_number(saved) + prompt("saved-messages"),
            interrupt=ANY_DIGIT,
        )  # fmt: skip
        unanswered = 0
        while unanswered < MENU_TIMEOUTS:
            choice, typed = typed or await ask_one(endpoint, prompt("main-menu")), ""
            if not choice:
                unanswered += 1
                continue
            unanswered = 0
            if choice == "1":
                await self._listen(endpoint, mailbox, "new")
            elif choice == "2":
                await self._listen(endpoint, mailbox, "saved")
            elif choice == "3":
                await self._record_greeting(endpoint, mailbox)
            elif choice == "4":
                await self._change_pin(endpoint, mailbox)
            elif choice == "*":
                break
            else:
                await endpoint.play(prompt("invalid"))
        await endpoint.play(prompt("goodbye"))

    async def _listen(self, endpoint: RtpEndpoint, mailbox: str, folder: str) -> None:
        store, audio, _ = self._parts()
        messages = await store.list_messages(mailbox, folder)
        if not messages:
            await endpoint.play(prompt("no-messages"))
            return
        for message in messages:
            try:
                pcm = await audio.load(message.audio)
            except (OSError, ValueError) as e:
                self.log.warn("Voicemail {name} unreadable: {error}", name=message.audio, error=e)
                continue
            choice = await endpoint.play(pcm, interrupt="1679*")
            while True:
                if not choice:
                    choice = await ask_one(endpoint, prompt("message-menu"))
                if choice == "1":
                    choice = await endpoint.play(pcm, interrupt="1679*")
                    continue
                if choice == "7":
                    await self.delete_message(message)
                    await endpoint.play(prompt("deleted"))
                    break
                if choice in ("6", "9", "*", ""):
                    if message.folder == "new":  # heard: saved
                        await store.move_message(mailbox, message.message_id, "saved")
                        self.changed(mailbox)
                    if choice == "9":
                        await endpoint.play(prompt("saved"))
                    if choice in ("*", ""):
                        return
                    break
                choice = ""
                await endpoint.play(prompt("invalid"))
        await endpoint.play(prompt("no-more"))

    async def _record_greeting(self, endpoint: RtpEndpoint, mailbox: str) -> None:
        store, audio, _ = self._parts()
        await endpoint.play(prompt("record-greeting"))
        await endpoint.play(BEEP)
        recording = await endpoint.record(MAX_GREETING_SECONDS, self.config.silence_seconds)
        if recording.ended_by == "silence":
            recording = recording.trimmed()
        if recording.seconds < MIN_MESSAGE_SECONDS or recording.ended_by == "hangup":
            return
        name = f"{mailbox}/greeting.wav"
        await audio.save(name, recording.pcm)
        box = await store.get_mailbox(mailbox)
        await store.set_mailbox(attrs.evolve(box, greeting=name))
        await endpoint.play(prompt("greeting-saved"))

    async def _change_pin(self, endpoint: RtpEndpoint, mailbox: str) -> None:
        store, _, _ = self._parts()
        pin = await ask(endpoint, prompt("new-pin"), MAX_PIN_DIGITS)
        if not valid_pin(pin):
            await endpoint.play(prompt("invalid"))
            return
        hashed = await self._hash_pin(pin)
        box = await store.get_mailbox(mailbox)
        await store.set_mailbox(attrs.evolve(box, pin_hash=hashed))
        self.log.info("PIN of mailbox {mailbox} changed by phone", mailbox=mailbox)
        await endpoint.play(prompt("pin-changed"))


def valid_pin(pin: str) -> bool:
    """4 to 12 ASCII digits."""
    return is_digits(pin) and MIN_PIN_DIGITS <= len(pin) <= MAX_PIN_DIGITS


async def ask(endpoint: RtpEndpoint, question: bytes, limit: int) -> str:
    """
    Play ``question`` and read up to ``limit`` digits ended by ``#`` (typing may
    start during the prompt); "" when nothing was typed.
    """
    endpoint.clear_digits()
    first = await endpoint.play(question, interrupt=ANY_DIGIT)
    if first == "#":
        return ""
    if first == "*":
        return ""
    rest = await endpoint.read_digits(limit - len(first), DIGIT_TIMEOUT)
    return first + rest


async def ask_one(endpoint: RtpEndpoint, question: bytes) -> str:
    """Play ``question`` and wait for one digit ("" after L{DIGIT_TIMEOUT})."""
    endpoint.clear_digits()
    choice = await endpoint.play(question, interrupt=ANY_DIGIT)
    return choice or await endpoint.next_digit(DIGIT_TIMEOUT)


plugin = VoicemailPlugin()
