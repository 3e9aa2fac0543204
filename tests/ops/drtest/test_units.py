"""The drill's digest answers from HA1, its options and its report."""

from __future__ import annotations

import io
import socket
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.backup.helpers import REALM, password
from warden.ops.drtest import scratch
from warden.ops.drtest.probe import LOCALHOST, Identity, ProbeFailed, authorization
from warden.ops.drtest.report import Report, Step
from warden.ops.drtest.scratch import (
    free_control_port,
    free_media_port,
    free_port_run,
    port_in_use,
)
from warden.ops.drtest.tap import EXIT_USAGE, Options
from warden.sip.auth import challenge, expected_response, parse_credentials
from warden.store.credentials import make_extension

NOW = 1_764_100_000.0


class AuthorizationTests(SynchronousTestCase):
    """The probe answers challenges from stored HA1 values, as Warden checks them."""

    def identity(self) -> Identity:
        e = make_extension("100", "", REALM, password("100"))
        return Identity("100", REALM, {"MD5": e.ha1_md5, "SHA-256": e.ha1_sha256})

    def test_both_algorithms_verify(self) -> None:
        """The response computed from HA1 is what the registrar expects."""
        identity = self.identity()
        for algorithm in ("MD5", "SHA-256"):
            value = authorization(
                challenge(REALM, "nonce123", algorithm), identity, "REGISTER", "sip:x"
            )
            creds = parse_credentials(value)
            assert creds is not None
            ha1 = identity.ha1[algorithm]
            self.assertEqual(creds.response, expected_response(creds, ha1, "REGISTER"))
            self.assertEqual(creds.algorithm, algorithm)

    def test_wrong_realm(self) -> None:
        """A challenge for another realm cannot be answered: the message says so."""
        e = self.assertRaises(
            ProbeFailed, authorization, challenge("other", "n", "MD5"), self.identity(),
            "REGISTER", "sip:x",
        )  # fmt: skip
        self.assertIn("realm 'other'", str(e))


class OptionsTests(SynchronousTestCase):
    """twistd warden-drtest options."""

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """Defaults: full test, latest backup in <data_dir>/backups, 900/300 s targets."""
        settings = self.parse("--data-dir", "/srv/w").settings
        assert settings is not None
        self.assertEqual((settings.test_type, settings.backup), ("full", "latest"))
        self.assertEqual(settings.backup_dir, Path("/srv/w/backups"))
        self.assertEqual((settings.target_rto, settings.target_rpo), (900.0, 300.0))
        self.assertFalse(settings.dry_run)

    def test_bad_options_exit_2(self) -> None:
        """Bad options exit with status 2."""
        for argv in (
            ["--test-type", "bogus"],
            ["--target-rto", "-1"],
            ["--create-backup", "--backup", "/x"],
            ["--key-file", "/nonexistent/key"],
            ["--no-such-option"],
        ):
            with self.subTest(argv=argv):
                e = self.assertRaises(SystemExit, self.parse, *argv)
                self.assertEqual(e.code, EXIT_USAGE)


class ReportTests(SynchronousTestCase):
    """Pass/fail and the JSON report."""

    def test_judge(self) -> None:
        """Missed targets fail the report and are named; a passing one says pass."""
        report = Report("full", 60.0, 300.0, NOW)
        report.steps.append(Step("open", True, 0.1))
        report.rto, report.rpo = 10.0, 100.0
        report.judge()
        self.assertTrue(report.passed)
        self.assertEqual(report.as_json()["result"], "pass")
        report.rto = 61.0
        report.judge()
        self.assertFalse(report.passed)
        self.assertEqual(report.problems, ["RTO 61.0s exceeds the target of 60s"])
        out = io.StringIO()
        print(report.summary(), file=out)
        self.assertIn("FAIL", out.getvalue())

    def test_failed_step_fails(self) -> None:
        """A failed step fails the drill even with good RTO/RPO."""
        report = Report("full", 60.0, 300.0, NOW, rto=1.0, rpo=1.0)
        report.steps.append(Step("verify-backup", False, 0.1, "x: missing"))
        self.assertFalse(report.passed)


class FreePortTests(SynchronousTestCase):
    """
    L{free_port_run} and L{free_media_port}: every port of the run is free,
    not only the first (SIPp's ``-mp`` binds the three ports above it too).
    """

    def test_every_port_of_the_run_is_free(self) -> None:
        for first in (free_port_run(4), free_media_port()):
            self.assertEqual(
                [p for p in range(first, first + 4) for t in ("udp", "tcp") if port_in_use(p, t)],
                [],
            )

    def test_media_port_below_the_ephemeral_ports(self) -> None:
        """Even, in MEDIA_PORTS: apart from what free_port and connections get."""
        for _ in range(20):
            first = free_media_port()
            self.assertEqual(first % 2, 0)
            self.assertTrue(scratch.MEDIA_PORTS[0] <= first < first + 3 < 32768)

    def test_skips_a_run_with_a_port_held(self) -> None:
        """
        A candidate whose run holds a bound port (two above it, where SIPp puts
        video RTP) is passed over for the next one.
        """
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(blocker.close)
        held = None
        for port in range(scratch.MEDIA_PORTS[0] + 2, scratch.MEDIA_PORTS[1], 2):
            try:
                blocker.bind((LOCALHOST, port))
            except OSError:
                continue
            held = port
            break
        assert held is not None
        candidates = iter([held - 2, held - 4])

        class Picks:
            def randrange(self, *args: int) -> int:
                return next(candidates)

        self.patch(scratch, "_media_random", Picks())
        first = free_media_port()
        self.assertEqual(first, held - 4)

    def test_control_port_above_the_ephemeral_ports(self) -> None:
        """In CONTROL_PORTS, above what the kernel hands a socket bound to port 0, and free."""
        low, high = (
            int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        )
        for _ in range(20):
            port = free_control_port()
            self.assertTrue(scratch.CONTROL_PORTS[0] <= port < scratch.CONTROL_PORTS[1])
            self.assertFalse(low <= port <= high, (port, low, high))
            self.assertFalse(port_in_use(port, "udp"))

    def test_control_port_passes_over_a_held_port(self) -> None:
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(blocker.close)
        held = next(
            port
            for port in range(scratch.CONTROL_PORTS[0], scratch.CONTROL_PORTS[1])
            if not port_in_use(port, "udp")
        )
        blocker.bind((LOCALHOST, held))
        candidates = iter([held, held + 1])

        class Picks:
            def randrange(self, *args: int) -> int:
                return next(candidates)

        self.patch(scratch, "_control_random", Picks())
        self.assertEqual(free_control_port(), held + 1)

    def test_port_in_use(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOCALHOST, 0))
            port = sock.getsockname()[1]
            self.assertTrue(port_in_use(port, "udp"))
        self.assertFalse(port_in_use(port, "udp"))
