"""
Warden's media process (ADR 0033): the built-in relay (L{warden.rtp.relay}) in
a process of its own, so the SIP process's work never delays a packet.

Warden starts it as ``python -m warden.rtp.mediaproc`` (L{warden.rtp.procrelay})
and drives it over its standard input and output (L{warden.rtp.control}); its
log goes to standard error, which Warden copies into its own log. It stops
when its standard input closes: when Warden stops, or dies.

Commands (Warden to the process), each naming a session by Warden's number
``id``:

- ``configure``: the relay's settings, once, first.
- ``allocate`` (``call``): bind a session; answered by ``allocated`` with the
  sides' ``[address, rtp, rtcp]`` or an ``error``.
- ``sdp`` (``side``, ``offer``, ``sdp``, ``keys``): the description Warden's
  mirror of the session (L{warden.rtp.procrelay.ProcessSession}) already took,
  with Warden's SRTP keys per leg so both copies agree.
- ``signalling`` (``side``, ``hosts``), ``encrypted`` (``side``, ``on``),
  ``tap`` (``on``), ``release`` (answered by ``released`` with the
  session's final ``stats``); ``report``: send the ``stats`` now.

Events (the process to Warden): ``allocated``; ``released``; ``stats`` (each session's
counters once per check interval, a tenth of the sessions every tenth of it,
and the process's packet metrics once per interval; a session's first report
and ``report``'s carry every counter, the periodic ones after only the
counters that changed, by side, and nothing for a session where none did); ``dtmf`` (``side``,
``digit``); ``timeout``; ``rtp`` (a tapped packet); ``lost`` (a command this
process could not apply: the session's media is no longer what Warden thinks).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.interfaces import IMediaTap
from warden.model.media import SIDES
from warden.rtp import metrics
from warden.rtp.control import ControlError, FrameReader, frame, pack, unpack
from warden.rtp.relay import ListenUDP, MediaRelay
from warden.rtp.session import MediaSession

__all__ = ["FORWARDED_METRICS", "MediaWorker", "metric_totals"]

Send = Callable[[dict[str, Any]], None]
#: Each check interval's report is sent in this many parts, spread over it.
SLICES = 10

#: The packet-path counters the process adds up and Warden exports: (sample
#: name, labels). Counters the signalling path moves (refused destinations,
#: legs by media) are counted by Warden's mirror of each session instead.
FORWARDED_METRICS: tuple[tuple[str, dict[str, str]], ...] = (
    ("warden_rtp_packets_relayed_total", {}),
    ("warden_rtp_bytes_relayed_total", {}),
    ("warden_rtp_lost_packets_total", {}),
    ("warden_rtp_dtmf_events_total", {}),
    ("warden_media_timeouts_total", {}),
    ("warden_media_bind_failures_total", {}),
    *(("warden_rtp_packets_dropped_total", {"reason": r}) for r in metrics.DROP_REASONS),
)


def metric_key(name: str, labels: dict[str, str]) -> str:
    """A forwarded metric's name in a ``stats`` event."""
    return name + "".join(f"/{v}" for v in labels.values())


def metric_totals() -> dict[str, float]:
    """
    This process's totals of L{FORWARDED_METRICS}, from the counters themselves
    (not the registry's collect, which reads every metric, /proc included).
    """
    wanted = {metric_key(name, labels) for name, labels in FORWARDED_METRICS}
    totals = dict.fromkeys(wanted, 0.0)
    for counter in _COUNTERS:
        for family in counter.collect():
            for sample in family.samples:
                key = metric_key(sample.name, dict(sample.labels))
                if key in wanted:
                    totals[key] = float(sample.value)
    return totals


_COUNTERS = (
    metrics.PACKETS_RELAYED, metrics.BYTES_RELAYED, metrics.LOST, metrics.DTMF_EVENTS,
    metrics.TIMEOUTS, metrics.BIND_FAILURES, metrics.PACKETS_DROPPED,
)  # fmt: skip


@implementer(IMediaTap)
class ForwardTap:
    """A session's tap in the media process: each packet goes to Warden's recorder."""

    def __init__(self, number: int, send: Send) -> None:
        self.number = number
        self.send = send

    def rtp(
        self, side: str, ssrc: int, timestamp: int, payload_type: int, payload: bytes, now: float
    ) -> None:
        """Hand the packet to Warden (its tap records it)."""
        self.send(
            {
                "op": "rtp", "id": self.number, "side": side, "ssrc": ssrc, "ts": timestamp,
                "pt": payload_type, "payload": pack(payload), "now": now,
            }
        )  # fmt: skip

    def close(self, now: float) -> None:
        """Nothing to close here: Warden closes its own tap."""


