"""
``twistd warden-loadtest``: the options and the service that runs one load test,
writes its reports and ends the process with the verdict as exit status
(0 pass, 1 a criterion failed, 2 usage error, 3 PBX unreachable).

SIGINT and SIGTERM make twistd stop the service: the run stops starting work,
hangs up its calls with BYE, unregisters, and the reports are still written.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from twisted.application import service
from twisted.internet import defer
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    LogPublisher,
    textFileLogObserver,
)
from twisted.python.failure import Failure

from warden.process import calm_collector, process_exit

from .html import render
from .metrics import serve_metrics
from .options import EXIT_FAIL, EXIT_USAGE, Options, Settings
from .provision import Provisioner, ProvisionError
from .report import build_report, summary_text
from .results import Account
from .runner import LoadTest, Outcome
from .shares import Share

__all__ = ["LoadTestService", "Options", "makeService"]


class LoadTestService(service.Service):
    """
    Runs the load test once the reactor runs, then reports and calls ``exit``
    with the exit status.

    Args:
        settings: the checked options.
        accounts: the users.
        reactor: sockets and clock.
        exit: called once with the exit status when the run is over.
        err: where progress and the summary go.
        out: where the JSON report goes when ``--save-report -``.
    """

    log = Logger()

    def __init__(
        self,
        settings: Settings,
        accounts: list[Account],
        reactor: Any,
        exit: Callable[[int], None],
        err: IO[str] | None = None,
        out: IO[str] | None = None,
    ) -> None:
        self.settings = settings
        self.accounts = accounts
        self.reactor = reactor
        self.exit = exit
        self.err = err if err is not None else sys.stderr
        self.out = out if out is not None else sys.stdout
        self.test: LoadTest | None = None
        self.report: dict[str, Any] | None = None
        self.done: defer.Deferred[int] = defer.Deferred()
        self._metrics_port: Any = None
        self._stop_requested = False

    def startService(self) -> None:
        """Begin as soon as the reactor runs."""
        super().startService()  # type: ignore[no-untyped-call]
        self.reactor.callWhenRunning(self._begin)

    def _begin(self) -> None:
        d = defer.Deferred.fromCoroutine(self._run())
        d.addErrback(self._crashed)
        d.addCallback(self._ended)

    async def _run(self) -> int:
        settings = self.settings
        provisioner = Provisioner.for_settings(settings, self.reactor)
        if provisioner is not None:
            try:
                await provisioner.create(self.accounts)
            except ProvisionError as e:
                self.err.write(f"warden-loadtest: --provision: {e}\n")
                return EXIT_USAGE
        if settings.progress_fd is not None:
            # Spawned by --workers: the parent passes signals on (SIGTERM), so a
            # Ctrl-C reaching the whole process group does not stop us twice.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        share = Share.of(settings, settings.worker_index, settings.worker_count)
        self.test = LoadTest(share.apply(settings), self.accounts, self.reactor, err=self.err)
        if self._stop_requested:  # a signal came while the users were being created
            self.test.interrupt("interrupted by a signal")
        if settings.prometheus_port is not None:
            self._metrics_port = serve_metrics(self.reactor, settings.prometheus_port, self.test)
        calm_collector()
        try:
            outcome = await self.test.run()
        finally:
            if provisioner is not None:
                await provisioner.delete(self.accounts)
            if self._metrics_port is not None:
                await defer.maybeDeferred(self._metrics_port.stopListening)
        return self._write_reports(outcome)

    def _write_reports(self, outcome: Outcome) -> int:
        assert self.test is not None
        settings = self.settings
        share = Share.of(settings, settings.worker_index, settings.worker_count)
        users: list[str | None] = [a.user for a in self.accounts] or [None]
        share_dict = share.as_dict(users[0], users[-1])
        share_dict.update(hostname=socket.gethostname(), pid=os.getpid())
        report = self.report = build_report(settings, self.test.recorder, outcome, share_dict)
        write_reports(report, settings.save_report, settings.html_report, self.out, self.err)
        return outcome.exit_code

    def _crashed(self, failure: Failure) -> int:
        self.log.failure("The load test failed unexpectedly", failure)
        self.err.write(f"warden-loadtest: internal error: {failure.getErrorMessage()}\n")
        return EXIT_FAIL

    def _ended(self, code: int) -> None:
        # exit first: firing ``done`` may let an interrupted shutdown finish at once.
        self.exit(code)
        self.done.callback(code)

    def stopService(self) -> defer.Deferred[int] | None:
        """Interrupted (SIGINT/SIGTERM): hang up, unregister, report; wait for it."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self.done.called:
            return None
        self._stop_requested = True
        if self.test is not None:
            self.test.interrupt("interrupted by a signal")
        return waiting_for(self.done)


