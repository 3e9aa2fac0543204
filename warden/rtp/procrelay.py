"""
The built-in relay in a media process of its own (``[media] relay_process =
true``, ADR 0033): an L{warden.interfaces.IMediaRelay} in the SIP process that
starts, drives and restarts L{warden.rtp.mediaproc}.

Each session has a *mirror* here, a L{MediaSession} without sockets: it takes
every description and signalling address first, so ``offer_from`` and
``answer_from`` answer at once with the same SDP (and the same hold state, SRTP
negotiation and refusals) as the in-process relay; the same calls then go to
the media process, with Warden's SRTP keys of each leg, where the relay's own
copy of the session applies them to the packets. What only the packets know
comes back as events: DTMF digits (``on_dtmf``), the media timeout
(``on_timeout``), tapped audio for a call recorder (``tap``) and, every check
interval, each session's counters (``stats()``: at most one interval old) and
the packet metrics. A released session's call record waits for the process's
answer to the release, which carries the session's final counters
(``final_stats()``); without it within L{FINAL_STATS_TIMEOUT} (or when the
process dies) the record gets the last report, marked ``counters_stale``.

When the media process dies, every call's media is gone: each live session's
``on_timeout`` fires (the calls are hung up), allocations waiting fail with
L{MediaError} (503), and the process is started again after ``restart_delay``
seconds (doubling, up to a minute, while it keeps dying within ten seconds).

With ``[media] relay_processes`` above 1, L{ProcessRelays} runs that many
media processes, each a L{ProcessRelay} with its own slice of the port range
(L{warden.rtp.ports.split_ports}); each call goes to the one holding the fewest sessions (ADR
0033, amendment of 7 December).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.interfaces import IMediaRelay, IMediaSession, IMediaTap
from warden.model.media import SIDES, MediaSide
from warden.rtp import metrics
from warden.rtp.checks import SessionChecks
from warden.rtp.control import ControlError, FrameReader, frame, pack, unpack
from warden.rtp.errors import MediaError
from warden.rtp.mediaproc import FORWARDED_METRICS, metric_key
from warden.rtp.policy import MediaPolicy
from warden.rtp.ports import split_ports
from warden.rtp.session import MediaSession, RelayProtocol

__all__ = [
    "MediaProcessProtocol",
    "ProcessRelay",
    "ProcessRelays",
    "ProcessSession",
    "process_relay",
    "spawn_media_process",
]

#: Starts the media process with this protocol; returns its transport.
Spawn = Callable[[ProcessProtocol], object]
#: Seconds an allocation waits for the media process before failing (503).
ALLOCATE_TIMEOUT = 5.0
#: Seconds a released session's call record waits for the process's final count.
FINAL_STATS_TIMEOUT = 2.0
MAX_RESTART_DELAY = 60.0
#: A process that lived at least this long restarts after the first delay again.
STABLE_SECONDS = 10.0
_COUNTERS: dict[str, Any] = {
    metric_key("warden_rtp_packets_relayed_total", {}): metrics.PACKETS_RELAYED,
    metric_key("warden_rtp_bytes_relayed_total", {}): metrics.BYTES_RELAYED,
    metric_key("warden_rtp_lost_packets_total", {}): metrics.LOST,
    metric_key("warden_rtp_dtmf_events_total", {}): metrics.DTMF_EVENTS,
    metric_key("warden_media_timeouts_total", {}): metrics.TIMEOUTS,
    metric_key("warden_media_bind_failures_total", {}): metrics.BIND_FAILURES,
    **{
        metric_key("warden_rtp_packets_dropped_total", {"reason": r}): metrics.DROPPED[r]
        for r in metrics.DROP_REASONS
    },
}
assert set(_COUNTERS) == {metric_key(n, labels) for n, labels in FORWARDED_METRICS}


def _buffer_empty(writer: Any) -> bool:
    """Whether Twisted's writer for the pipe holds nothing not yet written."""
    try:
        return not writer._tempDataBuffer and writer.offset >= len(writer.dataBuffer)
    except AttributeError:  # another writer: let it keep the order
        return False


