"""
The admin plugin on a real ``twistd warden`` over real HTTPS: accounts made by
``wardenctl admin add``, login and tokens, extensions through the API, TLS 1.2+
only, certificate reload on SIGHUP, drain (``wardenctl drain``, INVITE -> 503),
Schemathesis against the served OpenAPI document, and ``/metrics`` after a real
SIPp call, parsed with prometheus' own parser.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sqlite3
import ssl
import sys
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.task import Clock
from twisted.web.client import Agent, readBody

from tests.integration import test_calls
from tests.integration.admin_client import AdminClient, new_admin, served_certificate
from tests.integration.clients import LOCALHOST, SipUdpClient, pause, real_reactor
from tests.integration.harness import (
    IntegrationTestCase,
    WardenProcess,
    free_port,
    poll,
    require_sipp,
    run_process,
    sipp_command,
    spawn,
    wardenctl,
)
from tests.integration.sipp_traces import read_sipp_stats
from warden.sip.message import new_tag
from warden.tls import fingerprint, generate_self_signed


def der_fingerprint(der: bytes) -> str:
    """``AB:CD:..`` SHA-256 of a DER certificate."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


class _AdminMixin(IntegrationTestCase):
    async def admin(self, warden: WardenProcess, scopes: str = "") -> AdminClient:
        """An admin client logged in as a new account made with wardenctl."""
        client, self.password = await new_admin(warden)
        return client


class AdminHttpsTests(_AdminMixin):
    """The API over HTTPS against the real server."""

    async def test_api_over_https(self) -> None:
        """Login, a token, an extension created and listed, the audit entry, no secrets."""
        warden = await self.start_warden()
        client = await self.admin(warden)
        created = await client.request("POST", "/api/v1/tokens",
                                       {"name": "ci", "scopes": ["read", "write"]})  # fmt: skip
        self.assertEqual(created.status, 201, created.body)
        client.token = created.json()["token"]
        extension = await client.request("POST", "/api/v1/extensions", {"number": "4100"})
        self.assertEqual(extension.status, 201, extension.body)
        sip_password = extension.json()["password"]
        listed = await client.request("GET", "/api/v1/extensions")
        self.assertEqual([e["number"] for e in listed.json()["items"]], ["4100"])
        status = await client.request("GET", "/api/v1/status")
        self.assertEqual(status.json()["counts"]["extensions"], 1)
        audit = await client.request("GET", "/api/v1/audit")
        actions = [e["action"] for e in audit.json()["items"]]
        self.assertIn("POST /api/v1/extensions", actions)
        unauthenticated = AdminClient(warden.admin_port, client.cert_path)
        denied = await unauthenticated.request("GET", "/api/v1/extensions")
        self.assertEqual(denied.status, 401)
        self.assertEqual((await unauthenticated.request("GET", "/metrics")).status, 401)
        self.assertEqual((await unauthenticated.request("GET", "/healthz")).status, 200)
        self.assertEqual((await unauthenticated.request("GET", "/readyz")).status, 200)
        log = warden.log_text()
        for secret in (sip_password, client.token):
            self.assertNotIn(secret, log)

    async def test_password_change_ends_sessions_and_tokens(self) -> None:
        """On a real server a password change ends the session and token made before,
        and a token of an account disabled with wardenctl stops within 10 s."""
        warden = await self.start_warden()
        client = await self.admin(warden)
        session = client.token
        made = await client.request("POST", "/api/v1/tokens", {"name": "ci", "scopes": ["read"]})
        self.assertEqual(made.status, 201, made.body)
        self.assertIsNotNone(made.json()["expires_at"])
        token = made.json()["token"]
        changed = await client.request("POST", "/api/v1/auth/password", {
            "current_password": self.password, "new_password": "a much longer one"})  # fmt: skip
        self.assertEqual(changed.status, 204, changed.body)
        for old in (session, token):
            client.token = old
            self.assertEqual((await client.request("GET", "/api/v1/status")).status, 401)
        await client.login("ops", "a much longer one")
        made = await client.request("POST", "/api/v1/tokens", {"name": "ci", "scopes": ["read"]})
        client.token = made.json()["token"]
        self.assertEqual((await client.request("GET", "/api/v1/status")).status, 200)
        disabled = await wardenctl(warden.config_path, "admin", "disable", "ops")
        self.assertEqual(disabled.code, 0, disabled.stderr)

        async def refused() -> bool:
            return (await client.request("GET", "/api/v1/status")).status == 401

        for _ in range(60):
            if await refused():
                break
            await pause(0.25)
        self.assertTrue(await refused())

    async def test_certificate_fingerprint_and_tls_versions(self) -> None:
        """The served certificate is the generated one, logged; TLS 1.1 is refused."""
        warden = await self.start_warden()
        cert = warden.data_dir / "admin-cert.pem"
        self.assertTrue(await poll(cert.exists, 10))
        expected = fingerprint(cert.read_bytes())
        self.assertIn(expected, warden.log_text())
        self.assertEqual(der_fingerprint(await served_certificate(warden.admin_port)), expected)
        self.assertEqual(
            der_fingerprint(await served_certificate(warden.admin_port, ssl.TLSVersion.TLSv1_2)),
            expected,
        )
        with self.assertRaises(ssl.SSLError) as refused:
            await served_certificate(warden.admin_port, ssl.TLSVersion.TLSv1_1)
        # The server's alert, not a client that could not offer TLS 1.1.
        self.assertIn("ALERT_PROTOCOL_VERSION", str(refused.exception))

    async def test_certificate_reload_on_sighup(self) -> None:
        """A new certificate in the configured files is served after SIGHUP, no restart."""
        workdir = self.workdir()
        cert, key = workdir / "cert.pem", workdir / "key.pem"
        generate_self_signed(str(cert), str(key), Clock())
        first = fingerprint(cert.read_bytes())
        warden = await self.start_warden(
            {"admin": {"certificate": str(cert), "private_key": str(key)}}, workdir=workdir
        )
        pid = warden.pid
        self.assertEqual(der_fingerprint(await served_certificate(warden.admin_port)), first)
        # A broken pair is refused and the old certificate stays in use.
        key.write_text("not a key")
        os.kill(pid, 1)
        self.assertTrue(await poll(lambda: "not reloaded" in warden.log_text(), 10))
        self.assertEqual(der_fingerprint(await served_certificate(warden.admin_port)), first)
        generate_self_signed(str(cert), str(key), Clock())
        second = fingerprint(cert.read_bytes())
        self.assertNotEqual(first, second)
        os.kill(pid, 1)
        self.assertTrue(await poll(lambda: f"reloaded; SHA-256 fingerprint {second}"
                                   in warden.log_text(), 10), warden.log_tail())  # fmt: skip
        self.assertEqual(der_fingerprint(await served_certificate(warden.admin_port)), second)
        self.assertEqual(warden.pid, pid)
        self.assertTrue(warden.running)

    async def test_admin_port_option(self) -> None:
        """--admin-port replaces the port of [admin] listen."""
        warden = WardenProcess(self.workdir())
        configured = free_port()
        config = warden.config_path.read_text()
        warden.config_path.write_text(config.replace(f"tcp:{warden.admin_port}:",
                                                     f"tcp:{configured}:"))  # fmt: skip
        command = warden.command
        warden.command = lambda: [*command(), "--admin-port", str(warden.admin_port)]  # type: ignore[method-assign]
        self.addCleanup(lambda: Deferred.fromCoroutine(warden.cleanup()))
        await warden.start()
        cert = warden.data_dir / "admin-cert.pem"
        self.assertTrue(await poll(cert.exists, 10))
        result = await AdminClient(warden.admin_port, cert).request("GET", "/healthz")
        self.assertEqual(result.status, 200)
        with self.assertRaises(ConnectionRefusedError):
            await served_certificate(configured)


