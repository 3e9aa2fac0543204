"""
FIPS mode end to end (``[security] fips = true``, ADR 0029): a real ``twistd
warden``; SIPp (Debian's 3.6, whose digest is MD5 only) cannot register; MD5
credentials sent over a real UDP socket are refused with a SHA-256 challenge and
counted; SHA-256 registration works (Warden's own UAC,
L{tests.integration.clients.SipUdpClient}, over a real UDP socket); the TLS
listeners (SIP and admin) refuse ChaCha20 and DHE TLS clients; the start-up log
says whether the OpenSSL in use runs a FIPS provider.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import protocol, threads
from twisted.internet.error import ConnectError
from twisted.web.client import Agent, readBody

from tests.integration.clients import LOCALHOST, pause, real_reactor
from tests.integration.harness import (
    IntegrationTestCase,
    free_port,
    provision,
    require_sipp,
    run_sipp,
    sipp_register_args,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_stats
from warden.sip.auth import answer_challenge
from warden.sip.message import new_tag


def _handshake(port: int, ciphers: str) -> str:
    """A TLS 1.2 handshake offering only ``ciphers``; the suite negotiated."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    with socket.create_connection((LOCALHOST, port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            cipher = tls.cipher()
            assert cipher is not None
            return cipher[0]


async def handshake(port: int, ciphers: str) -> str:
    result: str = await threads.deferToThreadPool(
        real_reactor(), real_reactor().getThreadPool(), _handshake, port, ciphers
    )
    return result


class DowngradingRelay(protocol.DatagramProtocol):
    """
    A middlebox between SIPp (at ``client_port``) and Warden that rewrites every
    ``algorithm=SHA-256`` in Warden's answers to MD5, and the Via port both ways
    so Warden's responses come back through it.
    """

    def __init__(self, server: tuple[str, int], client_port: int) -> None:
        self.server = server
        self.client = (LOCALHOST, client_port)
        self.own_port = 0
        self.downgraded = 0
        self.md5_answers = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        client_via = f"{LOCALHOST}:{self.client[1]}".encode()
        own_via = f"{LOCALHOST}:{self.own_port}".encode()
        assert self.transport is not None
        if tuple(addr) == self.server:
            downgraded = datagram.replace(b"algorithm=SHA-256", b"algorithm=MD5")
            self.downgraded += downgraded != datagram
            self.transport.write(downgraded.replace(own_via, client_via), self.client)
        else:
            self.md5_answers += b"Authorization:" in datagram and b"algorithm=MD5" in datagram
            self.transport.write(datagram.replace(client_via, own_via), self.server)


