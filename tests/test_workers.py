"""
SIP worker processes (L{warden.workers}): the supervisor on a L{Clock} with a
fake spawner, the workers' command lines and configuration, and
``[sip] workers`` parsing.
"""

from __future__ import annotations

import os
import signal
from unittest import mock

from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from warden import config as config_module
from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.server import spool_path
from warden.tap import Options, makeService
from warden.testing.reactor import seconds_until_changed
from warden.workers import (
    WorkerSupervisor,
    worker_arguments,
    worker_config,
    worker_logfile,
)


class FakeProcess:
    """A spawned worker: records the signals sent to it."""

    def __init__(self, index: int, protocol: ProcessProtocol) -> None:
        self.index = index
        self.protocol = protocol
        self.signals: list[str] = []
        self.ended = False

    def signalProcess(self, name: str) -> None:  # noqa: N802
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(name)


class FakeSpawner:
    """Stands in for spawnProcess: every worker started, in order."""

    def __init__(self) -> None:
        self.started: list[FakeProcess] = []

    def __call__(self, index: int, protocol: ProcessProtocol) -> FakeProcess:
        process = FakeProcess(index, protocol)
        self.started.append(process)
        return process

    def end(self, process: FakeProcess, code: int | None = None, sig: int | None = 9) -> None:
        """The worker ends: the supervisor hears of it as from Twisted."""
        process.ended = True
        supervisor = process.protocol._supervisor  # type: ignore[attr-defined]
        supervisor.ended(process.index, code, sig)


class SupervisorTests(SynchronousTestCase):
    """The supervisor starts, restarts, signals and stops its workers."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.spawner = FakeSpawner()
        self.sighup: list[object] = []
        self.supervisor = WorkerSupervisor(
            self.clock, 2, self.spawner, self.sighup.append,  # type: ignore[arg-type]
            min_backoff=1.0, max_backoff=8.0, stable_seconds=60.0, stop_grace=30.0,
        )  # fmt: skip
        self.supervisor.startService()

    def test_starts_every_worker(self) -> None:
        """Each worker is spawned once, with its own index."""
        self.assertEqual([p.index for p in self.spawner.started], [0, 1])
        self.assertEqual(self.supervisor.running_count(), 2)

    def test_restart_after_backoff(self) -> None:
        """A worker that dies is spawned again after the backoff, not before."""
        first = self.spawner.started[0]
        self.spawner.end(first)
        self.assertEqual(self.supervisor.running_count(), 1)
        self.clock.advance(0.99)
        self.assertEqual(len(self.spawner.started), 2)
        self.clock.advance(0.02)
        self.assertEqual([p.index for p in self.spawner.started], [0, 1, 0])
        self.assertEqual(self.supervisor.running_count(), 2)

    def test_backoff_doubles_up_to_the_maximum(self) -> None:
        """A worker dying young waits 1, 2, 4, 8, 8 s before each restart."""
        waits = []
        for _ in range(5):
            latest = [p for p in self.spawner.started if p.index == 1][-1]
            self.spawner.end(latest)
            waits.append(seconds_until_changed(self.clock, lambda: len(self.spawner.started), 0.5))
        self.assertEqual(waits, [1.0, 2.0, 4.0, 8.0, 8.0])

    def test_backoff_resets_after_a_stable_run(self) -> None:
        """A worker that ran for stable_seconds is restarted after the minimum again."""
        for wait in (1.0, 2.0):
            self.spawner.end(self.spawner.started[-1])
            self.clock.advance(wait)
        self.clock.advance(60.0)
        self.spawner.end(self.spawner.started[-1])
        self.clock.advance(1.0)
        self.assertEqual(len(self.spawner.started), 5)

    def test_other_worker_untouched(self) -> None:
        """A worker's death sends nothing to the other worker."""
        self.spawner.end(self.spawner.started[0])
        self.clock.advance(1.0)
        self.assertEqual(self.spawner.started[1].signals, [])

    def test_sighup_forwarded(self) -> None:
        """SIGHUP (the installed callback) reaches every running worker."""
        self.assertEqual(len(self.sighup), 1)
        self.sighup[0]()  # type: ignore[operator]
        self.assertEqual([p.signals for p in self.spawner.started], [["HUP"], ["HUP"]])

    def test_stop_terms_then_fires(self) -> None:
        """Stop sends SIGTERM to every worker and fires once all have ended."""
        d = self.supervisor.stopService()
        self.assertEqual([p.signals for p in self.spawner.started], [["TERM"], ["TERM"]])
        self.assertNoResult(d)
        self.spawner.end(self.spawner.started[0], code=0, sig=None)
        self.assertNoResult(d)
        self.spawner.end(self.spawner.started[1], code=0, sig=None)
        self.successResultOf(d)
        self.clock.advance(100)
        self.assertEqual(len(self.spawner.started), 2)  # no restart while stopping

    def test_stop_kills_after_grace(self) -> None:
        """A worker still running after the grace period is killed."""
        d = self.supervisor.stopService()
        self.spawner.end(self.spawner.started[0], code=0, sig=None)
        self.clock.advance(29.9)
        self.assertEqual(self.spawner.started[1].signals, ["TERM"])
        self.clock.advance(0.2)
        self.assertEqual(self.spawner.started[1].signals, ["TERM", "KILL"])
        self.spawner.end(self.spawner.started[1])
        self.successResultOf(d)

    def test_stop_cancels_pending_restart(self) -> None:
        """A restart scheduled before the stop never happens."""
        self.spawner.end(self.spawner.started[0])
        d = self.supervisor.stopService()
        self.spawner.end(self.spawner.started[1], code=0, sig=None)
        self.successResultOf(d)
        self.clock.advance(10)
        self.assertEqual(len(self.spawner.started), 2)


