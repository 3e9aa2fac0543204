"""
SIP worker processes (ADR 0032): ``[sip] workers = N`` makes ``twistd warden``
a supervisor of N worker processes, each a whole Warden.

Every worker is a cluster node on the same machine (ADR 0010, ADR 0017): its
own node id (``<node_id>-w<I>``), the shared state in Redis (``[state] url``),
the shared SIP port bound with ``SO_REUSEPORT`` (L{warden.reuseport}), and
its own port ``[sip] worker_port_base + I``, which it sends from and names in
Via, Contact and Record-Route, so that the requests of its dialogs reach it.

L{WorkerSupervisor} starts the workers, restarts one that ends (after a delay
that doubles while it keeps dying young), passes SIGHUP on to every worker and,
when it stops, sends every worker SIGTERM (each drains its calls) and kills
those still running after a grace period.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from warden.config import WardenConfig

#: Seconds before the first restart of a worker that ended.
MIN_BACKOFF = 1.0
#: The longest wait between restarts of a worker that keeps ending.
MAX_BACKOFF = 30.0
#: A worker that ran this long before ending is restarted after MIN_BACKOFF again.
STABLE_SECONDS = 60.0
#: Seconds a worker has to drain and stop after SIGTERM before it is killed.
STOP_GRACE = 80.0

#: Starts worker ``index`` with ``protocol`` receiving its events.
Spawn = Callable[[int, ProcessProtocol], IProcessTransport]


def worker_config(config: WardenConfig, index: int) -> WardenConfig:
    """``config`` as worker ``index`` runs it: its own node id and worker number."""
    node = f"{config.node_id}-w{index}"
    cluster = attrs.evolve(config.cluster, node_id=node)
    server = attrs.evolve(config.server, node_id="")
    return attrs.evolve(config, cluster=cluster, server=server, worker=index)


def worker_logfile(logfile: str | None, index: int) -> str:
    """
    Where worker ``index`` logs: next to the supervisor's log file
    (``warden.log`` -> ``warden.worker0.log``), or to the standard output it
    shares with the supervisor (journald under systemd) when that one does.
    """
    if not logfile or logfile == "-":
        return "-"
    stem, ext = os.path.splitext(logfile)
    return f"{stem}.worker{index}{ext}"


def worker_arguments(
    options: dict[str, Any],
    index: int,
    logfile: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """
    The command line of worker ``index``: ``twistd`` in the foreground, no pid
    file, logging as L{worker_logfile} says, with the supervisor's own
    ``warden`` options and ``--worker``. Worker 0 serves the admin API; the
    others run without it.
    """
    twistd = "from twisted.scripts.twistd import run; run()"  # no __main__ module
    log = f"--logfile={worker_logfile(logfile, index)}"
    args = [python, "-c", twistd, "--nodaemon", "--pidfile=", log, "warden"]
    for name in ("config", "data-dir", "sip-port", "sip-interface", "sip-tls-port"):
        if options.get(name) is not None:
            args.append(f"--{name}={options[name]}")
    for domain in options.get("domain") or ():
        args.append(f"--domain={domain}")
    admin = options.get("admin-port")
    if index > 0:
        admin = 0
    if admin is not None:
        args.append(f"--admin-port={admin}")
    args.append(f"--worker={index}")
    return args


def process_spawner(reactor: Any, options: dict[str, Any], logfile: str | None) -> Spawn:
    """
    Spawn workers as real processes on ``reactor``, sharing our stdout and
    stderr; ``logfile`` is twistd's ``--logfile`` of the supervisor.
    """

    def spawn(index: int, protocol: ProcessProtocol) -> IProcessTransport:
        args = worker_arguments(options, index, logfile)
        transport: IProcessTransport = reactor.spawnProcess(
            protocol, args[0], args, env=dict(os.environ), childFDs={0: "w", 1: 1, 2: 2}
        )
        return transport

    return spawn


class _WorkerProtocol(ProcessProtocol):
    """Tells the supervisor when worker ``index`` ends."""

    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self._supervisor = supervisor
        self._index = index

    def processEnded(self, reason: Failure) -> None:
        """Report the worker's end and its status."""
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self._supervisor.ended(self._index, code, sig)


@attrs.define
class _Worker:
    index: int
    transport: IProcessTransport | None = None
    started_at: float = 0.0
    backoff: float = MIN_BACKOFF
    restart: IDelayedCall | None = None
    restarts: int = 0