class MediaWorker:
    """
    The relay side of the control channel: applies Warden's commands to a
    L{MediaRelay} and sends back its events.

    Args:
        clock: the relay's clock.
        listen_udp: binds the media sockets (the reactor's, or a fake).
        send: writes one message to Warden.
        calm_collector: called once configured (the process's own:
            L{warden.process.calm_collector}; None in tests).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        listen_udp: ListenUDP,
        send: Send,
        calm_collector: Callable[[], None] | None = None,
    ) -> None:
        self.clock = clock
        self.listen_udp = listen_udp
        self.send = send
        self.calm_collector = calm_collector
        self.relay: MediaRelay | None = None
        self.sessions: dict[int, MediaSession] = {}
        self._interval = 1.0
        # Reports run while sessions exist (like the relay's own check).
        # Each tick reports one of SLICES slices of the sessions (by number), so
        # the work of a report never holds up the packets for long.
        self._stats = LoopingCall.withCount(self._report_slices)
        self._stats.clock = clock
        self._tick = 0
        # What Warden was last told of each session's counters: a periodic
        # report carries only what changed since (Warden merges it).
        self._sent: dict[int, dict[str, dict[str, Any]]] = {}

    def handle(self, message: dict[str, Any]) -> None:
        """Apply one command; a bad one is logged and its session reported lost."""
        op = message["op"]
        try:
            if op == "configure":
                self._configure(message)
            elif op == "allocate":
                self._allocate(message)
            elif op == "report":
                self.report()
            elif op in _SESSION_OPS:
                session = self.sessions.get(_number(message))
                if session is not None:  # else released, or never allocated here
                    _SESSION_OPS[op](self, session, message)
            else:
                raise ControlError(f"unknown command {op!r}")
        except Exception as e:
            self.log.failure("Media command {op} failed", op=op)
            number = message.get("id")
            if isinstance(number, int) and number in self.sessions:
                self.send({"op": "lost", "id": number, "error": str(e)[:200]})

    def _configure(self, message: dict[str, Any]) -> None:
        from warden.rtp.music import HoldMusic
        from warden.rtp.policy import MediaPolicy

        settings = message["settings"]
        music = settings.get("hold_music")
        policy = MediaPolicy(
            settings["latch"], settings["destinations"], settings["latch_packets"],
            settings["own_addresses"], settings["srtp"],
        )  # fmt: skip
        interval = float(settings.get("check_interval", 1.0))
        self.relay = MediaRelay(
            self.clock, self.listen_udp, settings["address"],
            port_range=(settings["port_min"], settings["port_max"]),
            interface=settings["interface"], media_timeout=float(settings["timeout"]),
            check_interval=interval, policy=policy,
            hold_music=HoldMusic(_music_frames(music)) if music else None,
        )  # fmt: skip
        self._interval = interval
        if self.calm_collector is not None:
            self.calm_collector()  # the relay and its music live as long as the process

    def _allocate(self, message: dict[str, Any]) -> None:
        number, call_id = _number(message), message["call"]
        if self.relay is None:
            raise ControlError("allocate before configure")
        d = self.relay.allocate(str(call_id))

        def allocated(session: Any) -> None:
            assert isinstance(session, MediaSession)
            self.sessions[number] = session
            session.signalling_metrics = False  # Warden's mirror counts those
            if not self._stats.running:
                self._stats.start(self._interval / SLICES, now=False)
            session.on_timeout = lambda: self.send({"op": "timeout", "id": number})
            session.on_dtmf = lambda side, digit: self.send(
                {"op": "dtmf", "id": number, "side": side, "digit": digit}
            )
            sides = {
                s: [side.address, side.rtp_port, side.rtcp_port]
                for s, side in (("a", session.side_a), ("b", session.side_b))
            }
            self.send({"op": "allocated", "id": number, **sides})

        def failed(failure: Failure) -> None:
            self.send({"op": "allocated", "id": number, "error": failure.getErrorMessage()})

        d.addCallbacks(allocated, failed)

    def _sdp(self, session: MediaSession, message: dict[str, Any]) -> None:
        side = _side(message)
        session.use_srtp_keys(
            {
                _side({"side": leg}): {str(suite): unpack(key) for suite, key in keys.items()}
                for leg, keys in message.get("keys", {}).items()
            }
        )
        describe = session.offer_from if message["offer"] else session.answer_from
        describe(side, unpack(message["sdp"]))

    def _signalling(self, session: MediaSession, message: dict[str, Any]) -> None:
        session.signalling_from(_side(message), *(str(h) for h in message["hosts"]))

    def _encrypted(self, session: MediaSession, message: dict[str, Any]) -> None:
        session.signalling_encrypted(_side(message), bool(message["on"]))

    def _tap(self, session: MediaSession, message: dict[str, Any]) -> None:
        session.tap = ForwardTap(_number(message), self.send) if message["on"] else None

    def _release(self, session: MediaSession, message: dict[str, Any]) -> None:
        number = _number(message)
        del self.sessions[number]
        self._sent.pop(number, None)
        session.release()
        # Every packet of the session is counted now: the call record's counters.
        self.send({"op": "released", "id": number, "stats": session.stats()})
        if not self.sessions and self._stats.running:
            self._stats.stop()

    def _report_slices(self, count: int) -> None:
        """
        The next slice of the sessions' counters, the packet metrics with slice 0;
        as many slices as ticks passed (a late tick skips none).
        """
        parts = {(self._tick + i) % SLICES for i in range(min(count, SLICES))}
        self._tick += count
        changes = (
            (n, self._changes(n, s)) for n, s in self.sessions.items() if n % SLICES in parts
        )
        message: dict[str, Any] = {
            "op": "stats",
            "sessions": {str(n): c for n, c in changes if c},
        }
        if 0 in parts:
            message["metrics"] = metric_totals()
        self.send(message)

    def _changes(self, number: int, session: MediaSession) -> dict[str, dict[str, Any]]:
        """
        The counters of ``session`` (Warden's ``number``) that changed since
        Warden was last told, by side (all of them the first time; none: {}).
        """
        stats = session.stats()
        last = self._sent.get(number)
        self._sent[number] = stats
        if last is None:
            return stats
        changes = {}
        for side, counters in stats.items():
            before = last[side]
            changed = {k: v for k, v in counters.items() if before.get(k) != v}
            if changed:
                changes[side] = changed
        return changes

    def report(self) -> None:
        """Send every session's counters (all of them) and the packet metrics now."""
        if self.relay is not None:
            self.relay.flush_metrics()
        sessions = {n: s.stats() for n, s in self.sessions.items()}
        self._sent.update(sessions)
        self.send(
            {
                "op": "stats",
                "sessions": {str(n): stats for n, stats in sessions.items()},
                "metrics": metric_totals(),
            }
        )

    def close(self) -> None:
        """Release everything (Warden went away)."""
        if self._stats.running:
            self._stats.stop()
        self.sessions.clear()
        if self.relay is not None:
            self.relay.close()


_SESSION_OPS: dict[str, Callable[[MediaWorker, MediaSession, dict[str, Any]], None]] = {
    "sdp": MediaWorker._sdp,
    "signalling": MediaWorker._signalling,
    "encrypted": MediaWorker._encrypted,
    "tap": MediaWorker._tap,
    "release": MediaWorker._release,
}


def _number(message: dict[str, Any]) -> int:
    number = message.get("id")
    if not isinstance(number, int) or isinstance(number, bool):
        raise ControlError("a session command without an integer id")
    return number


def _side(message: dict[str, Any]) -> str:
    side = message.get("side")
    if side not in SIDES:
        raise ControlError(f"side must be 'a' or 'b', not {side!r}")
    return str(side)


def _music_frames(value: str) -> Any:
    from pathlib import Path

    from warden.rtp import g711
    from warden.rtp.music import MAX_MUSIC_SECONDS, shipped_music

    if value == "default":
        return shipped_music()
    return g711.read_wav(Path(value).read_bytes(), MAX_MUSIC_SECONDS)


class ControlProtocol(Protocol):
    """Standard input and output of the media process."""

    def __init__(self, worker_factory: Callable[[Send], MediaWorker]) -> None:
        self.reader = FrameReader()
        self.worker = worker_factory(self.write)

    def write(self, message: dict[str, Any]) -> None:
        if self.transport is not None:
            self.transport.write(frame(message))

    def dataReceived(self, data: bytes) -> None:
        try:
            for message in self.reader.feed(data):
                self.worker.handle(message)
        except ControlError as e:
            MediaWorker.log.error("Control channel broken: {error}", error=e)
            assert self.transport is not None
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        from twisted.internet import reactor

        self.worker.close()
        if reactor.running:
            reactor.stop()


def main() -> None:  # pragma: no cover - run as a process by the integration tests
    """Run the media process until standard input closes."""
    from twisted.internet import reactor, stdio
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from warden.process import calm_collector
    from warden.rtp import udp

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    listen = udp.MediaSockets(reactor).listen_udp
    stdio.StandardIO(  # type: ignore[no-untyped-call]
        ControlProtocol(lambda send: MediaWorker(reactor, listen, send, calm_collector))
    )
    reactor.run()


if __name__ == "__main__":  # pragma: no cover
    main()
