"""Options of ``twistd warden-loadtest`` and its makeService."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from warden.ops.loadtest.options import EXIT_USAGE, Options, read_users_file
from warden.ops.loadtest.tap import LoadTestService, makeService


class OptionsTests(SynchronousTestCase):
    """Parsing, defaults and the errors that name their option."""

    def users(self, text: str) -> str:
        """A users file with ``text``."""
        path = Path(self.mktemp())
        path.write_text(text)
        return str(path)

    def parse(self, *args: str) -> Options:
        """Options parsed strictly (UsageError, not exit)."""
        options = Options()
        options.parse_strict(list(args))
        return options

    def assert_usage(self, args: list[str], fragment: str) -> None:
        """``args`` are refused with a message containing ``fragment``."""
        error = self.assertRaises(usage.UsageError, self.parse, *args)
        self.assertIn(fragment, str(error))

    def test_defaults(self) -> None:
        """Sensible defaults: registrations over UDP to 127.0.0.1:5060, bounded in time."""
        options = self.parse("--users-file", self.users("1000;password\n"), "--users", "1")
        s = options.settings
        assert s is not None
        self.assertEqual((s.pbx_host, s.sip_port, s.transport), ("127.0.0.1", 5060, "udp"))
        self.assertEqual((s.test_type, s.users, s.domain), ("registrations", 1, "127.0.0.1"))
        self.assertEqual((s.min_success_rate, s.max_p95_ms, s.rtp), (95.0, 2000.0, False))
        self.assertEqual(s.save_report, "warden-loadtest-report.json")
        self.assertGreater(s.timeout, 0)
        self.assertEqual([a.user for a in options.accounts], ["1000"])

    def test_all_options(self) -> None:
        """Every option lands in the settings."""
        path = self.users("SEQUENTIAL\n# callers\n1;pw1;extra\n2;pw2\n3;pw3\n4;pw4\n")
        s = self.parse(
            "--pbx-host", "10.0.0.5", "--sip-port", "5080", "--transport", "TCP",
            "--test-type", "mixed", "--users", "4", "--users-file", path,
            "--concurrent-calls", "7", "--total-calls", "70", "--call-rate", "3.5",
            "--call-duration", "9", "--duration", "60", "--ramp-up", "10", "--rtp",
            "--min-success-rate", "99.5", "--max-p95", "0.5", "--max-rtp-loss", "0.1",
            "--min-mos", "4.1", "--save-report", "r.json", "--html-report", "r.html",
            "--local-ip", "10.0.0.9", "--register-rate", "200", "--domain", "pbx.example",
            "--prometheus-port", "9400", "--timeout", "900", "--expires", "120",
        ).settings  # fmt: skip
        assert s is not None
        self.assertEqual((s.pbx_host, s.sip_port, s.transport), ("10.0.0.5", 5080, "tcp"))
        self.assertEqual((s.test_type, s.users, s.concurrent_calls), ("mixed", 4, 7))
        self.assertEqual((s.total_calls, s.call_rate, s.call_duration), (70, 3.5, 9.0))
        self.assertEqual((s.duration, s.ramp_up, s.rtp), (60.0, 10.0, True))
        self.assertEqual((s.min_success_rate, s.max_p95_ms), (99.5, 500.0))
        self.assertEqual((s.max_rtp_loss, s.min_mos), (0.1, 4.1))
        self.assertEqual((s.save_report, s.html_report), ("r.json", "r.html"))
        self.assertEqual(
            (s.local_ip, s.register_rate, s.domain), ("10.0.0.9", 200.0, "pbx.example")
        )
        self.assertEqual((s.prometheus_port, s.timeout, s.expires), (9400, 900.0, 120))

    def test_bad_values_name_the_option(self) -> None:
        """Each bad value is refused with the option's name."""
        ok = ["--users-file", self.users("1;password\n2;password\n"), "--users", "2"]
        self.assert_usage([*ok, "--transport", "sctp"], "--transport")
        self.assert_usage([*ok, "--test-type", "soak"], "--test-type")
        self.assert_usage([*ok, "--pbx-host", "pbx.example"], "--pbx-host")
        self.assert_usage([*ok, "--sip-port", "70000"], "sip-port")
        self.assert_usage([*ok, "--call-rate", "fast"], "call-rate")
        self.assert_usage([*ok, "--min-success-rate", "101"], "min-success-rate")
        self.assert_usage(["--users", "2"], "--users-file")
        self.assert_usage([*ok, "--users", "3"], "has only 2")

    def test_calls_need_two_users(self) -> None:
        """A call test with one user cannot work."""
        path = self.users("1;password\n")
        self.assert_usage(
            ["--users-file", path, "--users", "1", "--test-type", "calls"], "at least 2"
        )

    def test_provision_needs_url_and_token(self) -> None:
        """--provision without --admin-url or without $WARDEN_ADMIN_TOKEN is refused."""
        self.assert_usage(["--provision"], "--admin-url")
        saved = os.environ.pop("WARDEN_ADMIN_TOKEN", None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, "WARDEN_ADMIN_TOKEN", saved)
        self.assert_usage(["--provision", "--admin-url", "https://127.0.0.1:8443"], "TOKEN")

    def test_provision_generates_accounts(self) -> None:
        """--provision makes --users accounts from --first-user with random passwords."""
        os.environ["WARDEN_ADMIN_TOKEN"] = "t"
        self.addCleanup(os.environ.pop, "WARDEN_ADMIN_TOKEN")
        options = self.parse(
            "--provision", "--admin-url", "https://127.0.0.1:8443", "--users", "3",
            "--first-user", "500",
        )  # fmt: skip
        self.assertEqual([a.user for a in options.accounts], ["500", "501", "502"])
        passwords = {a.password for a in options.accounts}
        self.assertEqual(len(passwords), 3)
        self.assertTrue(all(len(p) >= 16 for p in passwords))

    def test_usage_error_exits_2(self) -> None:
        """parseOptions (what twistd calls) turns a usage error into exit status 2."""
        exit = self.assertRaises(SystemExit, Options().parseOptions, ["--transport", "x"])
        self.assertEqual(exit.code, EXIT_USAGE)

    def test_p95_limit_in_milliseconds(self) -> None:
        """
        --max-p95-ms sets the p95 limit in milliseconds; the older --max-p95 takes
        seconds and means the same; giving both is a usage error.
        """
        base = ["--users", "1", "--users-file", self.users("1;a\n")]
        s = self.parse(*base, "--max-p95-ms", "250").settings
        assert s is not None
        self.assertEqual(s.max_p95_ms, 250.0)
        s = self.parse(*base, "--max-p95", "0.25").settings
        assert s is not None
        self.assertEqual(s.max_p95_ms, 250.0)
        self.assert_usage([*base, "--max-p95", "1", "--max-p95-ms", "9"], "--max-p95")

    def test_help_explains_every_option(self) -> None:
        """--help text names every option with a description."""
        text = str(Options())
        names = ["--pbx-host", "--test-type", "--concurrent-calls", "--rtp", "--ramp-up"]
        names += ["--max-p95", "--save-report", "--html-report", "--local-ip", "--provision"]
        for name in names:
            self.assertIn(name, text)