class WorkerSupervisor(service.Service):
    """
    Runs ``count`` workers and keeps them running.

    Args:
        clock: schedules restarts and the kill after the stop grace period.
        count: how many workers.
        spawn: starts one worker (L{process_spawner}; a fake in tests).
        install_sighup: installs a SIGHUP callback (None: none installed).
        min_backoff, max_backoff, stable_seconds, stop_grace: see the
            module's constants.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        count: int,
        spawn: Spawn,
        install_sighup: Callable[[Callable[[], None]], None] | None = None,
        *,
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        stable_seconds: float = STABLE_SECONDS,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self._clock = clock
        self._spawn = spawn
        self._install_sighup = install_sighup
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._stable = stable_seconds
        self._grace = stop_grace
        self.workers = [_Worker(i, backoff=min_backoff) for i in range(count)]
        self._stopping = False
        self._stopped: Deferred[None] | None = None
        self._kill: IDelayedCall | None = None

    def startService(self) -> None:
        """Start every worker; from now on SIGHUP is passed on to them."""
        service.Service.startService(self)  # type: ignore[no-untyped-call]
        self._stopping = False
        if self._install_sighup is not None:
            self._install_sighup(self._forward_sighup)
        self.log.info("Starting {count} SIP workers", count=len(self.workers))
        for worker in self.workers:
            self._start(worker)

    def _forward_sighup(self) -> None:
        self.signal_all("HUP")

    def _start(self, worker: _Worker) -> None:
        worker.restart = None
        worker.started_at = self._clock.seconds()
        worker.transport = self._spawn(worker.index, _WorkerProtocol(self, worker.index))

    def running_count(self) -> int:
        """How many workers run now."""
        return sum(1 for w in self.workers if w.transport is not None)

    def signal_all(self, name: str) -> int:
        """Send signal ``name`` ("HUP", "TERM", "KILL") to every running worker; how many."""
        sent = 0
        for worker in self.workers:
            if worker.transport is None:
                continue
            try:
                worker.transport.signalProcess(name)
                sent += 1
            except ProcessExitedAlready:
                pass
        if name == "HUP":
            self.log.info("SIGHUP passed on to {count} workers", count=sent)
        return sent

    def ended(self, index: int, code: int | None, sig: int | None) -> None:
        """Worker ``index`` ended: restart it later, unless Warden is stopping."""
        worker = self.workers[index]
        worker.transport = None
        if self._stopping:
            if self.running_count() == 0 and self._stopped is not None:
                if self._kill is not None and self._kill.active():
                    self._kill.cancel()
                stopped, self._stopped = self._stopped, None
                stopped.callback(None)
            return
        lived = self._clock.seconds() - worker.started_at
        if lived >= self._stable:
            worker.backoff = self._min_backoff
        delay = worker.backoff
        worker.backoff = min(worker.backoff * 2, self._max_backoff)
        how = f"signal {sig}" if sig is not None else f"status {code}"
        self.log.warn(
            "SIP worker {index} ended ({how}) after {lived:.1f} s; restarting in {delay:g} s",
            index=index, how=how, lived=lived, delay=delay,
        )  # fmt: skip
        worker.restarts += 1
        worker.restart = self._clock.callLater(delay, self._start, worker)

    def stopService(self) -> Deferred[None]:
        """SIGTERM every worker (each drains its calls); kill those left after the grace."""
        service.Service.stopService(self)  # type: ignore[no-untyped-call]
        self._stopping = True
        for worker in self.workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
            worker.restart = None
        if self.running_count() == 0:
            return succeed(None)
        self._stopped = Deferred()
        self.signal_all("TERM")
        self._kill = self._clock.callLater(self._grace, self._kill_all)
        return self._stopped

    def _kill_all(self) -> None:
        left = self.signal_all("KILL")
        self.log.warn("{count} SIP workers killed: still running after the grace", count=left)


def install_worker_sighup(install: Callable[[Callable[[], None]], None], index: int) -> None:
    """
    In a worker: SIGHUP (passed on by the supervisor) is logged, so it never
    ends a worker that has no other SIGHUP use (no TLS certificate to reload).
    """
    log = Logger(namespace="warden.workers")

    def received() -> None:
        log.info("SIP worker {index}: SIGHUP received", index=index)

    install(received)