def spawn_media_process(reactor: Any, protocol: ProcessProtocol) -> IProcessTransport:
    """Start ``python -m warden.rtp.mediaproc`` with pipes on 0, 1 and 2."""
    executable = sys.executable
    return reactor.spawnProcess(  # type: ignore[no-any-return]
        protocol,
        executable,
        [executable, "-m", "warden.rtp.mediaproc"],
        env=dict(os.environ),
        childFDs={0: "w", 1: "r", 2: "r"},
    )


class MediaProcessProtocol(ProcessProtocol):
    """One run of the media process: frames in and out, its log copied."""

    log = Logger()

    def __init__(self, relay: ProcessRelay) -> None:
        self.relay = relay
        self.reader = FrameReader()
        self._err = b""
        self.ended = False
        # Frames held back until the next frame sent at once, or the end of
        # the reactor's turn (L{send} with ``now=False``).
        self._held: list[bytes] = []
        self._flush_call: IDelayedCall | None = None

    def send(self, message: dict[str, Any], now: bool = True) -> None:
        """
        Write ``message`` to the process. ``now``: written before this returns
        (an SDP a phone is about to get over UDP in the same turn must reach
        the process before the phone's first packet does; an allocation is
        waited for). Otherwise it goes with the next message sent at once, or
        at the end of the turn, whichever comes first: one write, one wake-up
        of the process, instead of one per message.
        """
        if self.transport is None or self.ended:
            return
        self._held.append(frame(message))
        if now:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self.relay.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Write every held frame to the pipe now."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if not self._held or self.transport is None or self.ended:
            self._held.clear()
            return
        data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
        self._held.clear()
        writer = getattr(self.transport, "pipes", {}).get(0)
        if writer is None:  # not a real process (tests): its transport takes it
            self.transport.write(data)
            return
        if _buffer_empty(writer):
            # Straight to the (non-blocking) pipe: when it all fits, as it
            # does unless the process is far behind, the reactor never has
            # to watch the pipe for room (two epoll changes per message).
            try:
                written = os.write(writer.fileno(), data)
            except OSError:  # full (EAGAIN), or broken: the writer reports that
                written = 0
            data = data[written:]
        if data:
            self.transport.write(data)
            writer.doWrite()

    def outReceived(self, data: bytes) -> None:
        try:
            for message in self.reader.feed(data):
                self.relay.event(self, message)
        except ControlError as e:
            self.log.error("Media process sent garbage, stopping it: {error}", error=e)
            self.kill()

    def errReceived(self, data: bytes) -> None:
        lines = (self._err + data).split(b"\n")
        self._err = lines.pop()[-4096:]
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.log.info("media process: {line}", line=text[:1000])

    def kill(self) -> None:
        if self.transport is not None and not self.ended:
            try:
                self.transport.signalProcess("KILL")
            except Exception:  # already gone
                self.log.debug("Media process already gone")

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        self._held.clear()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self.relay.process_ended(self, reason)


