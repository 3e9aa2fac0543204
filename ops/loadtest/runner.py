"""
One load-test run: probe the PBX, register users, place calls, tear down, and
judge the result.

Phases:

1. ``probe``: OPTIONS to the PBX; no answer within ``--probe-timeout`` ends the
   run as unreachable (exit status 3).
2. ``register``: every user logs in (401, authenticated REGISTER, 200) at
   ``--register-rate``. In a ``registrations`` test this is the load measured;
   with ``--duration`` it goes on round-robin (each new REGISTER refreshes a binding)
   until the time is up. For calls it is set-up: the second half of the users
   become callees that this generator answers.
3. ``calls``: ``--total-calls`` calls at ``--call-rate``, at most
   ``--concurrent-calls`` at once, each held ``--call-duration`` s, from the
   first half of the users to the second. ``mixed`` registers round-robin at the
   same time, for ``--duration`` s.
4. ``unregister``: every registered user removes its binding (Expires: 0).

Registrations are refreshed while a run lasts longer than half their expiry.
L{LoadTest.interrupt} (Ctrl-C, the hard ``--timeout``) stops starting work, cuts
calls short with BYE and goes on to unregister, so the report is still written.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import IO, Any

import attrs
from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .agent import SipAgent
from .options import EXIT_FAIL, EXIT_PASS, EXIT_UNREACHABLE, Settings
from .pacer import Pacer
from .recorder import Recorder
from .report import Criterion, Progress, evaluate
from .results import Account, CallResult, RegistrationResult

#: Once interrupted, the tear-down gets this long before the agent is stopped hard.
TEARDOWN_LIMIT = 40.0


@attrs.frozen
class Outcome:
    """How a run ended."""

    exit_code: int
    criteria: tuple[Criterion, ...]
    unreachable: str | None
    interrupted: str | None
    started: float
    ended: float


class LoadTest:
    """
    A run of ``settings`` with ``accounts`` against the PBX.

    Args:
        settings: the checked options.
        accounts: the users (already provisioned when that was asked).
        reactor: sockets, and the clock unless ``clock`` is given.
        clock: time source.
        err: where the progress line goes.
    """

    log = Logger()

    def __init__(
        self,
        settings: Settings,
        accounts: list[Account],
        reactor: Any,
        clock: IReactorTime | None = None,
        err: IO[str] | None = None,
    ) -> None:
        self.settings = settings
        self.accounts = accounts
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.err = err if err is not None else sys.stderr
        self.recorder = Recorder(self.clock.seconds())
        self.agent = SipAgent(
            reactor,
            settings.pbx_host,
            settings.sip_port,
            transport=settings.transport,
            local_ip=settings.local_ip,
            domain=settings.domain,
            clock=self.clock,
            media=settings.rtp,
        )
        self.registered: set[str] = set()
        self.pacers: list[Pacer] = []
        self.interrupted: str | None = None
        self.unreachable: str | None = None
        self.outcome: Outcome | None = None
        self.on_interrupt: list[Callable[[], None]] = []
        self._progress = LoopingCall(self._tick)
        self._progress.clock = self.clock
        self._refresher: LoopingCall | None = None
        self._deadline: IDelayedCall | None = None
        self._hard_stop: IDelayedCall | None = None

    # -- the run ------------------------------------------------------------------------

    def run(self) -> defer.Deferred[Outcome]:
        """Run to the end; fires with the L{Outcome} (never fails)."""
        return defer.Deferred.fromCoroutine(self._run())

    async def _run(self) -> Outcome:
        started = self.clock.seconds()
        self._deadline = self.clock.callLater(self.settings.timeout, self.interrupt, "timeout")
        try:
            if await self._connect():
                self.recorder.start = self.clock.seconds()
                self._progress.start(1.0, now=False).addErrback(
                    lambda f: self.log.failure("progress line", f)
                )
                await self._load()
                await self._teardown()
        finally:
            for timer in (self._deadline, self._hard_stop):
                if timer is not None and timer.active():
                    timer.cancel()
            if self._progress.running:
                self._progress.stop()
            if self._refresher is not None and self._refresher.running:
                self._refresher.stop()
            await self.agent.stop()
        criteria = evaluate(self.settings, self.recorder, self.interrupted)
        if self.unreachable is not None:
            code = EXIT_UNREACHABLE
        else:
            code = EXIT_PASS if all(c.passed for c in criteria) else EXIT_FAIL
        self.outcome = Outcome(
            code,
            tuple(criteria),
            self.unreachable,
            self.interrupted,
            started,
            self.clock.seconds(),
        )
        return self.outcome

    async def _connect(self) -> bool:
        settings = self.settings
        target = f"{settings.pbx_host}:{settings.sip_port}/{settings.transport}"
        try:
            await self.agent.start()
        except (error.ConnectError, OSError) as e:
            self.unreachable = f"cannot connect to {target}: {e}"
            return False
        response = await self.agent.probe(settings.probe_timeout)
        if response is None:
            self.unreachable = f"no answer to OPTIONS from {target} in {settings.probe_timeout:g}s"
            return False
        self.recorder.response("OPTIONS", response.status)
        return True

    async def _load(self) -> None:
        settings = self.settings
        kind = settings.test_type
        duration = settings.duration or None
        if settings.duration > settings.expires / 2 or kind != "registrations":
            self._start_refresher()
        if kind == "registrations":
            total = None if duration else len(self.accounts)
            await self._registrations(total, duration, measured=True)
            return
        await self._registrations(len(self.accounts), None, measured=False)
        if self.interrupted:
            return
        callers = self.accounts[: len(self.accounts) // 2]
        callees = [
            a.user for a in self.accounts[len(self.accounts) // 2 :] if a.user in self.registered
        ]
        if not callees:
            self.log.warn("No callee registered; no calls can be placed")
            return
        calls = self._calls(callers, callees, duration)
        if kind == "mixed":
            registering = self._pacer(
                settings.register_rate, settings.max_pending, None, duration or 3600.0 * 24,
                self._register_op("register", True),
            )  # fmt: skip
            await calls
            registering.stop()
            await registering.done
        else:
            await calls

    def _pacer(
        self, rate: float, in_flight: int, total: int | None, duration: float | None,
        start: Callable[[int], defer.Deferred[object]],
    ) -> Pacer:  # fmt: skip
        pacer = Pacer(
            self.clock, rate, self.settings.ramp_up, in_flight, total, duration, start,
            offered=self._offered,
        )  # fmt: skip
        self.pacers.append(pacer)
        pacer.run()
        if self.interrupted:
            pacer.stop()
        return pacer

    def _offered(self, at: float, count: float) -> None:
        self.recorder.bucket(at).offered += count

    async def _registrations(
        self, total: int | None, duration: float | None, measured: bool
    ) -> None:
        pacer = self._pacer(
            self.settings.register_rate, self.settings.max_pending, total, duration,
            self._register_op("register", measured),
        )  # fmt: skip
        await pacer.done

    def _register_op(self, phase: str, measured: bool) -> Callable[[int], defer.Deferred[object]]:
        accounts = self.accounts

        def start(index: int) -> defer.Deferred[object]:
            account = accounts[index % len(accounts)]
            return self.register(account, phase, measured)

        return start

    def register(self, account: Account, phase: str, measured: bool) -> defer.Deferred[object]:
        """Register ``account`` and account for it in ``phase``."""
        self.recorder.started(phase, self.clock.seconds(), measured)
        d = self.agent.register(account, self.settings.expires)

        def done(result: RegistrationResult) -> None:
            if result.ok:
                self.registered.add(account.user)
            self.recorder.registration(phase, result, self.clock.seconds(), measured)

        return d.addCallback(done)

    async def _calls(
        self, callers: list[Account], callees: list[str], duration: float | None
    ) -> None:
        settings = self.settings

        def start(index: int) -> defer.Deferred[object]:
            caller = callers[index % len(callers)]
            callee = callees[index % len(callees)]
            self.recorder.started("calls", self.clock.seconds())
            d = self.agent.place_call(caller, callee, settings.call_duration, settings.rtp)
            return d.addCallback(self._call_ended)

        pacer = self._pacer(
            settings.call_rate, settings.concurrent_calls, settings.total_calls, duration, start
        )
        await pacer.done

    def _call_ended(self, result: CallResult) -> None:
        self.recorder.call(result, self.clock.seconds())

    def _start_refresher(self) -> None:
        interval = self.settings.expires / 2

        def refresh() -> None:
            for account in self.accounts:
                if account.user in self.registered and not self.interrupted:
                    self.register(account, "refresh", False)

        self._refresher = LoopingCall(refresh)
        self._refresher.clock = self.clock
        self._refresher.start(interval, now=False).addErrback(
            lambda f: self.log.failure("refresh", f)
        )

    async def _teardown(self) -> None:
        if self._refresher is not None and self._refresher.running:
            self._refresher.stop()
        users = [a for a in self.accounts if a.user in self.registered]
        pacer = Pacer(
            self.clock, max(self.settings.register_rate, 100.0), 0.0, self.settings.max_pending,
            len(users), None, lambda i: self._unregister(users[i]),
        )  # fmt: skip
        await pacer.run()

    def _unregister(self, account: Account) -> defer.Deferred[object]:
        self.recorder.started("unregister", self.clock.seconds(), False)
        d = self.agent.unregister(account)

        def done(result: RegistrationResult) -> None:
            if result.ok:
                self.registered.discard(account.user)
            self.recorder.registration("unregister", result, self.clock.seconds(), False)

        return d.addCallback(done)

    # -- stopping -------------------------------------------------------------------------

    def interrupt(self, why: str = "interrupted") -> None:
        """
        Stop starting work, hang up calls now, then unregister (the run ends as
        usual and reports). A second interrupt stops the agent at once.
        """
        if self.interrupted is not None:
            self.agent.stop()
            return
        self.interrupted = why
        for pacer in self.pacers:
            pacer.stop()
        for call in list(self.agent.calls.values()):
            call.cut_hold()
        self._hard_stop = self.clock.callLater(TEARDOWN_LIMIT, self.agent.stop)
        for hook in self.on_interrupt:
            hook()

    def _tick(self) -> None:
        now = self.clock.seconds()
        self.recorder.sample_in_flight(now)
        progress = Progress.of(self.recorder, now)
        if self.settings.progress_fd is not None:
            self._report_progress(self.settings.progress_fd, progress)
        elif self.settings.progress:
            self.err.write(progress.line() + "\n")
            self.err.flush()

    def _report_progress(self, fd: int, progress: Progress) -> None:
        """One JSON line to the parent (``--workers``); a parent gone ends the run."""
        try:
            os.write(fd, json.dumps(progress.as_dict(), separators=(",", ":")).encode() + b"\n")
        except OSError as e:
            if self.interrupted is None:
                self.log.warn("Progress channel closed ({error}): stopping", error=e)
                self.interrupt("the --workers parent went away")
