"""
SIP worker processes end to end (ADR 0032): a real ``twistd warden`` with
``[sip] workers = 2`` and its state in the throwaway ``redis-server``.

SIPp registers users and places calls through the shared port, one socket per
call so the kernel spreads them over both workers; the callee hangs up, so its
BYE must reach the worker holding the call through the Contact that worker
sent. A worker killed with SIGKILL is restarted by the supervisor while the
other worker's calls go on; SIGHUP to the supervisor reaches both workers.
Only worker 0 registers a trunk: the SIPp ITSP sees one REGISTER flow.
SIP over TLS: both workers accept TLS on the shared port and each on its own,
and registrations and calls over TLS complete across them.
With the admin API (served by worker 0): ``/metrics`` shows every worker's
counters under a ``worker`` label, and ``wardenctl drain`` drains both workers
(new calls on either answered 503), reported as one drain state.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred

from tests.integration.admin_client import AdminClient, new_admin
from tests.integration.clients import NatPhone, poll_async
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
    sipp_register_args,
    sipp_uac_args,
    wardenctl,
    write_sipp_caller,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_messages, read_sipp_stats
from tests.integration.test_tls import client_pair
from tests.integration.test_trunks import (
    ACCOUNT,
    CALLER_ID,
    DIALLED,
    ITSP_HOST,
    PASSWORD,
    TrunkHarness,
    trunks_toml,
)
from tests.integration.tls_client import SipTlsClient, callee_behind_nat
from tests.integration.tls_relay import calls_through, start_relay
from warden.sip.message import Request
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


async def worker_samples(client: AdminClient, name: str, **labels: str) -> dict[str, float]:
    """``name``'s samples in ``/metrics`` matching ``labels``, summed by their worker label."""
    scraped = await client.request("GET", "/metrics")
    assert scraped.status == 200, scraped.body
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(scraped.body.decode()):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                worker = sample.labels.get("worker", "")
                found[worker] = found.get(worker, 0.0) + sample.value
    return found