@implementer(IMediaRelay)
class ProcessRelay:
    """
    Anchors calls' media in a media process running the built-in relay.

    Args:
        clock: time for the restart delay, allocation timeouts and the gauges.
        spawn: starts the process with a protocol (L{spawn_media_process}).
        settings: the relay's settings for the process's ``configure``.
        address: the media address (the mirrors' policy needs it).
        policy: the relay's media rules (the same as the process's).
        restart_delay: seconds before a dead process is started again.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        spawn: Spawn,
        settings: Mapping[str, Any],
        policy: MediaPolicy,
        restart_delay: float = 1.0,
    ) -> None:
        self.clock = clock
        self.settings = dict(settings)
        self.policy = policy
        self.restart_delay = restart_delay
        self.restarts = 0
        self._spawn = spawn
        self._process: MediaProcessProtocol | None = None
        self._started_at = 0.0
        self._delay = restart_delay
        self._restart: IDelayedCall | None = None
        self._closed = False
        self._next = 0
        # Allocations waiting for the process's answer: call, Deferred, timer, and
        # whether a failure is counted (not when another relay of the group may
        # still take the call).
        self._waiting: dict[
            int, tuple[str, defer.Deferred[IMediaSession], IDelayedCall, bool]
        ] = {}
        self._live: dict[int, ProcessSession] = {}
        # Released sessions waiting for their final counters, by number.
        self._releasing: dict[int, tuple[ProcessSession, IDelayedCall, MediaProcessProtocol]] = {}
        self._metric_totals: dict[str, float] = {}
        #: The relays this one is one of (L{ProcessRelays}); the gauges count them all.
        self.group: ProcessRelays | None = None
        self._checks: SessionChecks[ProcessSession] = SessionChecks(
            clock, 60.0, lambda s, now: None, self._gauge_ports, "Media process gauges",
            self._gauge_sessions,
        )  # fmt: skip
        self._start()

    def _gauge_ports(self) -> int:
        return (self.group or self).ports_in_use()

    def _gauge_sessions(self) -> int:
        return (self.group or self).session_count()

    def session_count(self) -> int:
        """Sessions allocated and not released."""
        return len(self._live)

    @property
    def running(self) -> bool:
        """Whether the media process is up (a call can be allocated)."""
        return self._process is not None and not self._closed

    @property
    def load(self) -> int:
        """Sessions held and allocations waiting for the process's answer."""
        return len(self._live) + len(self._waiting)

    # -- the process ---------------------------------------------------------------------

    def _start(self) -> None:
        self._restart = None
        if self._closed:
            return
        process = MediaProcessProtocol(self)
        self._process = process
        self._metric_totals = {}
        self._started_at = self.clock.seconds()
        try:
            self._spawn(process)
        except Exception:
            self.log.failure("Could not start the media process")
            self._process = None
            self._schedule_restart()
            return
        process.send({"op": "configure", "settings": self.settings})

    def _schedule_restart(self) -> None:
        if self._closed or self._restart is not None:
            return
        self._restart = self.clock.callLater(self._delay, self._start)
        self._delay = min(self._delay * 2, MAX_RESTART_DELAY)

    def process_ended(self, process: MediaProcessProtocol, reason: Failure) -> None:
        """The media process exited: every call's media is lost; start it again."""
        for number, (session, timer, sent_to) in list(self._releasing.items()):
            if sent_to is process:
                del self._releasing[number]
                timer.cancel()
                session.finish(None, "the media process ended")
        if process is not self._process:
            return
        self._process = None
        if self._closed:
            return
        if self.clock.seconds() - self._started_at >= STABLE_SECONDS:
            self._delay = self.restart_delay
        self.restarts += 1
        self.log.error(
            "Media process ended ({reason}); media of {n} call(s) lost, restarting",
            reason=reason.getErrorMessage(),
            n=len(self._live),
        )
        for number, (_, d, timer, _) in list(self._waiting.items()):
            del self._waiting[number]
            timer.cancel()
            d.errback(MediaError("the media process ended"))
        for session in list(self._live.values()):
            session.lost("the media process ended")
        self._schedule_restart()

    def send(self, message: dict[str, Any], now: bool = True) -> None:
        """A command to the media process (dropped while it is down); see
        L{MediaProcessProtocol.send} for ``now``."""
        if self._process is not None:
            self._process.send(message, now)

    def event(self, process: MediaProcessProtocol, message: dict[str, Any]) -> None:
        """A message from the media process."""
        op = message["op"]
        if process is not self._process and op != "released":  # (closing: answers)
            return
        try:
            if op == "released":
                self._released(message)
            elif op == "allocated":
                self._allocated(message)
            elif op == "stats":
                self._stats(message)
            else:
                number = message.get("id")
                session = self._live.get(number) if isinstance(number, int) else None
                if session is not None:
                    session.event(op, message)
        except (ControlError, KeyError, TypeError, ValueError) as e:
            self.log.error("Bad {op} from the media process: {error}", op=op, error=e)

    # -- IMediaRelay -----------------------------------------------------------------------

    def allocate(self, call_id: str, counted: bool = True) -> defer.Deferred[IMediaSession]:
        """
        Bind a session in the media process; MediaError when it cannot (503).
        ``counted=False``: a failure is not counted in
        ``warden_media_allocation_failures_total`` (L{ProcessRelays} counts a
        call's failure once, when no process could take it).
        """
        if self._process is None or self._closed:
            if counted:
                metrics.ALLOCATION_FAILURES.inc()
            return defer.fail(MediaError("the media process is not running"))
        self._next += 1
        number = self._next
        d: defer.Deferred[IMediaSession] = defer.Deferred()
        timer = self.clock.callLater(ALLOCATE_TIMEOUT, self._allocate_timeout, number)
        self._waiting[number] = (call_id, d, timer, counted)
        self.send({"op": "allocate", "id": number, "call": call_id})
        return d

    def _allocate_timeout(self, number: int) -> None:
        _, d, _, counted = self._waiting.pop(number)
        if counted:
            metrics.ALLOCATION_FAILURES.inc()
        self.send({"op": "release", "id": number})  # if it comes late after all
        d.errback(MediaError("the media process did not answer"))

    def _allocated(self, message: dict[str, Any]) -> None:
        number = message["id"]
        waiting = self._waiting.pop(number, None) if isinstance(number, int) else None
        if waiting is None:
            return
        call_id, d, timer, counted = waiting
        timer.cancel()
        if "error" in message:
            if counted:
                metrics.ALLOCATION_FAILURES.inc()
            d.errback(MediaError(str(message["error"])[:200]))
            return
        try:
            side_a, side_b = (_side_of(message[s]) for s in SIDES)
        except (KeyError, TypeError, ValueError) as e:
            self.send({"op": "release", "id": number})
            d.errback(MediaError(f"the media process answered badly: {e}"))
            return
        session = ProcessSession(self, number, call_id, side_a, side_b)
        self._live[number] = session
        self._checks.add(session)
        d.callback(session)

    def _stats(self, message: dict[str, Any]) -> None:
        sessions = message["sessions"]
        if not isinstance(sessions, dict):
            raise ValueError("sessions is not an object")
        for number, stats in sessions.items():
            session = self._live.get(int(number))
            if session is not None and isinstance(stats, dict):
                session.merge_stats(stats)
        totals = message.get("metrics")
        if isinstance(totals, dict):
            for key, counter in _COUNTERS.items():
                value = totals.get(key)
                if isinstance(value, (int, float)):
                    before = self._metric_totals.get(key, 0.0)
                    if value > before:
                        counter.inc(value - before)
                        self._metric_totals[key] = float(value)

    def _released(self, message: dict[str, Any]) -> None:
        number, stats = message["id"], message["stats"]
        waiting = self._releasing.pop(number, None) if isinstance(number, int) else None
        if waiting is None:
            return
        session, timer, _ = waiting
        timer.cancel()
        if not isinstance(stats, dict) or not all(isinstance(stats.get(s), dict) for s in SIDES):
            session.finish(None, "a bad final report")
            raise ValueError("stats is not an object of sides")
        session.finish(stats)

    def _final_timeout(self, number: int) -> None:
        session, _, _ = self._releasing.pop(number)
        session.finish(None, f"no final report within {FINAL_STATS_TIMEOUT:g} s")

    def flush_metrics(self) -> None:
        """Ask the media process for its counters now (they arrive as ``stats``)."""
        self.send({"op": "report"})

    def sessions(self) -> list[IMediaSession]:
        """Every session allocated and not released."""
        return list(self._live.values())

    def ports_in_use(self) -> int:
        """The media process's ports held for calls: four per session."""
        return 4 * len(self._live)

    def close(self) -> None:
        """Release every session and stop the media process (at shutdown)."""
        for session in list(self._live.values()):
            session.release()
        self._closed = True
        self._checks.stop()
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        process, self._process = self._process, None
        if process is not None and process.transport is not None and not process.ended:
            process.flush()
            process.transport.closeStdin()  # the process stops when its input closes

    def forget(self, session: MediaSession) -> None:
        """Called by a mirror on release: release it in the media process."""
        assert isinstance(session, ProcessSession)
        if self._live.pop(session.number, None) is None:
            return
        self._checks.discard(session)
        self._checks.changed()
        process = self._process
        if process is None:
            session.finish(None, "the media process is not running")
            return
        timer = self.clock.callLater(FINAL_STATS_TIMEOUT, self._final_timeout, session.number)
        self._releasing[session.number] = (session, timer, process)
        process.send({"op": "release", "id": session.number})


