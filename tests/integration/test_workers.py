"""
SIP worker processes end to end (ADR 0032): a real ``twistd warden`` with
``[sip] workers = 2`` and its state in the throwaway ``redis-server``.

SIPp registers users and places calls through the shared port, one socket per
call so the kernel spreads them over both workers; the callee hangs up, so its
BYE must reach the worker holding the call through the Contact that worker
sent. A worker killed with SIGKILL is restarted by the supervisor while the
other worker's calls go on; SIGHUP to the supervisor reaches both workers.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from tests.integration.harness import (
    LOCALHOST,
    IntegrationTestCase,
    WardenProcess,
    free_port,
    poll,
    provision,
    require_binary,
    require_sipp,
    run_sipp,
    sipp_command,
    sipp_register_args,
    sipp_uac_args,
    spawn,
    stop_spawned,
    write_sipp_caller,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_stats
from warden.testing import servers

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
BENCH = Path(__file__).resolve().parents[2] / "bench" / "scenarios"


def _free_pair() -> int:
    """A port ``p`` such that ``p`` and ``p + 1`` are free for UDP and TCP."""
    for _ in range(50):
        port = free_port()
        if port >= 65535:
            continue
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((LOCALHOST, port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two consecutive free ports")


def _acks(directory: Path) -> int:
    """How many ACKs a SIPp phone logged (``-trace_msg``) in ``directory``."""
    logs = directory.glob("*_messages.log")
    return sum(p.read_text(errors="replace").count("\nACK sip:") for p in logs)


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's child processes (its workers)."""
    path = Path(f"/proc/{supervisor}/task/{supervisor}/children")
    return sorted(int(p) for p in path.read_text().split())


