"""
SIP over TLS end to end (RFC 3261 §26, RFC 5630): a real ``twistd warden`` with
``tls`` among its transports, SIPp registering and calling over TLS (``-t l1``),
the certificate reloaded on SIGHUP while a registration's connection stays up,
and a handshake that never comes closed after ``[tls] handshake_timeout``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from tests.integration.clients import LOCALHOST, poll, real_reactor
from tests.integration.harness import (
    IntegrationTestCase,
    free_port,
    provision,
    require_sipp,
    run_sipp,
    sipp_register_args,
    user_password,
    wardenctl,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_stats
from tests.integration.tls_client import SipTlsClient, callee_behind_nat
from tests.integration.tls_relay import calls_through, start_relay
from warden.tls import fingerprint, generate_self_signed

SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"


def tls_settings(port: int, **tls: object) -> dict[str, dict[str, object]]:
    """Settings turning TLS on at ``port``, with ``[tls]`` values ``tls``."""
    return {"sip": {"transports": ["udp", "tcp", "tls"], "tls_port": port}, "tls": dict(tls)}


def client_pair(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for SIPp's own side of the TLS connection."""
    cert, key = directory / "sipp-cert.pem", directory / "sipp-key.pem"
    generate_self_signed(str(cert), str(key), Clock(), common_name="SIPp")
    return cert, key


class TlsRegistrationTests(IntegrationTestCase):
    """SIPp registers over TLS."""

    def setUp(self) -> None:
        """SIPp is needed (skipped locally, a failure under CI=true, when missing)."""
        super().setUp()
        require_sipp(self)

    async def test_registrations_over_tls(self) -> None:
        """
        100 extensions register with digest authentication over one TLS
        connection (SIPp over TCP through L{tls_relay}: Debian's SIPp has no
        TLS) to a Warden with a generated certificate: all
        succeed, 100 bindings are stored as ``tls:`` flows, and the log names
        the generated certificate's fingerprint.
        """
        port = free_port()
        warden = await self.start_warden(tls_settings(port))
        users = await provision(warden.config_path, 100)
        run_dir = self.workdir()
        relay = await start_relay(self, (LOCALHOST, port), *client_pair(run_dir), run_dir)
        args = sipp_register_args(relay.address, users.sipp_csv, 100, 50, "t1")
        result = await run_sipp(args, run_dir, timeout=120)
        stats = read_sipp_stats(run_dir)
        context = f"sipp exit {result.code}\n{result.stderr}\n{read_sipp_errors(run_dir)}"
        self.assertEqual(result.code, 0, context)
        self.assertEqual((stats.successful, stats.failed), (100, 0), context)
        self.assertEqual(warden.count_bindings(), 100)
        generated = warden.data_dir / "sip-tls-cert.pem"
        self.assertIn(fingerprint(generated.read_bytes()), warden.log_text())
        self.assertIn("generated a self-signed one", warden.log_text())


class TlsCallTests(IntegrationTestCase):
    """Calls between phones on TLS."""

    def setUp(self) -> None:
        """SIPp is needed (skipped locally, a failure under CI=true, when missing)."""
        super().setUp()
        require_sipp(self)

    async def test_authenticated_calls_over_tls(self) -> None:
        """
        A callee registers over TLS with a Contact Warden cannot reach (as
        behind a NAT); SIPp places 3 digest-authenticated calls to it over TLS
        and all succeed: each INVITE and BYE reaches the callee on the
        connection it registered on (RFC 5923), and the call records say both
        legs' signalling was TLS.
        """
        port = free_port()
        warden = await self.start_warden(tls_settings(port))
        users = await provision(warden.config_path, 2, first=3000)
        caller, callee = users.numbers
        phone = await callee_behind_nat(self, (LOCALHOST, port), callee, users.passwords[callee])

        run_dir = self.workdir()
        relay = await start_relay(self, (LOCALHOST, port), *client_pair(run_dir), run_dir)
        caller_csv = run_dir / "caller.csv"
        password = users.passwords[caller]
        caller_csv.write_text(
            f"SEQUENTIAL\n{caller};{password};{callee};"
            f"[authentication username={caller} password={password}]\n"
        )
        await calls_through(self, relay, caller_csv, run_dir, 3, "t1")
        methods = [request.method for request in phone.requests]
        self.assertEqual((methods.count("INVITE"), methods.count("BYE")), (3, 3), methods)
        invite = phone.requests[0]
        self.assertEqual(invite.top_via.transport.upper(), "TLS")
        self.assertEqual(invite.top_via.port, port)
        self.assertIn(f"{LOCALHOST}:{port};transport=tls", invite.get("Contact") or "")
        listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
        self.assertEqual(listed.code, 0, listed.stderr)
        records = json.loads(listed.stdout)
        self.assertEqual(len(records), 3)
        for record in records:
            for side in ("a", "b"):
                leg = record["media"][side]
                self.assertEqual((leg["transport"], leg["signalling_encrypted"]), ("tls", True))