class AdminPortTakenTests(_AdminMixin):
    """A taken admin port stops start-up with one line; ``--admin-port 0`` is "off"."""

    async def test_taken_admin_port_fails_start_up(self) -> None:
        """
        With the admin port already bound by another process, Warden exits with
        status 1 and one log line naming the port and the fix, no traceback.
        """
        warden = WardenProcess(self.workdir())
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind((LOCALHOST, warden.admin_port))
        holder.listen(1)
        result = await run_process(warden.command(), warden.workdir, timeout=30)
        log = warden.log_text()
        self.assertEqual(result.code, 1, log)
        self.assertNotIn("Traceback", log)
        lines = [line for line in log.splitlines() if "admin API cannot listen" in line]
        self.assertEqual(len(lines), 1, log)
        self.assertIn(f"{LOCALHOST}:{warden.admin_port}", lines[0])
        self.assertIn("--admin-port", lines[0])

    async def test_admin_port_zero_runs_without_admin_api(self) -> None:
        """--admin-port 0 starts SIP without the admin API, and says so once."""
        warden = WardenProcess(self.workdir())
        command = warden.command
        warden.command = lambda: [*command(), "--admin-port", "0"]  # type: ignore[method-assign]
        self.addCleanup(lambda: Deferred.fromCoroutine(warden.cleanup()))
        await warden.start()
        self.assertEqual(warden.log_text().count("admin API is off"), 1, warden.log_tail())
        with self.assertRaises(ConnectionRefusedError):
            await served_certificate(warden.admin_port)
        self.assertFalse((warden.data_dir / "admin-cert.pem").exists())


