"""
The sessions a media relay has allocated, each visited every check interval while
any exist (media timeout, counters): shared by the built-in relay and rtpengine's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from warden.rtp import metrics

__all__ = ["SessionChecks"]

S = TypeVar("S")


class SessionChecks(Generic[S]):
    """
    Live sessions, and the periodic check that runs only while there are some.

    Args:
        clock: the reactor's time.
        interval: seconds between checks.
        visit: called with each session and the time at every check.
        ports_in_use: the relay's ports held now (for the gauge).
        what: names the check in the log when it fails.
        count: the sessions for the gauge (default: these); a relay that is
            one of several gives the total of them all.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        visit: Callable[[S, float], object],
        ports_in_use: Callable[[], int],
        what: str,
        count: Callable[[], int] | None = None,
    ) -> None:
        self.clock = clock
        self.interval = interval
        self._visit = visit
        self._ports_in_use = ports_in_use
        self._what = what
        self._count = count
        self._sessions: dict[int, S] = {}
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock
        self._checking = False

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[S]:
        return iter(list(self._sessions.values()))

    def add(self, session: S) -> None:
        """A new session: counted, and checked from the next interval."""
        self._sessions[id(session)] = session
        self.changed()
        if not self._loop.running:
            self._loop.start(self.interval, now=False).addErrback(self._failed)

    def discard(self, session: S) -> bool:
        """Forget ``session``; whether it was there (call L{changed} after)."""
        return self._sessions.pop(id(session), None) is not None

    def changed(self) -> None:
        """Export the gauges; with no session left, stop checking."""
        metrics.PORTS_IN_USE.set(self._ports_in_use())
        metrics.SESSIONS.set(len(self._sessions) if self._count is None else self._count())
        if not self._sessions and self._loop.running and not self._checking:
            self._loop.stop()

    def stop(self) -> None:
        """Stop checking (at shutdown)."""
        if self._loop.running:
            self._loop.stop()

    def _check(self) -> None:
        self._checking = True
        try:
            now = self.clock.seconds()
            for session in list(self._sessions.values()):
                self._visit(session, now)
        finally:
            self._checking = False
        if not self._sessions:
            self._loop.stop()

    def _failed(self, failure: Failure) -> None:
        self.log.failure("{what} stopped", failure, what=self._what)
