"""``[security] fips`` in the configuration (ADR 0029)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.plugins.sip import sip_settings
from warden.tls import FIPS_CIPHERS, MOZILLA_INTERMEDIATE

FIPS = "[security]\nfips = true\n"


class FipsConfigTests(SynchronousTestCase):
    """FIPS mode changes defaults and refuses what it does not allow."""

    def error(self, text: str) -> ConfigError:
        with self.assertRaises(ConfigError) as caught:
            parse_config_text(text, "warden.toml")
        return caught.exception

    def test_off_by_default(self) -> None:
        """Without the key nothing changes: MD5 offered, Mozilla's ciphers."""
        config = parse_config_text("", "warden.toml")
        self.assertFalse(config.security.fips)
        self.assertEqual(config.registrar.digest_algorithms, ("MD5",))
        self.assertEqual(config.tls.ciphers, MOZILLA_INTERMEDIATE)
        self.assertFalse(sip_settings(config).fips)

    def test_fips_defaults(self) -> None:
        """With fips = true the defaults become SHA-256 and the approved suites."""
        config = parse_config_text(FIPS, "warden.toml")
        self.assertTrue(config.security.fips)
        self.assertEqual(config.registrar.digest_algorithms, ("SHA-256",))
        self.assertEqual(config.tls.ciphers, FIPS_CIPHERS)
        settings = sip_settings(config)
        self.assertTrue(settings.fips)
        self.assertTrue(settings.tls.policy.fips)
        self.assertEqual(settings.algorithms, ("SHA-256",))

    def test_other_registrar_keys_kept(self) -> None:
        """The FIPS default replaces only the algorithm list of a [registrar] section."""
        config = parse_config_text(FIPS + "[registrar]\nmax_expires = 9000\n", "warden.toml")
        self.assertEqual(config.registrar.max_expires, 9000)
        self.assertEqual(config.registrar.digest_algorithms, ("SHA-256",))

    def test_md5_refused(self) -> None:
        """Asking for MD5 in FIPS mode is an error naming file and key."""
        for algorithms in ('["MD5"]', '["SHA-256", "MD5"]'):
            e = self.error(FIPS + f"[registrar]\ndigest_algorithms = {algorithms}\n")
            self.assertEqual((e.filename, e.path), ("warden.toml", "registrar.digest_algorithms"))
            self.assertIn("MD5 is not FIPS-approved", str(e))
            self.assertTrue(str(e).startswith("warden.toml: registrar.digest_algorithms:"))

    def test_sha256_accepted(self) -> None:
        """SHA-256 alone is an accepted digest list in FIPS mode."""
        config = parse_config_text(
            FIPS + '[registrar]\ndigest_algorithms = ["SHA-256"]\n', "warden.toml"
        )
        self.assertEqual(config.registrar.digest_algorithms, ("SHA-256",))

    def test_non_approved_ciphers_refused(self) -> None:
        """A cipher string selecting ChaCha20, DHE or CBC suites is refused in FIPS mode."""
        for ciphers in (MOZILLA_INTERMEDIATE, "ECDHE-RSA-CHACHA20-POLY1305", "HIGH"):
            e = self.error(FIPS + f'[tls]\nciphers = "{ciphers}"\n')
            self.assertEqual((e.filename, e.path), ("warden.toml", "tls.ciphers"))
            self.assertIn("not FIPS-approved", str(e))
            self.assertLess(len(str(e)), 600)

    def test_approved_subset_accepted(self) -> None:
        """A cipher string selecting only approved suites is accepted in FIPS mode."""
        config = parse_config_text(FIPS + '[tls]\nciphers = "ECDHE+AESGCM"\n', "warden.toml")
        self.assertEqual(config.tls.ciphers, "ECDHE+AESGCM")

    def test_fips_must_be_boolean(self) -> None:
        """``[security] fips`` must be a boolean, and an unknown key is named."""
        e = self.error('[security]\nfips = "yes"\n')
        self.assertEqual(e.path, "security.fips")
        e = self.error("[security]\nfip = true\n")
        self.assertEqual(e.path, "security.fip")