class PlainMetricsListenerTests(_AdminMixin):
    """``metrics_listen``: plain HTTP with /metrics and health only, no token."""

    async def test_plain_listener(self) -> None:
        """Scrapers read /metrics without a token; the API is not served there."""
        port = free_port()
        warden = await self.start_warden(
            {"admin": {"metrics_listen": f"tcp:{port}:interface={LOCALHOST}"}}
        )
        agent = Agent(real_reactor())
        for path, status in (("/metrics", 200), ("/readyz", 200), ("/api/v1/status", 404)):
            for _ in range(50):
                try:
                    response = await agent.request(
                        b"GET", f"http://{LOCALHOST}:{port}{path}".encode()
                    )
                    break
                except ConnectError:
                    await pause(0.1)
            body = await readBody(response)
            self.assertEqual(response.code, status, (path, body))
        text = (await readBody(await agent.request(
            b"GET", f"http://{LOCALHOST}:{port}/metrics".encode()))).decode()  # fmt: skip
        names = {f.name for f in text_string_to_metric_families(text)}
        self.assertIn("warden_sip_requests", names)
        self.assertTrue(warden.running)


class DrainTests(_AdminMixin):
    """wardenctl drain through the API; new INVITEs get 503."""

    async def test_drain(self) -> None:
        """After wardenctl drain, readyz is 503 and an INVITE is answered 503."""
        warden = await self.start_warden()
        client = await self.admin(warden)
        made = await wardenctl(warden.config_path, "admin", "token", "ops", "drainer",
                               "--scopes", "write")  # fmt: skip
        self.assertEqual(made.code, 0, made.stderr)
        token_file = warden.workdir / "token"
        token_file.write_text(made.stdout.strip())
        without = await wardenctl(warden.config_path, "drain")
        self.assertEqual(without.code, 2, without.stderr)
        drained = await wardenctl(warden.config_path, "drain", "--wait", "--timeout", "5",
                                  "--token-file", str(token_file))  # fmt: skip
        self.assertEqual(drained.code, 0, drained.stderr + drained.stdout)
        self.assertIn("drained", drained.stdout)
        ready = await client.request("GET", "/readyz")
        self.assertEqual((ready.status, ready.json()["status"]), (503, "draining"))
        sip = await SipUdpClient.open(warden.address)
        self.addCleanup(sip.close)
        host, port = warden.address
        response = await sip.request("INVITE", f"sip:100@{host}:{port}", [
            ("From", f"<sip:200@{host}>;tag={new_tag()}"), ("To", f"<sip:100@{host}>"),
            ("Call-ID", f"{new_tag()}@{LOCALHOST}"), ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:200@{LOCALHOST}:{sip.local_port}>"), ("Content-Length", "0"),
        ])  # fmt: skip
        self.assertEqual(response.status, 503)


class SchemathesisTests(_AdminMixin):
    """Schemathesis finds no server error against the served OpenAPI document."""

    async def test_no_server_errors(self) -> None:
        """Every operation, fuzzed with a full session, never answers 5xx."""
        st = shutil.which("schemathesis") or os.path.join(os.path.dirname(sys.executable),
                                                          "schemathesis")  # fmt: skip
        if not os.path.exists(st):
            if os.environ.get("CI") == "true":
                self.fail("schemathesis is not installed (tox installs it in CI)")
            self.skipTest("schemathesis is not installed (pip install schemathesis)")
        warden = await self.start_warden()
        client = await self.admin(warden)
        run_dir = self.workdir()
        result = await run_process([
            st, "run", f"{client.base}/api/v1/openapi.json",
            "-H", f"Authorization: Bearer {client.token}",
            "--tls-verify", str(client.cert_path), "--checks", "not_a_server_error",
            "--max-examples", "25", "--seed", "1", "--workers", "1", "--no-color",
        ], run_dir, timeout=600)  # fmt: skip
        self.assertEqual(result.code, 0, result.stdout[-5000:] + result.stderr[-2000:])
        self.assertNotIn("Traceback", warden.log_text())


class _CallMixin(_AdminMixin):
    """Real SIPp calls, set up as in L{test_calls}."""

    media_range = test_calls.SippCallTests.media_range
    media_config = test_calls.SippCallTests.media_config
    call_setup = test_calls.SippCallTests.call_setup
    run_uac = test_calls.SippCallTests.run_uac

    def setUp(self) -> None:
        """SIPp and its pcap are needed."""
        super().setUp()
        require_sipp(self)
        if not test_calls.PCAP.exists():
            self.fail(f"{test_calls.PCAP} is missing (Debian package sip-tester)")


