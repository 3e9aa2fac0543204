"""``[sip] transports``/``tls_port``, ``[tls]`` and ``--sip-tls-port`` (ADR 0018)."""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.plugins.sip import sip_settings
from warden.tap import Options
from warden.tls import MOZILLA_INTERMEDIATE, TlsPolicy


class TlsConfigTests(SynchronousTestCase):
    """SIP over TLS is opt-in, with safe defaults once on."""

    def test_defaults(self) -> None:
        """
        By default Warden listens on UDP and TCP only (phones keep working as
        before); ``tls_port`` is 5061, TLS 1.2+ with Mozilla's intermediate
        ciphers, no peer certificates asked for, a 10 s handshake deadline.
        """
        config = parse_config_text("", "warden.toml")
        self.assertEqual(config.sip.transports, ("udp", "tcp"))
        self.assertEqual(config.sip.tls_port, 5061)
        tls = config.tls
        self.assertEqual((tls.min_version, tls.ciphers, tls.ca), ("1.2", MOZILLA_INTERMEDIATE, ""))
        self.assertEqual((tls.certificate, tls.private_key, tls.handshake_timeout), ("", "", 10.0))

    def test_values_reach_the_sip_service(self) -> None:
        """The ``[tls]`` values become the SIP service's TLS settings."""
        text = (
            '[sip]\ntransports = ["udp", "tls"]\ntls_port = 5071\n'
            '[tls]\ncertificate = "/etc/warden/sip.pem"\nprivate_key = "/etc/warden/sip.key"\n'
            'ca = "/etc/warden/ca.pem"\nmin_version = "1.3"\nciphers = "ECDHE+AESGCM"\n'
            "handshake_timeout = 3\n"
        )
        settings = sip_settings(parse_config_text(text, "warden.toml"))
        self.assertEqual(settings.transports, ("udp", "tls"))
        self.assertEqual(settings.tls_port, 5071)
        self.assertEqual(
            settings.tls.policy, TlsPolicy("1.3", "ECDHE+AESGCM", "/etc/warden/ca.pem")
        )
        self.assertEqual(
            (settings.tls.certificate, settings.tls.private_key, settings.tls.handshake_timeout),
            ("/etc/warden/sip.pem", "/etc/warden/sip.key", 3.0),
        )

    def test_bad_values(self) -> None:
        """A bad value names the file, the key and what is expected."""
        cases = {
            '[sip]\ntransports = ["udp", "dtls"]': "sip.transports",
            "[sip]\ntls_port = 70000": "sip.tls_port",
            '[tls]\nmin_version = "1.1"': "tls.min_version",
            '[tls]\nciphers = "NOTACIPHER"': "tls.ciphers",
            '[tls]\nciphers = ""': "tls.ciphers",
            "[tls]\nhandshake_timeout = 0": "tls.handshake_timeout",
            '[tls]\ncertificate = "/c.pem"': "tls.private_key",
            "[tls]\nkey = 1": "tls.key",
        }
        for text, path in cases.items():
            with self.assertRaises(ConfigError, msg=text) as caught:
                parse_config_text(text, "warden.toml")
            self.assertEqual(caught.exception.path, path, text)
            self.assertIn(f"warden.toml: {path}", str(caught.exception))

    def test_tls_port_flag(self) -> None:
        """``--sip-tls-port`` overrides ``[sip] tls_port``; a bad value names the option."""
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--sip-tls-port", "5091"])
        assert options.config is not None
        self.assertEqual(options.config.sip.tls_port, 5091)
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--sip-tls-port", "x"])
        self.assertIn("--sip-tls-port", str(caught.exception))
