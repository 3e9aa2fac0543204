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
those still running after a grace period. It holds a control channel to each
worker (L{warden.workerlink}, ADR 0035) through which worker 0, serving the
admin API, has a drain, the drain status and the metrics asked of every
worker; a worker started while the PBX drains is told to drain at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from warden.config import WardenConfig
from warden.workerlink import WORKER_READ_FD, WORKER_WRITE_FD, ChannelError, ControlChannel

#: Seconds before the first restart of a worker that ended.
MIN_BACKOFF = 1.0
#: The longest wait between restarts of a worker that keeps ending.
MAX_BACKOFF = 30.0
#: A worker that ran this long before ending is restarted after MIN_BACKOFF again.
STABLE_SECONDS = 60.0
#: Seconds a worker has to drain and stop after SIGTERM before it is killed.
STOP_GRACE = 80.0

#: Seconds the supervisor waits for one worker's answer.
WORKER_ANSWER_TIMEOUT = 5.0
#: What worker 0 may have asked of every worker (L{warden.admin.workers}).
FORWARDED = frozenset(["drain", "drain_status", "metrics"])

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
            protocol,
            args[0],
            args,
            env=dict(os.environ),
            # The control channel: the worker reads 3 and writes 4.
            childFDs={0: "w", 1: 1, 2: 2, WORKER_READ_FD: "w", WORKER_WRITE_FD: "r"},
        )
        return transport

    return spawn


class _ChildPipe:
    """The transport of the supervisor's end of a worker's control channel."""

    def __init__(self, process: IProcessTransport) -> None:
        self._process = process

    def write(self, data: bytes) -> None:
        """To the worker's descriptor 3 (dropped once it is closed: the question times out)."""
        try:
            self._process.writeToChild(WORKER_READ_FD, data)
        except (KeyError, OSError):  # the worker ended; its end is being reported
            pass

    def writeSequence(self, data: list[bytes]) -> None:  # noqa: N802 (Twisted's name)
        """To the worker's descriptor 3."""
        self.write(b"".join(data))

    def loseConnection(self) -> None:  # noqa: N802 (Twisted's name)
        """Close the worker's descriptor 3."""
        self._process.closeChildFD(WORKER_READ_FD)


class _WorkerProtocol(ProcessProtocol):
    """Carries worker ``index``'s control channel; tells the supervisor when it ends."""

    def __init__(self, supervisor: WorkerSupervisor, index: int, channel: ControlChannel) -> None:
        self._supervisor = supervisor
        self._index = index
        self.channel = channel

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """The worker's descriptor 4 is its end of the control channel."""
        if childFD == WORKER_WRITE_FD:
            self.channel.dataReceived(data)  # type: ignore[no-untyped-call]

    def childConnectionLost(self, childFD: int) -> None:  # noqa: N802 (Twisted's name)
        """The control channel closed."""
        if childFD == WORKER_WRITE_FD:
            self.channel.connectionLost()

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
    channel: ControlChannel | None = None


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
        #: While the PBX drains: (when the drain was asked, its timeout or None).
        self.drain: tuple[float, float | None] | None = None

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
        channel = ControlChannel(self._clock, self._answerer(worker.index), WORKER_ANSWER_TIMEOUT)
        worker.channel = channel
        worker.transport = self._spawn(worker.index, _WorkerProtocol(self, worker.index, channel))
        channel.makeConnection(_ChildPipe(worker.transport))  # type: ignore[no-untyped-call]
        if self.drain is not None:  # the PBX drains: so does a worker started meanwhile
            asked, timeout = self.drain
            left = None if timeout is None else max(0.0, asked + timeout - worker.started_at)
            d = channel.ask("drain", {"timeout": left})
            d.addErrback(self._no_answer, worker.index, "drain")

    def _no_answer(self, failure: Failure, index: int, op: str) -> None:
        failure.trap(ChannelError)  # type: ignore[no-untyped-call]
        self.log.warn(
            "SIP worker {index} did not answer {op}: {error}",
            index=index, op=op, error=failure.value,
        )  # fmt: skip

    def _answerer(self, index: int) -> Callable[[str, dict[str, Any]], Any]:
        """What worker ``index`` may ask: only worker 0 (the admin API) asks "all"."""

        def answer(op: str, args: dict[str, Any]) -> Any:
            forwarded, inner = args.get("op"), args.get("args")
            if op != "all" or index != 0 or forwarded not in FORWARDED:
                raise ValueError(f"worker {index} may not ask {op[:40]!r}")
            if not isinstance(inner, dict):
                raise ValueError("args: an object")
            return self.ask_all(str(forwarded), inner)

        return answer

    def ask_all(self, op: str, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """
        Ask every running worker ``op``; fires with ``{"count", "up",
        "workers": [{"worker", "up", "result" or "error"}]}``. A drain asked is
        remembered, so that a worker started later drains too.
        """
        if op == "drain":
            timeout = args.get("timeout")
            if self.drain is None:
                number = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
                self.drain = (self._clock.seconds(), float(timeout) if number else None)  # type: ignore[arg-type]
                self.log.info("Drain passed on to every SIP worker")
        asked: list[Deferred[Any]] = []
        for worker in self.workers:
            if worker.transport is None or worker.channel is None:
                asked.append(fail(ChannelError("not running")))
            else:
                asked.append(worker.channel.ask(op, args))
        return DeferredList(asked, consumeErrors=True).addCallback(self._gathered)

    def _gathered(self, results: list[tuple[bool, Any]]) -> dict[str, Any]:
        each: list[dict[str, Any]] = []
        for worker, (ok, value) in zip(self.workers, results, strict=True):
            entry: dict[str, Any] = {"worker": worker.index, "up": worker.transport is not None}
            if ok:
                entry["result"] = value
            else:
                entry["error"] = str(value.value)
            each.append(entry)
        return {"count": len(self.workers), "up": self.running_count(), "workers": each}

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
        if worker.channel is not None:
            worker.channel.connectionLost()
            worker.channel = None
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
