"""
Trunks over TLS end to end (ADR 0034): a real ``twistd warden`` and a fake
ITSP played by SIPp behind a TLS terminator (socat accepts TLS with a
certificate of a test CA and relays TCP to SIPp ``-t t1``, L{start_relay}).
Warden registers and places a call over TLS to the trunk ``localhost``, whose
certificate it checks against ``tls_ca_file`` and the trunk's host; a trunk
whose certificate names another host, or chains to another CA, fails the
INVITE at once (a transport error, RFC 3261 §17.1.4) and the call goes out
on the route's next trunk.

The trunk's host is a name, ``a.pbx.test``, whose A record a local DNS server
named in ``[dns] servers`` gives as 127.0.0.2 (a trunk is known by its
address, and the phones are on 127.0.0.1); the certificate must name it.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.features.stir_pki import Issued, make_ca, make_server
from tests.integration.admin_client import new_admin
from tests.integration.ha_srv import ZONE, start_dns
from tests.integration.harness import LOCALHOST, WardenProcess, provision
from tests.integration.sipp_traces import read_sipp_messages
from tests.integration.test_trunks import (
    ACCOUNT,
    CALLER_ID,
    DIALLED,
    ITSP_HOST,
    PASSWORD,
    TrunkHarness,
    trunks_toml,
)
from tests.integration.tls_relay import start_relay

#: The trunks' host: what the certificates must name (A record: ITSP_HOST,
#: where socat listens).
TRUNK_HOST = f"a.{ZONE}"


class TlsTrunkTests(TrunkHarness):
    """Warden opens TLS to its ITSP and verifies its certificate."""

    def setUp(self) -> None:
        """A test CA; a DNS server giving TRUNK_HOST the address ITSP_HOST."""
        super().setUp()
        self.ca = make_ca("Test ITSP CA")
        self.ca_file = self.workdir() / "itsp-ca.pem"
        self.ca_file.write_bytes(self.ca.pem)
        listening, self.dns_port = start_dns([(10, "a", 5061)], ITSP_HOST)
        self.addCleanup(listening.stopListening)

    async def warden_with(self, toml: str) -> WardenProcess:
        """A Warden asking the test's DNS server (``[dns] servers``)."""
        dns = f'[dns]\nservers = ["{LOCALHOST}:{self.dns_port}"]\n\n'
        return await super().warden_with(dns + toml)

    async def terminator(self, target_port: int, issued: Issued) -> int:
        """socat serving ``issued`` over TLS, relaying to the SIPp ITSP's port; its port."""
        workdir = self.workdir()
        cert, key = workdir / "cert.pem", workdir / "key.pem"
        cert.write_bytes(issued.pem)
        key.write_bytes(issued.key_pem)
        relay = await start_relay(
            self, (ITSP_HOST, target_port), cert, key, workdir, terminating_on=ITSP_HOST
        )
        return relay.port

    async def test_registration_and_outbound_call(self) -> None:
        """
        Warden registers over TLS (401 answered), then an extension's call goes
        out over the same connection: Via and Contact say TLS, the Request-URI
        ``;transport=tls``.
        """

        async def behind_tls(port: int) -> dict[str, Any]:
            relay_port = await self.terminator(port, make_server(self.ca, TRUNK_HOST))
            return {"host": TRUNK_HOST, "port": relay_port, "tls_ca_file": str(self.ca_file)}

        _, itsp_dir = await self.registration_and_outbound_call("tls", behind_tls)
        messages = read_sipp_messages(itsp_dir)
        self.assertIn(f"REGISTER sip:{TRUNK_HOST};transport=tls SIP/2.0", messages)
        self.assertIn("Via: SIP/2.0/TLS ", messages)
        self.assertIn(";transport=tls>", messages)
        self.assertRegex(
            messages, r"INVITE sip:15552345678@a\.pbx\.test:\d+;transport=tls SIP/2.0"
        )

    async def test_refused_certificates_fail_over(self) -> None:
        """
        The route's first trunk presents a certificate for another name, the
        second one from a CA Warden does not trust: each handshake fails (logged
        without secrets), failing the INVITE waiting on it at once (not at the
        trunk's timeout: the log says the request failed with the connection),
        and the call goes out on the third trunk.
        """
        _, port, _ = self.itsp(ITSP_HOST, "itsp_uas.xml", 1, "t1")
        wrong_name = await self.terminator(port, make_server(self.ca, f"wrong.{ZONE}"))
        untrusted = await self.terminator(port, make_server(make_ca("Other CA"), TRUNK_HOST))
        good_itsp, good_port, good_dir = self.itsp(ITSP_HOST, "itsp_uas.xml", 1, "t1")
        good = await self.terminator(good_port, make_server(self.ca, TRUNK_HOST))
        trunks = [
            {"name": name, "host": TRUNK_HOST, "port": relay_port, "transport": "tls",
             "register": False, "tls_ca_file": str(self.ca_file), "from_number": CALLER_ID,
             "username": ACCOUNT, "password_file": "@PASSWORD_FILE@"}
            for name, relay_port in (("wrong-name", wrong_name), ("untrusted", untrusted),
                                     ("good", good))
        ]  # fmt: skip
        warden = await self.warden_with(trunks_toml(
            trunks,
            [{"pattern": "_9NXXNXXXXXX", "strip": 1, "prefix": "1",
              "trunks": ["wrong-name", "untrusted", "good"]}],
            [],
        ))  # fmt: skip
        users = await provision(warden.config_path, 2, first=2000)
        await self.dial(warden, users, DIALLED)
        await self.sipp_finished(good_itsp, good_dir)
        log = warden.log_text()
        self.assertNotIn(PASSWORD, log)
        for relay_port in (wrong_name, untrusted):
            self.assertIn(f"TLS handshake with trunk {ITSP_HOST}:{relay_port} failed", log)
            self.assertIn(
                f"Trunk connection to {ITSP_HOST}:{relay_port} failed (tls):"
                " 1 request(s) failed at once",
                log,
            )
        state = {t["name"]: t for t in await self.trunks_state(warden)}
        self.assertEqual(state["good"]["transport"], "tls")
        admin, _ = await new_admin(warden, "metrics")
        text = (await admin.request("GET", "/metrics")).body.decode()
        failures = {
            (s.labels["trunk"], s.labels["reason"]): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "warden_trunk_failures_total"
        }
        for name in ("wrong-name", "untrusted"):
            self.assertGreaterEqual(failures.get((name, "tls"), 0), 1, failures)
            self.assertEqual(failures.get((name, "call_timeout"), 0), 1, failures)
        self.assertNotIn(("good", "tls"), failures)