async def _total(samples: Awaitable[dict[str, float]], wanted: float) -> bool:
    """Whether the samples add up to ``wanted``."""
    return sum((await samples).values()) == wanted


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

    async def start_workers(self, sip: dict[str, Any] | None = None) -> WardenProcess:
        """
        Warden with two SIP workers, its state in the tests' Redis server, and
        ``sip`` added to ``[sip]``; otherwise its defaults (the admin API on).
        """
        server = servers.redis()
        settings: dict[str, Any] = {
            "sip": {"workers": 2, "worker_port_base": _free_pair(), **(sip or {})},
            "state": {"url": server.url},
            # Its own keys in the Redis server the tests share.
            "cluster": {"name": uuid.uuid4().hex},
        }
        warden = await self.start_warden(settings)
        await poll(lambda: self.log_lines(warden, "SIP listening on UDP") == 2, 30)
        return warden

    def log_lines(self, warden: WardenProcess, text: str) -> int:
        """How many times ``text`` is in the logs (the supervisor's and the workers')."""
        logs = [warden.log_path, *warden.log_path.parent.glob("warden.worker*.log")]
        return sum(p.read_text(errors="replace").count(text) for p in logs if p.exists())

    def log_problems(self, warden: WardenProcess, last: int = 40) -> str:
        """The last warnings and errors of the logs (for a failure's message)."""
        logs = [warden.log_path, *warden.log_path.parent.glob("warden.worker*.log")]
        lines = [
            f"{p.name}: {line}"
            for p in logs
            if p.exists()
            for line in p.read_text(errors="replace").splitlines()
            if any(w in line.lower() for w in ("error", "warn", "fail", "timed out", "traceback"))
        ]
        return "\n".join(lines[-last:])

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
        uac = self.spawn_sipp(args, run_dir)
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

    async def refused_calls(self, warden: WardenProcess, calls: int) -> tuple[int | None, str]:
        """
        ``calls`` calls from 2000 to 2001 expecting a final failure, one UAC
        socket per call (so both workers get some); the exit code and a context.
        """
        users = await provision(warden.config_path, 2, first=2000)
        caller, callee = users.numbers
        run_dir = self.workdir()
        csv = write_sipp_caller(run_dir, caller, users.passwords[caller], callee)
        args = [
            f"{warden.address[0]}:{warden.address[1]}",
            "-sf", str(SCENARIOS / "refused_call_uac.xml"), "-inf", str(csv),
            "-i", LOCALHOST, "-t", "un", "-max_socket", "1000", "-m", str(calls),
            "-r", str(calls), "-timeout", "30s", "-timeout_error", "-trace_err",
        ]  # fmt: skip
        result = await run_sipp(args, run_dir)
        return result.code, f"{result.stderr}\n{read_sipp_errors(run_dir)}"

    async def test_phone_behind_port_restricted_nat(self) -> None:
        """
        A phone behind a port-restricted NAT (it takes packets only from where
        it sent them) registers through the shared port: its 401 and 200 come
        from that port. 16 calls to it from 16 SIPp sockets, which both
        workers take, reach it and are answered; the caller hangs up. Every
        INVITE and BYE reaches the phone from the shared port (the worker
        holding its binding sends them, ADR 0010), and nothing is dropped.
        """
        warden = await self.start_workers()
        users = await provision(warden.config_path, 2, first=2000)
        caller, callee = users.numbers
        phone = await NatPhone.open(warden.address)
        self.addCleanup(lambda: Deferred.fromCoroutine(phone.close()))
        contact = f"<sip:{callee}@{NatPhone.PRIVATE}>"
        registered = await phone.register(callee, users.passwords[callee], contact)
        self.assertEqual(registered.status, 200, f"dropped from {phone.dropped}")
        run_dir = self.workdir()
        csv = write_sipp_caller(run_dir, caller, users.passwords[caller], callee)
        args = sipp_uac_args(
            warden.address, BENCH / "call_uac.xml", csv,
            "-t", "un", "-max_socket", "100", "-r", "16", "-d", "200", calls=16, timeout=30,
        )  # fmt: skip
        result = await run_sipp(args, run_dir)

        def sources(method: str) -> list[tuple[str, int]]:
            return [source for r, source in phone.requests if r.method == method]

        def calls(method: str) -> set[str]:
            return {r.call_id for r, _ in phone.requests if r.method == method}

        await poll(lambda: len(calls("BYE")) == 16, 10)
        await poll(lambda: len(self.call_records(warden)) == 16, 15)
        stats = read_sipp_stats(run_dir)
        context = (
            f"UAC exit {result.code}\n{result.stderr}\n{read_sipp_errors(run_dir)}\n"
            f"dropped from {phone.dropped}; INVITEs from {sources('INVITE')};"
            f" BYEs from {sources('BYE')}; call records {self.call_records(warden)}\n"
            f"{self.log_problems(warden)}"
        )
        self.assertEqual((result.code, stats.successful, stats.failed), (0, 16, 0), context)
        for method in ("INVITE", "BYE"):
            self.assertEqual(len(calls(method)), 16, context)
            self.assertEqual(set(sources(method)), {warden.address}, context)
        self.assertEqual(phone.dropped, [], context)
        records = self.call_records(warden)
        self.assertEqual({(r[1], r[2]) for r in records}, {("ANSWERED", "caller")}, context)
        self.assertEqual({r[0].rsplit("-", 1)[-1] for r in records}, {"w0", "w1"}, context)

    async def test_response_goes_to_the_worker_its_via_names(self) -> None:
        """
        Responses that reach the shared port go on to the worker whose own
        port their top Via names (as a phone's answer does after the kernel
        moved the phone to another worker): from 8 sockets, one response
        naming each worker's port; whichever worker each socket reaches, it
        passes on the one naming the other, so both workers together pass
        on exactly 8 (``warden_sip_responses_passed_on_total``).
        """
        base = _free_pair()
        warden = await self.start_workers(sip={"worker_port_base": base})
        client, _ = await new_admin(warden)
        response = (
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-{n}-{port};rport\r\n"
            "To: <sip:2001@{host}>;tag=b\r\nFrom: <sip:2000@{host}>;tag=a\r\n"
            "Call-ID: passed-on-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        for n in range(8):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((LOCALHOST, 0))
                for port in (base, base + 1):
                    data = response.format(host=LOCALHOST, port=port, n=n).encode()
                    sock.sendto(data, warden.address)

        async def passed_on() -> dict[str, float]:
            return await worker_samples(client, "warden_sip_responses_passed_on_total")

        await poll_async(lambda: _total(passed_on(), 8), 15)
        self.assertEqual(sum((await passed_on()).values()), 8, await passed_on())

    async def test_metrics_of_every_worker(self) -> None:
        """
        200 users register over both workers: ``/metrics`` (served by worker
        0) counts each worker's registrations under its ``worker`` label, and
        together they are the 200 sent; both workers are up.
        """
        warden = await self.start_workers()
        users = await provision(warden.config_path, 200, first=3000)
        run_dir = self.workdir()
        reg_args = sipp_register_args(warden.address, users.sipp_csv, 200, 100, transport="un")
        reg = await run_sipp([*reg_args, "-max_socket", "1000"], run_dir)
        self.assertEqual(reg.code, 0, reg.stderr + read_sipp_errors(run_dir))
        client, _ = await new_admin(warden)
        counted = await worker_samples(client, "warden_registrar_registrations_total")
        self.assertEqual(set(counted), {"0", "1"}, counted)
        self.assertTrue(all(v > 0 for v in counted.values()), counted)
        self.assertEqual(sum(counted.values()), 200, counted)
        self.assertEqual(await worker_samples(client, "warden_sip_workers_up"), {"": 2.0})
        # The bindings are the whole PBX's (shared state): once, with no worker label.
        bindings = await worker_samples(client, "warden_registrar_bindings")
        self.assertEqual(list(bindings), [""], bindings)
        status = (await client.request("GET", "/api/v1/status")).json()
        self.assertEqual(status["workers"], {"count": 2, "up": 2})

    async def test_drain_reaches_every_worker(self) -> None:
        """
        ``wardenctl drain`` through worker 0's admin API drains both workers:
        the drain state lists both, and 20 new calls from 20 sockets are all
        answered 503, by both workers (their 5xx counters in ``/metrics``).
        """
        warden = await self.start_workers()
        client, _ = await new_admin(warden)
        made = await wardenctl(warden.config_path, "admin", "token", "ops", "drainer",
                               "--scopes", "write")  # fmt: skip
        self.assertEqual(made.code, 0, made.stderr)
        token_file = warden.workdir / "token"
        token_file.write_text(made.stdout.strip())
        drained = await wardenctl(warden.config_path, "drain", "--wait", "--timeout", "30",
                                  "--token-file", str(token_file))  # fmt: skip
        self.assertEqual(drained.code, 0, drained.stderr + drained.stdout)
        self.assertIn("drained", drained.stdout)
        state = (await client.request("GET", "/api/v1/drain")).json()
        self.assertEqual((state["draining"], state["finished"]), (True, True), state)
        each = state["workers"]["each"]
        self.assertEqual([(w["worker"], w["draining"]) for w in each], [(0, True), (1, True)])
        code, context = await self.refused_calls(warden, 20)
        self.assertEqual(code, 0, context)
        refused = await worker_samples(
            client, "warden_sip_responses_sent_total", method="INVITE", status_class="5xx"
        )
        self.assertEqual(set(refused), {"0", "1"}, refused)
        self.assertEqual(sum(refused.values()), 20, refused)
        answered = await worker_samples(
            client, "warden_sip_responses_sent_total", method="INVITE", status_class="2xx"
        )
        self.assertEqual(sum(answered.values()), 0, answered)

    async def test_tls_on_both_workers(self) -> None:
        """
        With TLS, 40 users register over 40 TLS connections (SIPp over TCP
        through socat) to the shared TLS port: all succeed, on both workers
        (their registration counters); each worker's own TLS port takes a
        registration; 12 calls over new TLS connections, taken by both
        workers (their call records), reach a callee registered over TLS on
        one worker, and the INVITEs it gets name a worker's own TLS port.
        """
        tls_port, own_tls = free_port(), _free_pair()
        warden = await self.start_workers(sip={
            "transports": ["udp", "tcp", "tls"], "tls_port": tls_port,
            "worker_tls_port_base": own_tls,
        })  # fmt: skip
        await poll(lambda: self.log_lines(warden, "SIP listening on TLS") == 2, 30)
        users = await provision(warden.config_path, 40, first=3000)
        run_dir = self.workdir()
        relay = await start_relay(self, (LOCALHOST, tls_port), *client_pair(run_dir), run_dir)
        reg_args = sipp_register_args(relay.address, users.sipp_csv, 40, 20, transport="tn")
        reg = await run_sipp([*reg_args, "-max_socket", "100"], run_dir, timeout=120)
        self.assertEqual(reg.code, 0, reg.stderr + read_sipp_errors(run_dir))
        client, _ = await new_admin(warden)
        counted = await worker_samples(client, "warden_registrar_registrations_total")
        self.assertEqual(set(counted), {"0", "1"}, counted)
        self.assertEqual(sum(counted.values()), 40, counted)
        for index in (0, 1):
            phone = await SipTlsClient.connect((LOCALHOST, own_tls + index))
            self.addCleanup(lambda p=phone: Deferred.fromCoroutine(p.close()))
            number = users.numbers[index]
            contact = f"<sip:{number}@{LOCALHOST}:{phone.local_port};transport=tls>"
            registered = await phone.register(number, users.passwords[number], contact)
            self.assertEqual(registered.status, 200, f"worker {index}'s own TLS port")

        callers = await provision(warden.config_path, 2, first=2000)
        caller, callee = callers.numbers
        phone = await callee_behind_nat(
            self, (LOCALHOST, tls_port), callee, callers.passwords[callee]
        )
        call_dir = self.workdir()
        csv = write_sipp_caller(call_dir, caller, callers.passwords[caller], callee)
        await calls_through(self, relay, csv, call_dir, 12, "tn")

        def received(method: str) -> list[Request]:
            return [r for r in phone.requests if r.method == method]

        # SIPp ends on its BYE's 200; the callee's BYE may still be on its way.
        await poll(lambda: (len(received("INVITE")), len(received("BYE"))) == (12, 12), 10)
        invites, byes = received("INVITE"), received("BYE")
        if (len(invites), len(byes)) != (12, 12):
            await poll(lambda: len(self.call_records(warden)) == 12, 15)
            self.fail(
                f"the callee got {len(invites)} INVITEs and {len(byes)} BYEs of 12 calls;"
                f" call records {self.call_records(warden)}\n{self.log_problems(warden)}"
            )
        await poll(lambda: len(self.call_records(warden)) == 12, 15)
        nodes = {r[0].rsplit("-", 1)[-1] for r in self.call_records(warden)}
        self.assertEqual(
            nodes,
            {"w0", "w1"},
            f"call records {self.call_records(warden)}; registrations by worker {counted};"
            f" INVITEs' Vias {[i.top_via.port for i in invites]}\n{self.log_problems(warden)}",
        )
        for invite in invites:
            self.assertEqual(invite.top_via.transport.upper(), "TLS")
            self.assertIn(invite.top_via.port, (own_tls, own_tls + 1))


class WorkerTrunkTests(TrunkHarness):
    """A registering trunk on a Warden with two SIP workers."""

    def setUp(self) -> None:
        """SIPp (the harness) and redis-server are needed."""
        super().setUp()
        require_binary(self, "redis-server", "redis-server")

    async def test_one_registration_per_node(self) -> None:
        """
        Only worker 0 registers the trunk: the SIPp ITSP receives one REGISTER
        flow (401, then the digest), ``wardenctl trunks`` (worker 0) shows it
        registered, and an extension's call through the shared port goes out
        on the trunk whichever worker takes it.
        """
        itsp, port, itsp_dir = self.itsp(ITSP_HOST, "itsp_uas.xml", 2)
        workdir = self.workdir()
        password_file = workdir / "itsp.pw"
        password_file.write_text(PASSWORD + "\n")
        toml = trunks_toml(
            [{"name": "itsp", "host": ITSP_HOST, "port": port, "username": ACCOUNT,
              "password_file": str(password_file), "from_number": CALLER_ID}],
            [{"pattern": "_9NXXNXXXXXX", "strip": 1, "prefix": "1", "trunks": ["itsp"]}],
            [],
        )  # fmt: skip
        settings = {
            "sip": {"workers": 2, "worker_port_base": _free_pair()},
            "state": {"url": servers.redis().url},
            "cluster": {"name": uuid.uuid4().hex},
        }
        warden = await self.start_warden(settings, workdir, toml)
        logs = [warden.log_path.parent / f"warden.worker{i}.log" for i in (0, 1)]

        def lines(text: str) -> list[int]:
            return [p.read_text(errors="replace").count(text) if p.exists() else 0 for p in logs]

        await poll(lambda: lines("SIP listening on UDP") == [1, 1], 30)
        users = await provision(warden.config_path, 2, first=2000)
        self.assertTrue(await poll_async(lambda: self.state_is(warden, "registered"), 30))
        self.assertEqual(lines("Trunk itsp: registered"), [1, 0])
        await self.dial(warden, users, DIALLED)
        await self.sipp_finished(itsp, itsp_dir)
        messages = read_sipp_messages(itsp_dir)
        # One registration: one Call-ID, CSeq 1 (challenged) then 2 (with
        # the digest); UDP retransmissions of either count once.
        registers = {
            (re.search(r"^Call-ID: (\S+)", m, re.M).group(1),  # type: ignore[union-attr]
             re.search(r"^CSeq: (\d+) ", m, re.M).group(1))  # type: ignore[union-attr]
            for m in messages.split("UDP message received")[1:]
            if m.split("\n\n", 1)[-1].lstrip().startswith(f"REGISTER sip:{ITSP_HOST}")
        }  # fmt: skip
        self.assertEqual(len({call_id for call_id, _ in registers}), 1, messages)
        self.assertEqual({cseq for _, cseq in registers}, {"1", "2"}, messages)
        self.assertEqual(lines("Trunk itsp: registered"), [1, 0])
        [state] = await self.trunks_state(warden)
        self.assertEqual((state["state"], state["last_error"]), ("registered", ""))