def waiting_for(done: defer.Deferred[int]) -> defer.Deferred[int]:
    """A Deferred firing with ``done``'s result (what ``stopService`` returns to twistd)."""
    waiting: defer.Deferred[int] = defer.Deferred()

    def relay(code: int) -> int:
        waiting.callback(code)
        return code

    done.addCallback(relay)
    return waiting


def write_reports(
    report: dict[str, Any], save: str | None, html: str | None, out: IO[str], err: IO[str]
) -> None:
    """The JSON report to ``save`` (``-``: ``out``), the HTML page, the summary on ``err``."""
    text = json.dumps(report, indent=2, sort_keys=False) + "\n"
    if save == "-":
        out.write(text)
        out.flush()
    elif save:
        _write(save, text)
    if html:
        _write(html, render(report))
    err.write(summary_text(report) + "\n")
    err.flush()


def _write(path: str, text: str) -> None:
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, target)


def terminal_log_observer(err: IO[str], log_file: IO[str] | None = None) -> ILogObserver:
    """
    Where Twisted's log goes during a load test: its warnings and errors to
    ``err`` (beside the progress line and the summary), and everything to
    ``log_file`` when one is given. Per-socket lines ("Stopping protocol",
    "(UDP Port N Closed)") are informational, so they stay off the terminal.
    """
    quiet = FilteringLogObserver(
        textFileLogObserver(err), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)]
    )
    if log_file is None:
        return quiet
    return LogPublisher(quiet, textFileLogObserver(log_file))


class LogChoosing:
    """
    Mixin for a service that, once twistd attaches it to its application, names
    the application's log observer (twistd reads it when it starts logging),
    unless twistd was told where to log (``--logfile``, ``--logger``).
    """

    observer: ILogObserver | None = None

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)  # type: ignore[misc]
        if self.observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.observer)


class _LogChoosingService(LogChoosing, LoadTestService):
    """L{LoadTestService} choosing its log observer."""


def makeService(options: Options) -> service.Service:
    """The service of ``twistd warden-loadtest`` (or of its ``merge`` subcommand)."""
    from twisted.internet import reactor

    twistd = getattr(options, "parent", None)
    told = twistd is not None and (twistd.get("logfile") or twistd.get("logger"))
    made: LogChoosing
    if options.subCommand == "merge":
        from .merge import MergeService

        merging = MergeService(options.subOptions, reactor, process_exit(reactor))
        if not told:
            merging.observer = terminal_log_observer(sys.stderr)
        return merging
    settings = options.settings
    assert settings is not None
    if settings.workers > 1:
        from .workers import WorkerPoolService

        made = WorkerPoolService(options, reactor, process_exit(reactor))
    else:
        made = _LogChoosingService(settings, options.accounts, reactor, process_exit(reactor))
    if settings.log_file is not None:
        try:
            log_file = open(settings.log_file, "a", encoding="utf-8")
        except OSError as e:
            problem = f"--log-file: cannot open {settings.log_file}: {e}"
            sys.stderr.write(f"warden-loadtest: {problem}\n")
            raise SystemExit(EXIT_USAGE) from None
        made.observer = terminal_log_observer(sys.stderr, log_file)
    elif not told:
        made.observer = terminal_log_observer(sys.stderr)
    return cast(service.Service, made)