class CertificateReloadTests(IntegrationTestCase):
    """SIGHUP replaces the certificate for new connections only."""

    async def test_sighup_keeps_registration_and_serves_new_certificate(self) -> None:
        """
        A phone registers over TLS; the certificate files are replaced and
        Warden gets SIGHUP: the log says the SIP certificate was reloaded, the
        phone's connection stays open and its refresh REGISTER on it succeeds,
        and the next connection is served the new certificate.
        """
        workdir = self.workdir()
        cert, key = workdir / "sip-cert.pem", workdir / "sip-key.pem"
        first = generate_self_signed(str(cert), str(key), Clock(), common_name="first")
        port = free_port()
        settings = tls_settings(port, certificate=str(cert), private_key=str(key))
        warden = await self.start_warden(settings, workdir=workdir / "warden")
        users = await provision(warden.config_path, 1)
        number, password = users.numbers[0], user_password(users.numbers[0])
        phone = await SipTlsClient.connect((LOCALHOST, port))
        self.addCleanup(lambda: Deferred.fromCoroutine(phone.close()))
        contact = f"<sip:{number}@{LOCALHOST}:{phone.local_port};transport=tls>"
        self.assertEqual((await phone.register(number, password, contact)).status, 200)
        self.assertEqual(phone.peer_fingerprint, first)

        later = Clock()
        later.advance(86400)
        second = generate_self_signed(str(cert), str(key), later, common_name="second")
        os.kill(warden.pid, signal.SIGHUP)
        reloaded = f"TLS certificate of the sip listener reloaded; SHA-256 fingerprint {second}"
        self.assertTrue(await poll(lambda: reloaded in warden.log_text(), 10.0))

        self.assertFalse(phone.lost)
        self.assertEqual((await phone.register(number, password, contact)).status, 200)
        self.assertEqual(warden.count_bindings(), 1)
        fresh = await SipTlsClient.connect((LOCALHOST, port))
        self.addCleanup(lambda: Deferred.fromCoroutine(fresh.close()))
        self.assertEqual(fresh.peer_fingerprint, second)
        self.assertFalse(phone.lost)


class HandshakeTimeoutTests(IntegrationTestCase):
    """A TLS connection must finish its handshake within handshake_timeout."""

    async def test_stalled_handshake_closed(self) -> None:
        """
        With ``handshake_timeout = 1``, a TCP connection to the TLS port that
        never starts a handshake is closed by Warden after about a second,
        while a connection that completed its handshake stays open past it.
        """
        port = free_port()
        warden = await self.start_warden(tls_settings(port, handshake_timeout=1.0))
        done = await SipTlsClient.connect((LOCALHOST, port))
        self.addCleanup(lambda: Deferred.fromCoroutine(done.close()))
        reactor = real_reactor()
        opened = reactor.seconds()
        stalled = await self.tcp_client((LOCALHOST, port))
        self.assertTrue(await poll(lambda: stalled.lost, 10.0, 0.05), warden.log_tail())
        self.assertGreaterEqual(reactor.seconds() - opened, 0.9)
        self.assertEqual(bytes(stalled.received), b"")
        self.assertFalse(done.lost)
        self.assertIn("no handshake within 1.0 s", warden.log_text())