class FipsModeTests(IntegrationTestCase):
    """A Warden started with ``[security] fips = true``."""

    def setUp(self) -> None:
        super().setUp()
        require_sipp(self)

    async def metrics(self, port: int) -> dict[str, float]:
        """The samples of the plain /metrics listener, by name."""
        agent = Agent(real_reactor())
        for _ in range(50):
            try:
                response = await agent.request(
                    b"GET", f"http://{LOCALHOST}:{port}/metrics".encode()
                )
                break
            except ConnectError:  # the listener is not up yet
                await pause(0.1)
        text = (await readBody(response)).decode()
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.labels
        }

    async def test_fips_mode_on_the_wire(self) -> None:
        """
        The start-up line names the OpenSSL in use; SIPp's MD5 digest cannot
        register, directly or downgraded by the relay, and is counted; SHA-256
        registers; the metrics say FIPS mode; both TLS listeners refuse
        ChaCha20 and DHE and accept AES-GCM.
        """
        metrics_port, sip_tls_port = free_port(), free_port()
        warden = await self.start_warden(
            {
                "security": {"fips": True},
                "sip": {"transports": ["udp", "tcp", "tls"], "tls_port": sip_tls_port},
                "admin": {"metrics_listen": f"tcp:{metrics_port}:interface={LOCALHOST}"},
            }
        )
        # The start-up line, from the libraries themselves.
        log = warden.log_text()
        [line] = [t for t in log.splitlines() if "FIPS mode on, FIPS provider active:" in t]
        self.assertIn(f"hashlib: {ssl.OPENSSL_VERSION}", line)
        active = "FIPS provider active: yes" in line
        if not active:  # Debian's OpenSSL: no FIPS provider loaded
            self.assertIn("NOT validated", line)
        users = await provision(warden.config_path, 2, first=7001)

        # SIPp 3.6 answers digest with MD5 only: offered SHA-256 alone, it cannot
        # register at all.
        run_dir = self.workdir()
        args = sipp_register_args(warden.address, users.sipp_csv, 1, 10, timeout=20)
        result = await run_sipp(args, run_dir, timeout=60)
        errors = read_sipp_errors(run_dir)
        self.assertNotEqual(result.code, 0, result.stderr)
        self.assertIn("authentication must use MD5", errors + result.stderr)
        self.assertEqual(warden.count_bindings(), 0)

        # The same SIPp behind a middlebox that downgrades the challenge to MD5:
        # SIPp sends MD5 credentials (for a nonce Warden issued to that address),
        # Warden refuses them with a new challenge, and SIPp's REGISTER fails.
        sipp_port = free_port()
        relay = DowngradingRelay(warden.address, sipp_port)
        listening = real_reactor().listenUDP(0, relay, interface=LOCALHOST)
        self.addCleanup(listening.stopListening)
        relay.own_port = listening.getHost().port
        run_dir = self.workdir()
        args = sipp_register_args(
            (LOCALHOST, relay.own_port), users.sipp_csv, 1, 10, local_port=sipp_port, timeout=20
        )
        result = await run_sipp(args, run_dir, timeout=60)
        stats = read_sipp_stats(run_dir)
        context = f"sipp exit {result.code}\n{result.stderr}\n{read_sipp_errors(run_dir)}"
        self.assertEqual((stats.successful, stats.failed), (0, 1), context)
        self.assertEqual(relay.md5_answers, 1, context)
        self.assertGreaterEqual(relay.downgraded, 2, context)
        self.assertEqual(warden.count_bindings(), 0)

        # MD5 credentials for a nonce Warden issued to this socket: refused with a
        # fresh SHA-256 challenge, and counted.
        client = await self.sip_client(warden)
        number = users.numbers[0]
        password = users.passwords[number]
        host, port = warden.address
        uri = f"sip:{host}:{port}"
        common = [
            ("From", f"<sip:{number}@{host}>;tag={new_tag()}"),
            ("To", f"<sip:{number}@{host}>"),
            ("Call-ID", f"{new_tag()}@{LOCALHOST}"),
            ("Contact", f"<sip:{number}@{LOCALHOST}:{client.local_port}>"),
        ]
        first = await client.request("REGISTER", uri, [*common, ("CSeq", "1 REGISTER")])
        self.assertEqual(first.status, 401)
        offered = first.get_all("WWW-Authenticate")
        self.assertEqual(len(offered), 1, offered)
        self.assertIn("algorithm=SHA-256", offered[0])
        as_md5 = offered[0].replace("algorithm=SHA-256", "algorithm=MD5")
        md5 = answer_challenge(as_md5, number, password, "REGISTER", uri)
        self.assertIn("algorithm=MD5", md5)
        refused = await client.request(
            "REGISTER", uri, [*common, ("CSeq", "2 REGISTER"), ("Authorization", md5)]
        )
        self.assertEqual(refused.status, 401)
        again = refused.get_all("WWW-Authenticate")
        self.assertEqual(len(again), 1, again)
        self.assertIn("algorithm=SHA-256", again[0])
        self.assertEqual(warden.count_bindings(), 0)

        # SHA-256 registration works.
        contact = f"<sip:{number}@{LOCALHOST}:{client.local_port}>"
        response = await client.register(number, password, contact)
        self.assertEqual(response.status, 200, response.headers)
        self.assertEqual(warden.count_bindings(), 1)

        samples = await self.metrics(metrics_port)
        self.assertEqual(samples["warden_fips_mode"], 1.0)
        self.assertEqual(samples["warden_fips_provider_active"], 1.0 if active else 0.0)
        self.assertEqual(samples["warden_sip_auth_fips_refused_total"], 2.0)

        # Both TLS listeners (admin, SIP) refuse a ChaCha20-only client and a
        # DHE one, and accept AES-GCM.
        for tls_port in (warden.admin_port, sip_tls_port):
            for refused in ("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
                            "DHE-RSA-AES128-GCM-SHA256"):  # fmt: skip
                with self.assertRaises(ssl.SSLError):
                    await handshake(tls_port, refused)
            self.assertIn("AES", await handshake(tls_port, "ECDHE+AESGCM"))