class WorkerSetupTests(SynchronousTestCase):
    """What each worker process is given."""

    config = parse_config_text(
        '[sip]\nworkers = 2\nport = 5060\n[state]\nurl = "redis://127.0.0.1:6379/0"\n'
        '[cluster]\nnode_id = "box"\n'
    )

    def test_node_id_and_index(self) -> None:
        """A worker is node ``<node_id>-w<I>`` and knows its number."""
        config = worker_config(self.config, 1)
        self.assertEqual((config.node_id, config.worker), ("box-w1", 1))
        self.assertEqual(self.config.worker, -1)

    def test_spool_per_worker(self) -> None:
        """Each worker has its own call-record spool; a single process keeps the old one."""
        single = spool_path(self.config)
        self.assertEqual(os.path.basename(single), "cdr-spool.jsonl")
        worker = spool_path(worker_config(self.config, 1))
        self.assertEqual(os.path.basename(worker), "cdr-spool.worker1.jsonl")

    def test_arguments(self) -> None:
        """The supervisor's options pass on; only worker 0 keeps the admin API."""
        options = {"config": "/etc/warden.toml", "sip-port": 5070, "domain": ["a.test"]}
        first = worker_arguments(options, 0, "/var/log/warden.log", python="py")
        second = worker_arguments(options, 1, "-", python="py")
        self.assertIn("--logfile=/var/log/warden.worker0.log", first)
        self.assertIn("--logfile=-", second)
        for args in (first, second):
            self.assertIn("--config=/etc/warden.toml", args)
            self.assertIn("--sip-port=5070", args)
            self.assertIn("--domain=a.test", args)
        self.assertEqual(first[-1], "--worker=0")
        self.assertNotIn("--admin-port=0", first)
        self.assertEqual(second[-2:], ["--admin-port=0", "--worker=1"])

    def test_logfile(self) -> None:
        """Without a log file the workers log to the shared standard output."""
        self.assertEqual(worker_logfile(None, 0), "-")
        self.assertEqual(worker_logfile("w.log", 3), "w.worker3.log")


