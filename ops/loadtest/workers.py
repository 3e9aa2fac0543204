"""
``twistd warden-loadtest --workers N``: N generator processes, one run.

The parent spawns N children of the same twistd entry point, child ``i`` with
``--worker-index i --worker-count N`` (its users, rates and calls; see
L{warden.ops.loadtest.shares}), a report file of its own and a progress channel
on its file descriptor 3 (one JSON line a second, L{Progress.as_dict}). The
parent prints one progress line for all of them, waits, merges their reports
(L{warden.ops.loadtest.merge}) and applies the criteria to the merged result.

A child that ends without a report (killed, crashed, refused) fails the run at
once: the others are stopped, the parent names the child, how it ended and the
end of its output, and exits 1 without a merged report. SIGINT/SIGTERM to the
parent are passed to the children as SIGTERM (they hang up, unregister and
report as one process does; children ignore SIGINT, so a Ctrl-C reaching the
whole process group counts once). A child still running long after its own
``--timeout`` is killed, so the parent never waits forever; a child whose parent
went away notices when its progress line cannot be written and stops.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import IO, Any

from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .merge import MergeError, load_report, merge_reports
from .options import EXIT_FAIL, Options, worker_arguments
from .report import Progress
from .runner import TEARDOWN_LIMIT
from .tap import LogChoosing, waiting_for, write_reports

#: How a child is started: the twistd of this Python, in the foreground, no pidfile.
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
#: Bytes of each child's output kept for the message when it fails.
TAIL_BYTES = 8192
#: Longest progress line accepted from a child.
MAX_PROGRESS_LINE = 1 << 20
#: After SIGTERM, a child gets this long (it hangs up and unregisters) before SIGKILL.
KILL_AFTER = TEARDOWN_LIMIT + 20.0


class _Worker(protocol.ProcessProtocol):
    """One child: its progress channel, the tail of its output, how it ended."""

    log = Logger()

    def __init__(self, pool: WorkerPoolService, index: int, report: str) -> None:
        self.pool = pool
        self.index = index
        self.report = report
        self.progress: Progress | None = None
        self.running = True
        self.ended: str | None = None
        self.code: int | None = None
        self._line = b""
        self._tail = b""

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """Progress on fd 3; anything else is kept (the end of it) for a failure message."""
        if childFD != 3:
            self._tail = (self._tail + data)[-TAIL_BYTES:]
            return
        self._line += data
        while b"\n" in self._line:
            line, self._line = self._line.split(b"\n", 1)
            try:
                record = json.loads(line, parse_constant=_refuse)
                self.progress = Progress.from_dict(record, f"worker {self.index} progress")
            except (ValueError, RecursionError) as e:
                self.log.warn("Worker {index}: bad progress line: {error}", index=self.index,
                              error=e)  # fmt: skip
        if len(self._line) > MAX_PROGRESS_LINE:
            self._line = b""

    def output_tail(self) -> str:
        """The end of what the child wrote on stdout/stderr."""
        return self._tail.decode("utf-8", "replace").strip()

    def processEnded(self, reason: Failure) -> None:
        """Tell the pool how the child ended."""
        self.running = False
        value = reason.value
        signal = getattr(value, "signal", None)
        self.code = getattr(value, "exitCode", None)
        self.ended = f"was killed by signal {signal}" if signal else f"exited {self.code}"
        self.pool.worker_ended(self)

    def terminate(self, signal: str) -> None:
        """Send ``signal`` (``"TERM"``, ``"KILL"``) if the child still runs."""
        if self.running and self.transport is not None:
            try:
                self.transport.signalProcess(signal)
            except error.ProcessExitedAlready:
                pass


def _refuse(name: str) -> None:
    raise ValueError(f"{name} is not a number")


class WorkerPoolService(LogChoosing, service.Service):
    """
    Runs ``--workers`` children and merges their reports.

    Args:
        options: the parsed options of the whole run.
        reactor: processes and clock.
        exit: called once with the exit status.
        err: progress line, summary and errors.
        out: the merged JSON report with ``--save-report -``.
        command: how to start ``twistd`` (the children's command without the plugin).
    """

    log = Logger()

    def __init__(
        self,
        options: Options,
        reactor: Any,
        exit: Callable[[int], None],
        err: IO[str] | None = None,
        out: IO[str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        assert options.settings is not None
        self.options = options
        self.settings = options.settings
        self.reactor = reactor
        self.exit = exit
        self.err = err if err is not None else sys.stderr
        self.out = out if out is not None else sys.stdout
        self.command = command if command is not None else TWISTD
        self.workers: list[_Worker] = []
        self.failures: list[str] = []
        self.workdir = ""
        self.done: defer.Deferred[int] = defer.Deferred()
        self._progress = LoopingCall(self._tick)
        self._progress.clock = reactor
        self._deadline: IDelayedCall | None = None
        self._killer: IDelayedCall | None = None

    def startService(self) -> None:
        """Spawn the children once the reactor runs."""
        super().startService()  # type: ignore[no-untyped-call]
        self.reactor.callWhenRunning(self._spawn)

    def _spawn(self) -> None:
        settings = self.settings
        self.workdir = tempfile.mkdtemp(prefix="warden-loadtest-")
        for index in range(settings.workers):
            report = os.path.join(self.workdir, f"share-{index}.json")
            log_file = f"{settings.log_file}.worker-{index}" if settings.log_file else None
            args = [*self.command, "-n", "--pidfile=", "warden-loadtest"]
            args += worker_arguments(self.options, index, report, log_file)
            worker = _Worker(self, index, report)
            self.workers.append(worker)
            self.reactor.spawnProcess(
                worker, args[0], args, env=dict(os.environ),
                childFDs={0: "w", 1: "r", 2: "r", 3: "r"},
            )  # fmt: skip
        self._progress.start(1.0, now=False).addErrback(
            lambda f: self.log.failure("progress line", f)
        )
        # Each child bounds itself (--timeout, then its tear-down); this bounds them.
        limit = settings.timeout + KILL_AFTER + 30.0
        self._deadline = self.reactor.callLater(limit, self.stop_workers, "the run's time")

    def _tick(self) -> None:
        records = [w.progress for w in self.workers if w.progress is not None]
        if self.settings.progress and records:
            running = sum(w.running for w in self.workers)
            line = Progress.combined(records).line()
            self.err.write(f"{line} | workers {running}/{len(self.workers)}\n")
            self.err.flush()

    def stop_workers(self, why: str) -> None:
        """SIGTERM to every running child, SIGKILL to those still running later."""
        self.log.info("Stopping the workers: {why}", why=why)
        for worker in self.workers:
            worker.terminate("TERM")
        if self._killer is None:
            self._killer = self.reactor.callLater(KILL_AFTER, self._kill)

    def _kill(self) -> None:
        for worker in self.workers:
            if worker.running:
                self.failures.append(
                    f"worker {worker.index} did not stop within {KILL_AFTER:g} s; killed"
                )
            worker.terminate("KILL")

    def worker_ended(self, worker: _Worker) -> None:
        """A child ended: fail the run if it left no report; finish after the last."""
        if worker.code not in (0, 1, 3) or not os.path.exists(worker.report):
            tail = worker.output_tail()
            self.failures.append(
                f"worker {worker.index} {worker.ended} without a report"
                + (f"; its last output:\n{_indent(tail)}" if tail else "")
            )
            self.stop_workers(f"worker {worker.index} failed")
        if not any(w.running for w in self.workers):
            self._finish()

    def _finish(self) -> None:
        if self._progress.running:
            self._progress.stop()
        for timer in (self._deadline, self._killer):
            if timer is not None and timer.active():
                timer.cancel()
        code = self._merge()
        self.exit(code)
        self.done.callback(code)

    def _merge(self) -> int:
        if self.failures:
            for failure in self.failures:
                self.err.write(f"warden-loadtest: {failure}\n")
            self.err.write(
                f"warden-loadtest: FAIL: no merged report (worker reports kept in "
                f"{self.workdir})\n"
            )
            self.err.flush()
            return EXIT_FAIL
        try:
            named = [(f"worker {w.index} report", load_report(w.report)) for w in self.workers]
            merged = merge_reports(named, config=self.settings.public())
        except MergeError as e:
            self.err.write(f"warden-loadtest: cannot merge the workers' reports: {e}\n")
            return EXIT_FAIL
        settings = self.settings
        write_reports(merged, settings.save_report, settings.html_report, self.out, self.err)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return int(merged["exit_code"])

    def stopService(self) -> defer.Deferred[int] | None:
        """Interrupted (SIGINT/SIGTERM): stop the children, still merge what they report."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self.done.called or not self.workers:
            return None
        self.stop_workers("interrupted by a signal")
        return waiting_for(self.done)


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines()[-20:])
