"""
deploy/keepalived, deploy/kamailio, deploy/patroni and deploy/haproxy, of the HA guide
(docs/HA_DEPLOYMENT_GUIDE.md): each parses with the program that reads it. The
integration tests (tests/integration/test_ha.py) run them for real.
"""

from __future__ import annotations

import subprocess

from twisted.trial.unittest import TestCase

from tests.deploy.tools import DEPLOY
from tests.integration.harness import require_binary


def check(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a configuration check (bounded); its result."""
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


class KeepalivedConfigTests(TestCase):
    """deploy/keepalived/keepalived.conf."""

    def test_config_parses(self) -> None:
        """
        ``keepalived --config-test`` finds nothing wrong with the example except
        that this machine has no ``ens192`` (the example's interface, a VMware
        NIC); keepalived refuses the loopback for VRRP, so no interface every
        machine has can stand in for it.
        """
        keepalived = require_binary(self, "keepalived", "keepalived")
        conf = DEPLOY / "keepalived" / "keepalived.conf"
        result = check([keepalived, "--config-test", "-f", str(conf)])
        problems = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if line.strip()
            and "interface ens192 for vrrp_instance warden_sip doesn't exist" not in line
            and line.strip() != "Non-existent interface specified in configuration"
        ]
        self.assertEqual(problems, [])

    def test_check_script_is_executable_shell(self) -> None:
        """The health check is a POSIX shell script asking /readyz, executable."""
        script = DEPLOY / "keepalived" / "check-warden"
        self.assertTrue(script.stat().st_mode & 0o111)
        self.assertEqual(check(["sh", "-n", str(script)]).returncode, 0)
        self.assertIn("/readyz", script.read_text())


class KamailioConfigTests(TestCase):
    """deploy/kamailio/kamailio.cfg with deploy/kamailio/dispatcher.list."""

    def test_config_parses(self) -> None:
        """``kamailio -c`` accepts the configuration with the shipped dispatcher list."""
        kamailio = require_binary(self, "kamailio", "kamailio")
        destinations = DEPLOY / "kamailio" / "dispatcher.list"
        result = check([kamailio, "-c", "-f", str(DEPLOY / "kamailio" / "kamailio.cfg"),
                        "-A", f'DISPATCHER_LIST="{destinations}"'])  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)


class PatroniConfigTests(TestCase):
    """deploy/patroni/patroni.yml and deploy/haproxy/warden-postgres.cfg."""

    def test_haproxy_config_parses(self) -> None:
        """``haproxy -c`` accepts the configuration that follows Patroni's primary."""
        haproxy = require_binary(self, "haproxy", "haproxy")
        result = check([haproxy, "-c", "-f", str(DEPLOY / "haproxy" / "warden-postgres.cfg")])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_patroni_config_names_haproxy_check(self) -> None:
        """HAProxy checks /primary on the REST port the Patroni example listens on."""
        patroni = (DEPLOY / "patroni" / "patroni.yml").read_text()
        haproxy = (DEPLOY / "haproxy" / "warden-postgres.cfg").read_text()
        self.assertIn("listen: 10.0.0.41:8008", patroni)
        self.assertIn("option httpchk GET /primary", haproxy)
        self.assertIn("server pg1 10.0.0.41:5432 check port 8008", haproxy)