class WorkersConfigTests(SynchronousTestCase):
    """``[sip] workers`` and ``worker_port_base``."""

    state = '[state]\nurl = "redis://127.0.0.1:6379/0"\n'

    def test_default_one(self) -> None:
        """One process by default."""
        self.assertEqual(parse_config_text("").sip.workers, 1)

    def test_auto(self) -> None:
        """ "auto" is one worker per core."""
        config = parse_config_text('[sip]\nworkers = "auto"\n' + self.state)
        self.assertEqual(config.sip.workers, len(os.sched_getaffinity(0)))
        for cores, expected in ((3, 3), (200, 64)):  # a big machine: at most 64
            with mock.patch.object(config_module, "usable_cores", return_value=cores):
                config = parse_config_text('[sip]\nworkers = "auto"\n' + self.state)
            self.assertEqual(config.sip.workers, expected)

    def test_bad_value(self) -> None:
        """Anything but 1..64 or "auto" names the key."""
        for value in ("0", '"many"', "65", "1.5"):
            e = self.assertRaises(ConfigError, parse_config_text, f"[sip]\nworkers = {value}\n")
            self.assertEqual(e.path, "sip.workers")

    def test_needs_state(self) -> None:
        """Several workers without [state] url is an error naming the fix."""
        e = self.assertRaises(ConfigError, parse_config_text, "[sip]\nworkers = 2\n")
        self.assertEqual(e.path, "sip.workers")
        self.assertIn("[state] url", e.problem)

    def test_tls_ports(self) -> None:
        """
        With TLS, worker I's own TLS port is worker_tls_port_base + I, by
        default right after the workers' own ports; ranges that overlap the
        workers' ports or the shared ones are refused, naming the key.
        """
        tls = '[sip]\nworkers = 2\ntransports = ["udp", "tls"]\n'
        config = parse_config_text(tls + self.state)
        self.assertEqual(config.sip.worker_tls_base(), 5072)
        config = parse_config_text(tls + "worker_tls_port_base = 6000\n" + self.state)
        self.assertEqual(config.sip.worker_tls_base(), 6000)
        for extra, key in (
            ("worker_tls_port_base = 5071\n", "sip.worker_tls_port_base"),
            ("worker_tls_port_base = 5060\n", "sip.worker_tls_port_base"),
            ("worker_tls_port_base = 5061\n", "sip.worker_tls_port_base"),
            ("worker_port_base = 5060\nport = 5090\n", "sip.worker_port_base"),
            ("worker_tls_port_base = 65535\n", "sip.worker_tls_port_base"),
        ):
            e = self.assertRaises(ConfigError, parse_config_text, tls + extra + self.state)
            self.assertEqual(e.path, key, extra)

    def test_worker_ports_overlap(self) -> None:
        """Worker ports that include the SIP port are refused."""
        text = "[sip]\nworkers = 2\nport = 5071\nworker_port_base = 5070\n" + self.state
        e = self.assertRaises(ConfigError, parse_config_text, text)
        self.assertEqual(e.path, "sip.worker_port_base")


class CommandLineTests(SynchronousTestCase):
    """``twistd warden`` with ``[sip] workers = 2``: supervisor or worker."""

    def options(self, *extra: str, sip: str = "") -> Options:
        path = self.mktemp()
        with open(path, "w", encoding="ascii") as f:
            f.write(f'[sip]\nworkers = 2\n{sip}[state]\nurl = "redis://127.0.0.1:6379/0"\n')
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        options = Options()
        options.parseOptions(["--config", path, "--data-dir", self.mktemp(), *extra])
        return options

    def test_supervisor_without_worker_option(self) -> None:
        """Without --worker, makeService builds the supervisor of two workers."""
        root = makeService(self.options(), reactor=MemoryReactorClock())
        self.assertIsInstance(root, WorkerSupervisor)
        self.assertEqual(len(root.workers), 2)  # type: ignore[attr-defined]

    def test_supervisor_makes_the_tls_certificate(self) -> None:
        """With TLS and no certificate configured, the supervisor generates the one pair."""
        options = self.options(sip='transports = ["udp", "tls"]\n')
        assert options.config is not None
        makeService(options, reactor=MemoryReactorClock())
        data = options.config.server.data_dir
        self.assertTrue(os.path.exists(os.path.join(data, "sip-tls-cert.pem")))
        self.assertTrue(os.path.exists(os.path.join(data, "sip-tls-key.pem")))

    def test_worker_option(self) -> None:
        """--worker 1 runs worker 1: its node id, and a SIGHUP handler from the start."""
        options = self.options("--worker", "1")
        assert options.config is not None
        self.assertEqual(options.config.worker, 1)
        self.assertTrue(options.config.node_id.endswith("-w1"))
        self.assertTrue(callable(signal.getsignal(signal.SIGHUP)))

    def test_worker_out_of_range(self) -> None:
        """A worker number beyond [sip] workers is refused, naming the key."""
        error = self.assertRaises(usage.UsageError, self.options, "--worker", "2")
        self.assertIn("sip.workers", str(error))
        error = self.assertRaises(usage.UsageError, self.options, "--worker", "x")
        self.assertIn("--worker", str(error))
