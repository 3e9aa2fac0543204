"""
Draining a node for a rolling upgrade: stop accepting new calls (new INVITEs
get 503 with Retry-After; emergency calls are still placed), let the calls in
progress end by themselves up to a timeout, then hang up what is left but the
emergency calls, which the drain waits for. Started by ``POST /api/v1/drain``
(``wardenctl drain``) or by SIGTERM, through the composition root's stop.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

#: Seconds between checks for calls still in progress.
POLL_INTERVAL = 1.0


class DrainController:
    """
    Args:
        clock: the timers.
        calls: the CallController (``draining``, ``calls``, ``hangup_all``), or None.
        timeout: seconds to wait for calls when none is given.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, calls: Any, timeout: float) -> None:
        self._clock = clock
        self._calls = calls
        self.timeout = timeout
        self.draining = False
        self.deadline: float | None = None
        self.complete = False
        self._waiters: list[Deferred[None]] = []

    def active_calls(self) -> int:
        """Calls in progress on this node."""
        return len(self._calls.calls) if self._calls is not None else 0

    def status(self) -> dict[str, Any]:
        """What ``GET /drain`` shows."""
        return {
            "draining": self.draining,
            "active_calls": self.active_calls(),
            "deadline": self.deadline,
            "finished": self.complete,
        }

    def start(self, timeout: float | None = None) -> None:
        """Stop taking new calls; a second start keeps the first deadline."""
        if self.draining:
            return
        self.draining = True
        if self._calls is not None:
            self._calls.draining = True
        wait = self.timeout if timeout is None else timeout
        self.deadline = self._clock.seconds() + wait
        self.log.info(
            "Draining: no new calls; waiting up to {wait}s for {count} calls",
            wait=wait, count=self.active_calls(),
        )  # fmt: skip
        d = defer.Deferred.fromCoroutine(self._wait())
        d.addErrback(lambda f: self.log.failure("Drain failed", f))

    def finished(self) -> Deferred[None]:
        """Fires once draining has finished (at once when not draining)."""
        if not self.draining or self.complete:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    async def _wait(self) -> None:
        assert self.deadline is not None
        from twisted.internet import task

        while self.active_calls() and self._clock.seconds() < self.deadline:
            delay = min(POLL_INTERVAL, max(0.0, self.deadline - self._clock.seconds()))
            await task.deferLater(self._clock, delay, lambda: None)
        left = self.active_calls()
        if left:
            self.log.warn("Drain timeout: hanging up {count} calls", count=left)
            # An emergency call is never cut by a drain (Kari's Law): wait for its end.
            self._calls.hangup_all("drain timeout", spare_emergency=True)
            if self.active_calls():
                self.log.warn(
                    "Drain: waiting for {count} emergency calls to end", count=self.active_calls()
                )
            while self.active_calls():
                await task.deferLater(self._clock, POLL_INTERVAL, lambda: None)
        self.log.info("Drained")
        self.complete = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def for_shutdown(self) -> Deferred[None]:
        """Drain (if not already) and fire when done: what SIGTERM waits for."""
        self.start()
        return self.finished()