class UsersFileTests(SynchronousTestCase):
    """The ``user;password`` CSV."""

    def write(self, text: str) -> str:
        """A file holding ``text``."""
        path = Path(self.mktemp())
        path.write_text(text)
        return str(path)

    def test_reads_lines(self) -> None:
        """Users and passwords; blank lines, comments and SIPp headers skipped."""
        accounts = read_users_file(self.write("RANDOM\n\n# x\n 100 ;p;w;d\n101;q\n"))
        self.assertEqual([(a.user, a.password) for a in accounts], [("100", "p"), ("101", "q")])

    def test_bad_line_is_named(self) -> None:
        """A line without a password names its number."""
        error = self.assertRaises(usage.UsageError, read_users_file, self.write("1;a\n2\n"))
        self.assertIn("line 2", str(error))

    def test_repeated_user(self) -> None:
        """A user twice is an error."""
        error = self.assertRaises(usage.UsageError, read_users_file, self.write("1;a\n1;b\n"))
        self.assertIn("repeated", str(error))

    def test_missing_or_empty(self) -> None:
        """A missing file and a file without users are errors naming the option."""
        error = self.assertRaises(usage.UsageError, read_users_file, "/nonexistent/users.csv")
        self.assertIn("--users-file", str(error))
        error = self.assertRaises(usage.UsageError, read_users_file, self.write("# none\n"))
        self.assertIn("no 'user;password'", str(error))


class MakeServiceTests(SynchronousTestCase):
    """makeService builds the service from the options."""

    def test_make_service(self) -> None:
        """A LoadTestService carrying the settings and accounts."""
        path = Path(self.mktemp())
        path.write_text("1;password1\n2;password2\n")
        options = Options()
        options.parse_strict(["--users-file", str(path), "--users", "2", "--test-type", "calls"])
        service = makeService(options)
        self.assertIsInstance(service, LoadTestService)
        self.assertIs(service.settings, options.settings)
        self.assertEqual([a.user for a in service.accounts], ["1", "2"])

    def test_plugin_is_declared(self) -> None:
        """twistd finds warden-loadtest and its tap module provides Options and makeService."""
        from twisted.application.service import IServiceMaker
        from twisted.plugin import IPlugin, getPlugins

        makers = {m.tapname: m for m in getPlugins(IServiceMaker) if IPlugin.providedBy(m)}
        self.assertIn("warden-loadtest", makers)
        self.assertIsInstance(makers["warden-loadtest"].options(), Options)
