"""
The FIPS start-up report (L{warden.fips}): answers checked against the real
OpenSSL libraries of this process, and against the same libraries told by
their configuration (``OPENSSL_CONF``) to require FIPS.
"""

from __future__ import annotations

import _hashlib
import json
import os
import ssl
import subprocess
import sys

import attrs
from cryptography.hazmat.backends.openssl import backend
from prometheus_client import REGISTRY
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.integration.harness import require_binary
from warden import fips
from warden.fips import CryptoLibrary, FipsStatus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: An OpenSSL configuration that asks for FIPS algorithms by default but loads
#: no FIPS provider (what a half-done FIPS setup looks like).
FIPS_PROPERTIES_ONLY = """\
openssl_conf = openssl_init
[openssl_init]
alg_section = evp_properties
[evp_properties]
default_properties = fips=yes
"""

_PROBE = (
    "import json, attrs; from warden.fips import fips_status; s = fips_status();"
    " print(json.dumps({'active': s.provider_active,"
    " 'libraries': [attrs.asdict(lib) for lib in s.libraries]}))"
)


def status_in_child(openssl_conf: str | None) -> dict[str, object]:
    """L{fips.fips_status} in a new Python process with ``OPENSSL_CONF`` set."""
    env = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
    env["PYTHONPATH"] = ROOT
    if openssl_conf is not None:
        env["OPENSSL_CONF"] = openssl_conf
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, check=True, timeout=60
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


class RealLibraryTests(SynchronousTestCase):
    """The answers are the libraries' own."""

    def test_hashlib_library(self) -> None:
        """The version and FIPS properties are those of the libcrypto hashlib uses."""
        lib = fips.hashlib_library()
        self.assertEqual(lib.version, ssl.OPENSSL_VERSION)
        self.assertEqual(lib.fips_properties, bool(_hashlib.get_fips_mode()))
        self.assertIsNotNone(lib.fips_provider, "the loaded libcrypto was not found")

    def test_provider_agrees_with_openssl_tool(self) -> None:
        """
        ``openssl list -providers`` (the same system library, when the versions
        match) lists a fips provider exactly when Warden says one is loaded.
        """
        tool = require_binary(self, "openssl", "openssl")
        version = subprocess.run([tool, "version"], capture_output=True, text=True, check=True)
        if ssl.OPENSSL_VERSION not in version.stdout:
            self.skipTest(f"openssl tool is {version.stdout.strip()}, not {ssl.OPENSSL_VERSION}")
        listed = subprocess.run(
            [tool, "list", "-providers"], capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(fips.hashlib_library().fips_provider, "\n  fips\n" in listed)

    def test_tls_library(self) -> None:
        """The TLS library is cryptography's OpenSSL, asked itself."""
        lib = fips.tls_library()
        self.assertEqual(lib.version, backend.openssl_version_text())
        self.assertEqual(lib.fips_properties, backend._fips_enabled)

    def test_fips_required_without_provider(self) -> None:
        """
        Told to require FIPS algorithms with no FIPS provider, both libraries say
        so: FIPS properties on, provider not loaded, not active. Without that
        configuration the properties are off. So the answer comes from the library.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(FIPS_PROPERTIES_ONLY)
        forced = status_in_child(path)
        plain = status_in_child(None)
        self.assertFalse(forced["active"])
        for lib in forced["libraries"]:  # type: ignore[attr-defined]
            self.assertEqual((lib["fips_properties"], lib["fips_provider"]), (True, False), lib)
        for lib in plain["libraries"]:  # type: ignore[attr-defined]
            self.assertFalse(lib["fips_properties"], lib)


ON = CryptoLibrary("hashlib", "OpenSSL 3.0.9", True, True)
OFF = CryptoLibrary("tls", "OpenSSL 3.5.0", False, None)


class ReportTests(SynchronousTestCase):
    """The start-up line and the gauges."""

    def setUp(self) -> None:
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self) -> list[tuple[LogLevel, str]]:
        return [
            (e["log_level"], formatEvent(e))  # type: ignore[misc]
            for e in self.events
            if "FIPS mode" in formatEvent(e)
        ]

    def gauge(self, name: str) -> float | None:
        return REGISTRY.get_sample_value(name)

    def test_fips_without_provider_warns(self) -> None:
        """FIPS mode with no active provider: a warning saying it is not validated; gauges 1, 0."""
        fips.report(True, FipsStatus((ON, OFF)))
        [(level, text)] = self.lines()
        self.assertEqual(level, LogLevel.warn)
        self.assertIn("FIPS provider active: no", text)
        self.assertIn("NOT validated", text)
        self.assertIn("tls: OpenSSL 3.5.0, FIPS properties no, FIPS provider not asked", text)
        self.assertEqual(self.gauge("warden_fips_mode"), 1.0)
        self.assertEqual(self.gauge("warden_fips_provider_active"), 0.0)

    def test_active_provider(self) -> None:
        """Every library active: an info line saying so; gauges 1, 1."""
        fips.report(True, FipsStatus((ON, attrs.evolve(ON, role="tls"))))
        [(level, text)] = self.lines()
        self.assertEqual(level, LogLevel.info)
        self.assertIn("FIPS mode on, FIPS provider active: yes", text)
        self.assertEqual(self.gauge("warden_fips_provider_active"), 1.0)

    def test_off(self) -> None:
        """Outside FIPS mode the state is still reported, as information."""
        fips.report(False, FipsStatus((OFF,)))
        [(level, text)] = self.lines()
        self.assertEqual(level, LogLevel.info)
        self.assertIn("FIPS mode off, FIPS provider active: no", text)
        self.assertEqual(self.gauge("warden_fips_mode"), 0.0)

    def test_real_report(self) -> None:
        """Without a status given, the real libraries are asked."""
        status = fips.report(False)
        self.assertEqual([lib.role for lib in status.libraries], ["hashlib", "tls"])
