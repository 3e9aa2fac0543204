"""
Call recording as a feature plugin (ADR 0024): which calls are recorded
(``[recording]``), starting the relay's recorder (L{warden.rtp.recorder}) on
the call's media session, the link from the call record to the file, and the
retention sweep.

``[recording]`` (every key optional; with none set nothing is recorded)::

    always = ["1001"]            # extensions whose calls (made or received) are
                                 # recorded from the answer; "*" for every one
    on_demand = ["*"]            # extensions that may start recording their call
                                 # by dialling the code during it
    always_routes = ["_9NXXNXXXXXX"]   # dialled numbers (dialplan patterns)
    on_demand_routes = []              # whose calls are recorded / may be
    code = "*1"                  # the on-demand code (RFC 4733 or SIP INFO DTMF)
    directory = "recordings"     # under the data directory (backed up with it)
    retention_days = 90          # recordings older are deleted; 0 keeps them
    max_seconds = 14400          # the longest recording

A recording is a stereo WAV file, left the caller, right the callee, at
``<directory>/YYYY/MM/DD/<call_id>.wav`` (UTC date of its start); the call
record keeps that relative name in ``recording`` and how it started in
``recording_info``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
from prometheus_client import Counter
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from warden.config import parse_section
from warden.errors import ConfigError
from warden.interfaces import ICallHook, ICallRecordStore, IWardenPlugin
from warden.model import CallRecord
from warden.rtp.recorder import CallRecorder, RecorderLimits, WriterThread
from warden.rtp.session import MediaSession
from warden.sip.dialplan import RuleError, pattern_regex
from warden.sip.hooks import CallAttempt, CallHookBase

if TYPE_CHECKING:
    from warden.plugin import BuildContext

__all__ = [
    "RecordingConfig",
    "RecordingPlugin",
    "RecordingPolicy",
    "Recordings",
    "delete_recordings",
    "plugin",
]

_NUMBER = re.compile(r"[0-9A-Za-z*#+._-]{1,64}")
_CODE = re.compile(r"[*#][0-9*#]{1,7}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: Seconds between two digits of the on-demand code at most.
DIGIT_TIMEOUT = 5.0
DAY = 86400.0
#: Records unlinked per store call during a sweep.
SWEEP_BATCH = 500

STARTED = Counter(
    "warden_recordings_started_total", "Call recordings started, by trigger", ["trigger"]
)
DELETED = Counter(
    "warden_recordings_deleted_total", "Recording files deleted by the retention sweep"
)


def _fail(key: str, problem: str, value: object) -> ConfigError:
    return ConfigError(f"recording.{key}", f"{problem}, got {value!r}")


def _numbers(key: str) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, tuple) or not all(
            isinstance(v, str) and (v == "*" or _NUMBER.fullmatch(v)) for v in value
        ):
            raise _fail(key, 'must be a list of extension numbers or "*"', value)

    return check


def _patterns(key: str) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            raise _fail(key, "must be a list of dialplan patterns", value)
        for pattern in value:
            try:
                pattern_regex(pattern)
            except RuleError as e:
                raise _fail(key, e.problem, pattern) from None

    return check


def _to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _to_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _number_at_least(key: str, low: float, allow_zero: bool = False) -> Any:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        ok = isinstance(value, float) and value == value and value != float("inf")
        if not ok or not (value >= low or (allow_zero and value == 0)):
            zero = "0 or " if allow_zero else ""
            raise _fail(key, f"must be {zero}a number >= {low:g}", value)

    return check


@attrs.frozen
class RecordingConfig:
    """
    ``[recording]``: see the module docstring.

    Attributes:
        always: extensions ("*": all) whose calls are recorded from the answer.
        on_demand: extensions ("*": all) that may start recording with ``code``.
        always_routes: dialled-number patterns whose calls are recorded.
        on_demand_routes: dialled-number patterns whose calls either party may
            record with ``code``.
        code: the on-demand code, dialled during the call.
        directory: where recordings go; relative to the data directory.
        retention_days: recordings older than this are deleted (0: kept).
        max_seconds: the longest recording; audio after it is not written.
    """

    SECTION: ClassVar[str] = "recording"

    always: tuple[str, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_numbers("always")
    )
    on_demand: tuple[str, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_numbers("on_demand")
    )
    always_routes: tuple[str, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_patterns("always_routes")
    )
    on_demand_routes: tuple[str, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_patterns("on_demand_routes")
    )
    code: str = attrs.field(default="*1")
    directory: str = attrs.field(default="recordings")
    retention_days: float = attrs.field(
        default=0.0, converter=_to_float, validator=_number_at_least("retention_days", 1.0, True)
    )
    max_seconds: float = attrs.field(
        default=14400.0, converter=_to_float, validator=_number_at_least("max_seconds", 1.0)
    )

    @code.validator
    def _check_code(self, attribute: Any, value: Any) -> None:
        if not isinstance(value, str) or not _CODE.fullmatch(value):
            raise _fail("code", "must be * or # and 1-7 more digits, * or #", value)

    @directory.validator
    def _check_directory(self, attribute: Any, value: Any) -> None:
        if not isinstance(value, str) or not value.strip() or "\x00" in value:
            raise _fail("directory", "must be a directory path", value)


class RecordingPolicy:
    """Which calls ``[recording]`` records always, and who may record on demand."""

    def __init__(self, config: RecordingConfig) -> None:
        self.config = config
        self._always_routes = _compile(config.always_routes)
        self._on_demand_routes = _compile(config.on_demand_routes)

    def always(self, caller: str, callee: str, dialled: str) -> bool:
        """Whether the call is recorded from its answer."""
        listed = self.config.always
        return (
            "*" in listed
            or caller in listed
            or callee in listed
            or bool(self._always_routes and self._always_routes.fullmatch(dialled))
        )

    def on_demand(self, number: str, dialled: str) -> bool:
        """Whether the party ``number`` of a call to ``dialled`` may start recording it."""
        listed = self.config.on_demand
        return (
            "*" in listed
            or number in listed
            or bool(self._on_demand_routes and self._on_demand_routes.fullmatch(dialled))
        )

    @property
    def records_anything(self) -> bool:
        """Whether any call can be recorded at all."""
        c = self.config
        return bool(c.always or c.on_demand or c.always_routes or c.on_demand_routes)


def _compile(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{pattern_regex(p)})" for p in patterns))


def recording_name(call_id: str, started_at: float) -> str:
    """The file of a call's recording, relative to the recordings directory."""
    day = time.strftime("%Y/%m/%d", time.gmtime(started_at))
    return f"{day}/{_UNSAFE.sub('_', call_id)[:80] or 'call'}.wav"