class MetricsAfterCallTests(_CallMixin):
    """/metrics after a real relayed SIPp call has every family the operators need."""

    async def test_metrics_after_call(self) -> None:
        """The exposition parses and counts the call, its RTP, transactions and store work."""
        warden, _users, uas, uac_args = await self.call_setup(1)
        await self.run_uac([*uac_args, "-d", "2000"], 1, uas)
        client = await self.admin(warden)
        result = await client.request("GET", "/metrics")
        self.assertEqual(result.status, 200)
        families = {f.name: f for f in text_string_to_metric_families(result.body.decode())}

        def total(name: str, **labels: str) -> float:
            return sum(s.value for s in families[name].samples
                       if all(s.labels.get(k) == v for k, v in labels.items())
                       and not s.name.endswith(("_created", "_bucket")))  # fmt: skip

        self.assertGreaterEqual(total("warden_sip_requests", method="INVITE", transport="udp"), 1)
        self.assertGreaterEqual(
            total("warden_sip_responses_sent", method="INVITE", status_class="2xx"), 1
        )
        self.assertGreaterEqual(
            sum(s.value for s in families["warden_sip_transaction_seconds"].samples
                if s.name.endswith("_count") and s.labels["method"] == "INVITE"), 1)  # fmt: skip
        self.assertGreaterEqual(total("warden_calls_attempted"), 1)
        self.assertGreaterEqual(total("warden_calls_answered"), 1)
        self.assertGreaterEqual(total("warden_calls_ended", disposition="ANSWERED"), 1)
        self.assertEqual(total("warden_calls_active"), 0)
        self.assertGreaterEqual(
            next(s.value for s in families["warden_call_setup_seconds"].samples
                 if s.name.endswith("_count")), 1)  # fmt: skip
        self.assertGreater(total("warden_rtp_packets_relayed"), 50)
        self.assertGreater(total("warden_rtp_bytes_relayed"), 1000)
        self.assertGreaterEqual(
            next(s.value for s in families["warden_rtp_jitter_seconds"].samples
                 if s.name.endswith("_count")), 1)  # fmt: skip
        self.assertIn("warden_rtp_lost_packets", families)
        self.assertEqual(total("warden_media_ports_in_use"), 0)
        self.assertGreaterEqual(
            sum(s.value for s in families["warden_store_interaction_seconds"].samples
                if s.name.endswith("_count") and s.labels["interaction"] == "add_call_record"),
            1,
        )  # fmt: skip
        for name in ("warden_sip_parse_errors", "warden_sip_auth_failures",
                     "warden_sip_throttled_sources", "warden_registrar_bindings",
                     "warden_registrar_expired", "warden_sip_retransmissions",
                     "warden_cdr_spool_depth"):  # fmt: skip
            self.assertIn(name, families)
        for family in families.values():
            for sample in family.samples:
                self.assertFalse({"call_id", "user", "ip", "aor"} & set(sample.labels))


class SigtermDrainTests(_CallMixin):
    """SIGTERM drains: the call in progress ends by itself, then Warden exits."""

    async def test_sigterm_waits_for_the_call(self) -> None:
        """A call up at SIGTERM runs to its normal BYE; readyz says draining meanwhile."""
        start = self.start_warden

        async def start_draining(settings: Any = None, workdir: Any = None) -> WardenProcess:
            settings = {**(settings or {}), "admin": {"drain_timeout": 30.0}}
            return await start(settings, workdir)

        self.start_warden = start_draining  # type: ignore[method-assign]
        warden, _users, uas, uac_args = await self.call_setup(1)
        client = await self.admin(warden)
        uac_dir = self.workdir()
        uac, uac_process = spawn(sipp_command([*uac_args, "-d", "5000"]), uac_dir)
        self.addCleanup(lambda: uac_process.signalProcess("KILL") if uac.running else None)

        async def active_calls() -> float:
            text = (await client.request("GET", "/metrics")).body.decode()
            family = next(f for f in text_string_to_metric_families(text)
                          if f.name == "warden_calls_active")  # fmt: skip
            return family.samples[0].value

        for _ in range(100):
            if await active_calls() == 1:
                break
            await pause(0.1)
        self.assertEqual(await active_calls(), 1, warden.log_tail())
        os.kill(warden.pid, 15)
        ready = await client.request("GET", "/readyz")
        self.assertEqual((ready.status, ready.json()["status"]), (503, "draining"))
        self.assertTrue(await poll(lambda: not uac.running, 30))
        stats = read_sipp_stats(uac_dir)
        self.assertEqual((uac.code, stats.successful, stats.failed), (0, 1, 0), uac.output())
        self.assertTrue(await poll(lambda: not uas.running, 15), uas.output())
        self.assertTrue(await poll(lambda: not warden.running, 15), warden.log_tail())
        connection = sqlite3.connect(warden.database_path)
        self.addCleanup(connection.close)
        causes = connection.execute("SELECT hangup_cause FROM call_records").fetchall()
        self.assertEqual(causes, [("BYE",)])
