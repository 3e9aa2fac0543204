"""
The admin plugin's configuration and wiring: ``[admin]`` validation with file
and key in errors, ``--admin-port``, and the service built by ``makeService``.
"""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from warden.admin.service import AdminService, with_port
from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.tap import Options, makeService
from warden.testing.reactor import MemoryWardenReactor


class AdminConfigTests(SynchronousTestCase):
    """``[admin]`` values are checked; errors name the file and key."""

    def test_defaults(self) -> None:
        """HTTPS on 127.0.0.1:8443, no plain listener, MFA optional."""
        admin = parse_config_text("").admin
        self.assertEqual(admin.listen, "tcp:8443:interface=127.0.0.1")
        self.assertEqual((admin.metrics_listen, admin.require_mfa), ("", False))

    def test_bad_values(self) -> None:
        """Wrong endpoints, types and ranges are refused with file and key."""
        cases = {
            'listen = "ssl:8443"': "admin.listen",
            'listen = "tcp:http"': "admin.listen",
            "listen = 8443": "admin.listen",
            'metrics_listen = "9100"': "admin.metrics_listen",
            "require_mfa = 1": "admin.require_mfa",
            "session_seconds = 5": "admin.session_seconds",
            "login_fail_limit = 0": "admin.login_fail_limit",
            "login_concurrency = 0": "admin.login_concurrency",
            "token_days = -1": "admin.token_days",
            "drain_timeout = -1": "admin.drain_timeout",
            'certificate = "/x.pem"': "admin.private_key",
            "password = 'x'": "admin.password",
        }
        for line, key in cases.items():
            with self.assertRaises(ConfigError) as raised:
                parse_config_text(f"[admin]\n{line}\n", "w.toml")
            self.assertTrue(str(raised.exception).startswith(f"w.toml: {key}:"), line)

    def test_with_port(self) -> None:
        """The port of a tcp endpoint string is replaced; other kinds are refused."""
        self.assertEqual(with_port("tcp:8443:interface=::1", 9), "tcp:9:interface=::1")
        self.assertEqual(with_port("tcp6:port=8443", 9), "tcp6:9")
        with self.assertRaises(ValueError):
            with_port("unix:/run/warden.sock", 9)


class AdminPortOptionTests(SynchronousTestCase):
    """``twistd warden --admin-port``."""

    def test_overrides_listen(self) -> None:
        """--admin-port replaces the port of [admin] listen, keeping the interface."""
        options = Options()
        options.parseOptions(["--admin-port", "9443"])
        assert options.config is not None
        self.assertEqual(options.config.admin.listen, "tcp:9443:interface=127.0.0.1")

    def test_port_zero_turns_admin_off(self) -> None:
        """--admin-port 0 means no admin API (not an ephemeral port)."""
        options = Options()
        options.parseOptions(["--admin-port", "0"])
        assert options.config is not None
        self.assertFalse(options.config.admin.enabled)

    def test_bad_port(self) -> None:
        """A non-numeric port is a usage error."""
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--admin-port", "x"])

    def test_unix_listen(self) -> None:
        """--admin-port with a unix socket listener says why it cannot apply."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[admin]\nlisten = "unix:/tmp/warden-admin.sock"\n')
        with self.assertRaises(usage.UsageError) as raised:
            Options().parseOptions(["--config", path, "--admin-port", "9443"])
        self.assertIn("admin.listen", str(raised.exception))


class MakeServiceTests(SynchronousTestCase):
    """makeService adds the admin service and the drain controller."""

    def build(self, *extra: str) -> object:
        data_dir = os.path.join(self.mktemp(), "var")
        options = Options()
        options.parseOptions(["--data-dir", data_dir, "--sip-port", "0", *extra])
        root = makeService(options, reactor=MemoryWardenReactor())
        self.addCleanup(root.store.close_pool)  # type: ignore[attr-defined]
        return root

    def test_admin_service(self) -> None:
        """By default the admin service is a child and SIGTERM drains."""
        root = self.build()
        self.assertEqual(
            [type(c) for c in root if isinstance(c, AdminService)],  # type: ignore[attr-defined]
            [AdminService],
        )
        self.assertIsNotNone(root.drain)  # type: ignore[attr-defined]

    def test_disabled(self) -> None:
        """With enabled = false there is no admin service, but drain still works."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[admin]\nenabled = false\n")
        root = self.build("--config", path)
        self.assertFalse(any(isinstance(c, AdminService) for c in root))  # type: ignore[attr-defined]
        self.assertIsNotNone(root.drain)  # type: ignore[attr-defined]