def inside(directory: str, name: str) -> str | None:
    """``name`` under ``directory``, or None when it would leave it (a hostile name)."""
    root = os.path.abspath(directory)
    path = os.path.abspath(os.path.join(root, name))
    return path if path.startswith(root + os.sep) else None


def delete_recordings(directory: str, names: Sequence[str], older_than: float) -> int:
    """
    Delete the recordings ``names`` (relative to ``directory``) and any other
    ``.wav`` file under it last written before ``older_than`` (a recording
    whose call record was never written), then the day directories left
    empty. Runs in the recording thread. Fires with how many files went.
    """
    deleted = 0
    for name in names:
        path = inside(directory, name)
        if path is not None:
            try:
                os.remove(path)
                deleted += 1
            except FileNotFoundError:
                pass
    for root, _dirs, files in os.walk(directory, topdown=False):
        for file in files:
            path = os.path.join(root, file)
            try:
                if file.endswith(".wav") and os.stat(path).st_mtime < older_than:
                    os.remove(path)
                    deleted += 1
            except FileNotFoundError:
                pass
        if root != directory:
            try:
                os.rmdir(root)  # only succeeds when empty
            except OSError:
                pass
    return deleted


class Recordings(Service):
    """
    The recordings of one Warden: starts recorders on calls, runs the writer
    thread and the retention sweep.

    Args:
        config: ``[recording]``.
        directory: where recordings go (absolute, or relative to the working
            directory).
        clock: the reactor's time.
        records: the call records (the retention sweep unlinks recordings).
        writer: the thread recordings are written in.
    """

    log = Logger()

    def __init__(
        self,
        config: RecordingConfig,
        directory: str,
        clock: IReactorTime,
        records: ICallRecordStore | None,
        writer: WriterThread | None = None,
    ) -> None:
        self.config = config
        self.policy = RecordingPolicy(config)
        self.directory = directory
        self.clock = clock
        self.records = records
        self.writer = writer or WriterThread()
        self.limits = RecorderLimits(max_seconds=config.max_seconds)
        self._digits: dict[tuple[str, str], tuple[str, float]] = {}
        self._sweep = LoopingCall(lambda: self.sweep())
        self._sweep.clock = clock

    def startService(self) -> None:
        """Start the writer thread and, with a retention, the hourly sweep."""
        super().startService()
        self.writer.start()
        if self.config.retention_days and self.records is not None:
            self._sweep.start(3600.0, now=True).addErrback(
                lambda f: self.log.failure("Recording retention sweep stopped", f)
            )

    def stopService(self) -> None:
        """Stop the sweep; finish the files being written, then stop the thread."""
        super().stopService()
        if self._sweep.running:
            self._sweep.stop()
        self.writer.stop()

    # -- calls ----------------------------------------------------------------------

    def answered(self, attempt: CallAttempt) -> None:
        """Record the call from now if the policy records it always."""
        callee = attempt.callee.number if attempt.callee else ""
        if self.policy.always(attempt.caller.number, callee, attempt.dialled):
            self.start(attempt, "always", "")

    def dtmf(self, attempt: CallAttempt, side: str, digit: str) -> None:
        """A digit of the on-demand code from a party that may record the call."""
        if attempt.recording or not self.policy.records_anything:
            return
        party = attempt.caller if side == "a" else attempt.callee
        number = party.number if party is not None else ""
        if not self.policy.on_demand(number, attempt.dialled):
            return
        code, now = self.config.code, self.clock.seconds()
        key = (attempt.call_id, side)
        typed, last = self._digits.get(key, ("", now))
        if now - last > DIGIT_TIMEOUT:
            typed = ""
        typed = (typed + digit)[-len(code) :]
        if typed == code:
            self._digits.pop(key, None)
            self.start(attempt, "on_demand", number)
        else:
            self._digits[key] = (typed, now)

    def ended(self, attempt: CallAttempt) -> None:
        """Forget the call's digits (its recorder closes with the media session)."""
        for side in ("a", "b"):
            self._digits.pop((attempt.call_id, side), None)

    def start(self, attempt: CallAttempt, trigger: str, by: str) -> bool:
        """Start recording the call; False when it cannot be (no relay session, or one is on)."""
        media = attempt.media
        if media is None or media.tap is not None or attempt.recording:
            return False
        if not isinstance(media, MediaSession):
            # rtpengine relays the media itself: no packet reaches a tap here.
            self.log.warn(
                "Call {call_id} not recorded: recording needs Warden's own media relay",
                call_id=attempt.call_id,
            )
            return False
        now = self.clock.seconds()
        name = recording_name(attempt.call_id, now)
        path = inside(self.directory, name)
        if path is None:
            return False
        media.tap = CallRecorder(path, now, self.writer.submit, self.limits)
        attempt.recording = name
        attempt.recording_info = {"started_at": now, "trigger": trigger}
        if by:
            attempt.recording_info["by"] = by
        STARTED.labels(trigger).inc()
        self.log.info(
            "Recording call {call_id} ({trigger}) to {name}",
            call_id=attempt.call_id,
            trigger=trigger,
            name=name,
        )
        return True

    # -- retention --------------------------------------------------------------------

    def sweep(self) -> Deferred[int]:
        """Delete the recordings older than ``retention_days``; fire with how many."""
        return Deferred.fromCoroutine(self._sweep_once())

    async def _sweep_once(self) -> int:
        if self.records is None or not self.config.retention_days:
            return 0
        now = self.clock.seconds()
        cutoff = now - self.config.retention_days * DAY
        names: list[str] = []
        while True:
            batch = await self.records.expire_recordings(cutoff, now, SWEEP_BATCH)
            names += batch
            if len(batch) < SWEEP_BATCH:
                break
        try:
            count: int = await self.writer.run(
                lambda: delete_recordings(self.directory, names, cutoff)
            )
        except OSError as e:
            self.log.warn("Recording retention sweep failed: {error}", error=e)
            return 0
        DELETED.inc(count)
        if count:
            self.log.info(
                "Deleted {count} recordings older than {days:g} days",
                count=count,
                days=self.config.retention_days,
            )
        return count