class WorkerTests(IntegrationTestCase):
    """Two SIP workers behind one port serve registrations and calls."""

    def setUp(self) -> None:
        """SIPp and redis-server are needed."""
        super().setUp()
        require_sipp(self)
        require_binary(self, "redis-server", "redis-server")

    async def start_workers(self) -> WardenProcess:
        server = servers.redis()
        return await self.start_warden(
            {
                "sip": {"workers": 2, "worker_port_base": _free_pair()},
                "state": {"url": server.url},
                # Its own keys in the Redis server the tests share.
                "cluster": {"name": uuid.uuid4().hex},
                "admin": {"enabled": False},
            }
        )

    def log_lines(self, warden: WardenProcess, text: str) -> int:
        """How many times ``text`` is in the logs (the supervisor's and the workers')."""
        logs = [warden.log_path, *warden.log_path.parent.glob("warden.worker*.log")]
        return sum(p.read_text(errors="replace").count(text) for p in logs if p.exists())

    def call_records(self, warden: WardenProcess) -> list[tuple[str, str, str]]:
        """(node_id, disposition, hangup_side) of every call record."""
        with sqlite3.connect(warden.database_path) as db:
            rows = db.execute("SELECT node_id, disposition, hangup_side FROM call_records")
            return [tuple(r) for r in rows]

    async def place_calls(
        self,
        warden: WardenProcess,
        calls: int,
        rate: int,
        hold_ms: int = 300,
        during: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[int | None, Any, str]:
        """
        ``calls`` calls from extension 2000 to 2001 (a SIPp UAS that hangs up
        after ``hold_ms``), one UAC socket per call; ``during`` runs once every
        call is answered. Returns the UAC's exit code, its stats and a context.
        """
        users = await provision(warden.config_path, 2, first=2000)
        caller, callee = users.numbers
        callee_phone, callee_dir = await self.sipp_callee(
            warden, callee, users.passwords[callee], SCENARIOS / "bye_uas.xml", calls,
            more=("-d", str(hold_ms)),
        )  # fmt: skip
        run_dir = self.workdir()
        csv = write_sipp_caller(run_dir, caller, users.passwords[caller], callee)
        args = sipp_uac_args(
            warden.address, SCENARIOS / "answered_until_bye_uac.xml", csv,
            "-t", "un", "-max_socket", "1000", "-r", str(rate), calls=calls, timeout=30,
        )  # fmt: skip
        uac, process = spawn(sipp_command(args), run_dir)
        self.addCleanup(lambda: Deferred.fromCoroutine(stop_spawned(uac, process)))
        if during is not None:
            await poll(lambda: _acks(callee_dir) >= calls, 30)
            await during()
        await poll(lambda: not uac.running, 60)
        stats = read_sipp_stats(run_dir)
        context = (
            f"UAC exit {uac.code}\n{uac.output()}\n{read_sipp_errors(run_dir)}\n"
            f"callee: {callee_phone.output()}\n{read_sipp_errors(callee_dir)}"
        )
        return uac.code, stats, context

    async def test_registrations_and_calls_on_both_workers(self) -> None:
        """
        Many users register through the shared port, and calls hung up by the
        callee all complete: each BYE reaches the worker holding its call.
        """
        warden = await self.start_workers()
        self.assertEqual(len(worker_pids(warden.pid)), 2)
        users = await provision(warden.config_path, 200, first=3000)
        run_dir = self.workdir()
        reg_args = sipp_register_args(warden.address, users.sipp_csv, 200, 100, transport="un")
        reg = await run_sipp([*reg_args, "-max_socket", "1000"], run_dir)
        self.assertEqual(reg.code, 0, reg.stderr + read_sipp_errors(run_dir))
        code, stats, context = await self.place_calls(warden, 20, 10)
        self.assertEqual(code, 0, context)
        self.assertEqual((stats.successful, stats.failed), (20, 0), context)
        # Every call was answered and ended by the callee, on both workers
        # (one UAC socket per call spreads the calls over them).
        await poll(lambda: len(self.call_records(warden)) == 20, 15)
        records = self.call_records(warden)
        self.assertEqual({(r[1], r[2]) for r in records}, {("ANSWERED", "callee")})
        self.assertEqual({r[0] for r in records}, {"integration-w0", "integration-w1"})

    async def test_killed_worker_is_restarted(self) -> None:
        """
        SIGKILL ends one worker while calls are up on both: the other worker's
        calls still end normally (hung up by the callee, answered), the
        supervisor starts a new worker, and calls placed afterwards complete.
        """
        warden = await self.start_workers()
        await poll(lambda: self.log_lines(warden, "SIP listening on UDP") == 2, 30)
        first = worker_pids(warden.pid)
        self.assertEqual(len(first), 2)

        async def kill_worker_0() -> None:
            os.kill(first[0], signal.SIGKILL)

        _, stats, context = await self.place_calls(warden, 16, 16, 4000, kill_worker_0)
        await poll(lambda: first[0] not in worker_pids(warden.pid), 15)
        await poll(lambda: len(worker_pids(warden.pid)) == 2, 30)
        self.assertIn(first[1], worker_pids(warden.pid))
        self.assertEqual(self.log_lines(warden, "SIP worker 0 ended (signal 9)"), 1)
        # Worker 1's calls went on to their normal end; worker 0's were lost.
        await poll(lambda: any(r[0] == "integration-w1" for r in self.call_records(warden)), 15)
        survivors = [r for r in self.call_records(warden) if r[0] == "integration-w1"]
        self.assertEqual({(r[1], r[2]) for r in survivors}, {("ANSWERED", "callee")})
        self.assertEqual(stats.successful, len(survivors), context)
        self.assertLess(stats.successful, 16, context)
        # The restarted worker serves new calls.
        await poll(lambda: self.log_lines(warden, "SIP listening on UDP") == 3, 30)
        records = len(self.call_records(warden))
        code, stats, context = await self.place_calls(warden, 10, 10)
        self.assertEqual((code, stats.successful, stats.failed), (0, 10, 0), context)
        await poll(lambda: len(self.call_records(warden)) == records + 10, 15)

    async def test_sighup_reaches_every_worker(self) -> None:
        """SIGHUP to the supervisor is passed on, and both workers keep running."""
        warden = await self.start_workers()
        await poll(lambda: self.log_lines(warden, "SIP listening on UDP") == 2, 30)
        pids = worker_pids(warden.pid)
        os.kill(warden.pid, signal.SIGHUP)
        await poll(lambda: self.log_lines(warden, ": SIGHUP received") == 2, 15)
        self.assertEqual(self.log_lines(warden, "SIP worker 0: SIGHUP received"), 1)
        self.assertEqual(self.log_lines(warden, "SIP worker 1: SIGHUP received"), 1)
        self.assertEqual(worker_pids(warden.pid), pids)