class ProcessSession(MediaSession):
    """
    Warden's mirror of a session in the media process (see the module docstring).

    Args:
        relay: the process relay (commands go through it; told on release).
        number: the session's number on the control channel.
        call_id: the call's identifier.
        side_a, side_b: the media process's address and ports for each side.
    """

    def __init__(
        self,
        relay: ProcessRelay,
        number: int,
        call_id: str,
        side_a: MediaSide,
        side_b: MediaSide,
    ) -> None:
        self.number = number
        self._process_relay = relay
        self._tap: IMediaTap | None = None
        self.remote_stats: dict[str, dict[str, Any]] | None = None
        self._final: dict[str, dict[str, Any]] | None = None
        self._final_waiting: list[defer.Deferred[dict[str, dict[str, Any]]]] = []
        protocols = {(s, rtcp): RelayProtocol(s, rtcp) for s in SIDES for rtcp in (False, True)}
        super().__init__(
            relay,  # type: ignore[arg-type]
            call_id, relay.clock, side_a, side_b, protocols, [], policy=relay.policy,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<ProcessSession {self.call_id} a={self.side_a.rtp_port} b={self.side_b.rtp_port}>"

    @property
    def tap(self) -> IMediaTap | None:
        """The call recorder; the media process sends it the relayed packets."""
        return self._tap

    @tap.setter
    def tap(self, tap: IMediaTap | None) -> None:
        was, self._tap = self._tap, tap
        if (was is None) != (tap is None) and not self.released:
            self._command({"op": "tap", "on": tap is not None})

    def _command(self, message: dict[str, Any], now: bool = True) -> None:
        self._process_relay.send({**message, "id": self.number}, now)

    def _description_from(self, side: str, data: bytes, offer: bool) -> bytes:
        onward = super()._description_from(side, data, offer)
        keys = {
            leg: {suite: pack(key) for suite, key in suites.items()}
            for leg, suites in self.srtp_keys().items()
        }
        self._command({"op": "sdp", "side": side, "offer": offer, "sdp": pack(data), "keys": keys})
        return onward

    def signalling_from(self, side: str, *hosts: str) -> None:
        """The phone on ``side`` sends its SIP from ``hosts``; the process is told too."""
        peer = self._peers.get(side)
        before = peer.signalling if peer is not None else None
        super().signalling_from(side, *hosts)  # ValueError for a side that is not a or b
        if self._peers[side].signalling == before:
            return  # nothing changed here, so nothing changes there either
        # With the next description (sent at once) or at the turn's end.
        self._command({"op": "signalling", "side": side, "hosts": list(hosts)}, now=False)

    def signalling_encrypted(self, side: str, encrypted: bool) -> None:
        """Whether ``side``'s phone sends its SIP over TLS; the process is told too."""
        before = self._crypto.is_signalling_encrypted(side) if side in SIDES else None
        super().signalling_encrypted(side, encrypted)  # ValueError for a side not a or b
        if encrypted == before:
            return  # the process's copy already holds this
        self._command({"op": "encrypted", "side": side, "on": encrypted}, now=False)

    def stats(self) -> dict[str, dict[str, Any]]:
        """The media process's last counters (at most one check interval old)."""
        if self.remote_stats is None:
            return super().stats()
        own = super().stats()
        # The direction is the mirror's: it changes with signalling, not packets.
        return {
            side: {**self.remote_stats.get(side, {}), "direction": own[side]["direction"]}
            for side in SIDES
        }

    def merge_stats(self, changes: dict[str, Any]) -> None:
        """A periodic report's counters of this session: those that changed, by side."""
        remote = dict(self.remote_stats or {})
        for side in SIDES:
            counters = changes.get(side)
            if isinstance(counters, dict):
                remote[side] = {**remote.get(side, {}), **counters}
        if remote:
            self.remote_stats = remote

    def final_stats(self) -> defer.Deferred[dict[str, dict[str, Any]]]:
        """
        Once released, the media process's final counters of the session, when
        its answer to the release comes (see L{IMediaSession.final_stats}).
        """
        if not self.released:
            return defer.succeed(self.stats())
        if self._final is not None:
            return defer.succeed(self._final)
        d: defer.Deferred[dict[str, dict[str, Any]]] = defer.Deferred()
        self._final_waiting.append(d)
        return d

    def finish(self, stats: dict[str, dict[str, Any]] | None, why: str = "") -> None:
        """
        The released session's final counters from the media process; None
        when they will not come (``why``): the last report stands, marked stale.
        """
        if self._final is not None:
            return
        if stats is not None:
            self.remote_stats = stats
            final = self.stats()
        else:
            metrics.STALE_RECORDS.inc()
            self.log.warn(
                "Call {call_id}'s record gets the media process's last periodic counters: {why}",
                call_id=self.call_id,
                why=why,
            )
            final = {side: {**c, "counters_stale": True} for side, c in self.stats().items()}
        self._final = final
        waiting, self._final_waiting = self._final_waiting, []
        for d in waiting:
            d.callback(final)

    def idle_for(self, now: float) -> float:
        """Seconds since the last packet (as last reported) or offer/answer."""
        last = self._activity
        for side in (self.remote_stats or {}).values():
            at = side.get("last_packet_at_in") if isinstance(side, dict) else None
            if isinstance(at, (int, float)):
                last = max(last, float(at))
        return max(0.0, now - last)

    def event(self, op: str, message: dict[str, Any]) -> None:
        """An event of this session from the media process."""
        if self.released:
            return
        if op == "dtmf":
            digit, side = str(message["digit"]), str(message["side"])
            if self.on_dtmf is not None and side in SIDES:
                try:
                    self.on_dtmf(side, digit)
                except Exception:
                    self.log.failure("on_dtmf of call {call_id} failed", call_id=self.call_id)
        elif op == "timeout":
            self._fire_timeout()
        elif op == "rtp":
            tap = self._tap
            if tap is not None:
                tap.rtp(
                    str(message["side"]), int(message["ssrc"]), int(message["ts"]),
                    int(message["pt"]), unpack(message["payload"]), float(message["now"]),
                )  # fmt: skip
        elif op == "lost":
            self.lost(str(message.get("error", "")))

    def lost(self, why: str) -> None:
        """The media process lost this call's media: end the call."""
        if self.released:
            return
        self.log.error("Media of call {call_id} lost: {why}", call_id=self.call_id, why=why)
        self._fire_timeout()

    def flush_metrics(self) -> None:
        """Nothing to export: the media process counts the packets."""

    def _hold_music(self) -> None:
        """Nothing to play here: the media process plays the music."""


def _side_of(value: object) -> MediaSide:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError("a side is [address, rtp port, rtcp port]")
    address, rtp, rtcp = value
    if not isinstance(address, str) or not all(
        isinstance(p, int) and 0 < p < 65536 for p in (rtp, rtcp)
    ):
        raise ValueError("a side is [address, rtp port, rtcp port]")
    return MediaSide(address, rtp, rtcp)


@implementer(IMediaRelay)
class ProcessRelays:
    """
    The built-in relay in several media processes (``[media] relay_processes``):
    each call goes to the running one holding the fewest sessions, the next in
    turn among equals. One that is down (restarting) is passed over; with
    none running, allocation fails with L{MediaError} (503). Each process is
    restarted on its own, and a dead one hangs up only its own calls.

    Args:
        relays: one L{ProcessRelay} per media process, each with its own ports.
    """

    def __init__(self, relays: Sequence[ProcessRelay]) -> None:
        if not relays:
            raise ValueError("at least one media process")
        self.relays = list(relays)
        self._turn = 0
        for relay in self.relays:
            relay.group = self

    def allocate(self, call_id: str) -> defer.Deferred[IMediaSession]:
        """
        Bind a session in the least busy running media process; when that
        one cannot (its ports are taken), in the next least busy, and so on.
        """
        count = len(self.relays)
        start, self._turn = self._turn, (self._turn + 1) % count
        order = [self.relays[(start + i) % count] for i in range(count)]
        running = sorted((relay for relay in order if relay.running), key=lambda r: r.load)
        if not running:
            return order[0].allocate(call_id)  # fails: none is running
        return self._allocate_in(running, call_id)

    def _allocate_in(
        self, relays: list[ProcessRelay], call_id: str
    ) -> defer.Deferred[IMediaSession]:
        # Only the last try's failure is the call's, and counted.
        d = relays[0].allocate(call_id, counted=len(relays) == 1)
        if len(relays) > 1:

            def next_one(failure: Failure) -> defer.Deferred[IMediaSession]:
                failure.trap(MediaError)  # type: ignore[no-untyped-call]
                return self._allocate_in(relays[1:], call_id)

            d.addErrback(next_one)
        return d

    def sessions(self) -> list[IMediaSession]:
        """Every session allocated and not released, in every process."""
        return [session for relay in self.relays for session in relay.sessions()]

    def session_count(self) -> int:
        """Sessions allocated and not released, in every process."""
        return sum(relay.session_count() for relay in self.relays)

    def ports_in_use(self) -> int:
        """The ports held for calls in every process."""
        return sum(relay.ports_in_use() for relay in self.relays)

    def flush_metrics(self) -> None:
        """Ask every media process for its counters now."""
        for relay in self.relays:
            relay.flush_metrics()

    def close(self) -> None:
        """Release every session and stop every media process (at shutdown)."""
        for relay in self.relays:
            relay.close()

    @property
    def restarts(self) -> int:
        """Restarts of all the media processes."""
        return sum(relay.restarts for relay in self.relays)


def process_relay(
    clock: IReactorTime,
    spawn: Spawn,
    settings: Mapping[str, Any],
    policy: MediaPolicy,
    processes: int = 1,
) -> ProcessRelay | ProcessRelays:
    """
    The built-in relay in ``processes`` media processes: one L{ProcessRelay},
    or L{ProcessRelays} over that many, each with its slice of the settings'
    port range (L{warden.rtp.ports.split_ports}; ValueError when it is too small).
    """
    if processes == 1:
        return ProcessRelay(clock, spawn, settings, policy)
    slices = split_ports(settings["port_min"], settings["port_max"], processes)
    return ProcessRelays(
        [
            ProcessRelay(clock, spawn, {**settings, "port_min": low, "port_max": high}, policy)
            for low, high in slices
        ]
    )