@implementer(IPlugin, IWardenPlugin, ICallHook)
class RecordingPlugin(CallHookBase):
    """Call recording: ``[recording]`` policy, stereo WAV files, retention."""

    name = "recording"
    description = "Call recording to stereo WAV: always or on demand (*1), retention ([recording])"
    sections: tuple[str, ...] = ("recording",)
    needs: tuple[str, ...] = ("records",)
    provides: tuple[str, ...] = ("recording",)

    def __init__(self) -> None:
        self.recordings: Recordings | None = None

    def parse_section(self, name: str, table: Any, filename: str | None) -> object:
        """``[recording]`` into a L{RecordingConfig}."""
        return parse_section(RecordingConfig, name, table, filename)

    def make(self, context: BuildContext) -> None:
        """Build L{Recordings} (a service) and provide it as ``recording``."""
        config = context.config.plugin_sections.get("recording")
        if not isinstance(config, RecordingConfig):
            config = RecordingConfig()
        directory = os.path.join(context.config.server.data_dir, config.directory)
        records = context.need("records", ICallRecordStore)
        writer = WriterThread(context.reactor)
        self.recordings = Recordings(config, directory, context.reactor, records, writer)
        context.add_service(self.recordings)
        context.provide("recording", self.recordings)

    def answered(self, attempt: CallAttempt) -> None:
        """Start recording a call the policy records always."""
        if self.recordings is not None:
            self.recordings.answered(attempt)

    def dtmf(self, attempt: CallAttempt, side: str, digit: str) -> None:
        """The on-demand code."""
        if self.recordings is not None:
            self.recordings.dtmf(attempt, side, digit)

    def ended(self, attempt: CallAttempt, record: CallRecord) -> None:
        """Forget the call."""
        if self.recordings is not None:
            self.recordings.ended(attempt)


plugin = RecordingPlugin()
