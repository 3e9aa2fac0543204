"""Tests for warden.tap: the twistd command line and the composition root."""

from __future__ import annotations

import os

from twisted.application.service import IServiceCollection
from twisted.python import usage
from twisted.trial.unittest import TestCase

from warden.config import parse_config_text
from warden.plugins.sip import sip_settings
from warden.sip.service import SipService
from warden.tap import Options, makeService
from warden.testing.reactor import MemoryWardenReactor


class OptionsTests(TestCase):
    """``twistd warden`` options."""

    def test_defaults(self) -> None:
        """Without --config: embedded defaults, port 5060 on all interfaces, ./var."""
        options = Options()
        options.parseOptions([])
        assert options.config is not None
        self.assertEqual(options.config.sip.port, 5060)
        self.assertEqual(options.config.sip.interface, "")
        self.assertEqual(options.config.server.data_dir, "./var")
        self.assertEqual(set(options.config.sip.transports), {"udp", "tcp"})

    def test_flags_override_file(self) -> None:
        """--sip-port, --sip-interface, --data-dir and --domain override the file."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[sip]\nport = 5070\n[server]\ndomains = ["a.test"]\n')
        options = Options()
        options.parseOptions(
            ["--config", path, "--sip-port", "5080", "--sip-interface", "127.0.0.1",
             "--data-dir", "/tmp/x", "--domain", "b.test", "--domain", "c.test"]
        )  # fmt: skip
        assert options.config is not None
        self.assertEqual(options.config.sip.port, 5080)
        self.assertEqual(options.config.sip.interface, "127.0.0.1")
        self.assertEqual(options.config.server.data_dir, "/tmp/x")
        self.assertEqual(list(options.config.server.domains), ["a.test", "b.test", "c.test"])

    def test_bad_config_one_line(self) -> None:
        """A bad value stops start-up with one line naming file, key and problem."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[sip]\nport = "abc"\n')
        options = Options()
        error = self.assertRaises(usage.UsageError, options.parseOptions, ["--config", path])
        message = str(error)
        self.assertIn(path, message)
        self.assertIn("sip.port", message)
        self.assertNotIn("\n", message)

    def test_unknown_key(self) -> None:
        """An unknown key is refused by name."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[sip]\nprot = 5060\n")
        error = self.assertRaises(usage.UsageError, Options().parseOptions, ["--config", path])
        self.assertIn("sip.prot", str(error))

    def test_bad_port_flag(self) -> None:
        """A non-numeric --sip-port is a usage error."""
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--sip-port", "x"])

    def test_non_ascii_port_flag(self) -> None:
        """--sip-port in non-ASCII digits is a usage error, not a traceback or port 5060."""
        for port in ("\u00b2", "\u0665\u0660\u0666\u0660"):
            self.assertRaises(usage.UsageError, Options().parseOptions, ["--sip-port", port])


class MakeServiceTests(TestCase):
    """makeService wires the store and the SIP service."""

    def test_builds_and_creates_data_dir(self) -> None:
        """The service tree holds the SIP service; the data dir is created."""
        data_dir = os.path.join(self.mktemp(), "var")
        options = Options()
        options.parseOptions(["--data-dir", data_dir, "--sip-port", "0"])
        root = makeService(options, reactor=MemoryWardenReactor())
        self.assertTrue(os.path.isdir(data_dir))
        self.assertTrue(IServiceCollection.providedBy(root))
        children = list(root)  # type: ignore[call-overload]
        self.assertIsInstance(children[0], SipService)
        # [sip] nat reaches the calls' addressing and the cluster hop alike.
        self.assertEqual((children[0].addressing.nat, children[0].hop.nat), ("auto", "auto"))
        self.assertEqual(
            [type(c).__name__ for c in children[1:]],
            # callfeatures' BLF, recording, voicemail's MWI and its metrics refresh
            [
                "AdminService",
                "DialogEventsService",
                "Recordings",
                "DialogEventsService",
                "TimerService",
                "RunLocks",
            ],
        )
        root.store.close_pool()  # type: ignore[attr-defined]
        children[-1].directories.release()

    def test_first_start_data_directory_private(self) -> None:
        """
        The data directory the option check creates (the SQLite store's) is
        private from the start, whatever umask twistd inherited, so a first
        start has nothing to tighten and warns about nothing.
        """
        previous = os.umask(0o022)
        self.addCleanup(os.umask, previous)
        data_dir = os.path.join(os.path.abspath(self.mktemp()), "fresh")
        Options().parseOptions(["--data-dir", data_dir])
        self.assertEqual(os.stat(data_dir).st_mode & 0o777, 0o700)

    def test_sip_settings(self) -> None:
        """Timers, realm and registrar settings come from the configuration."""
        options = Options()
        options.parseOptions(["--domain", "pbx.example.com"])
        assert options.config is not None
        settings = sip_settings(options.config)
        self.assertEqual(settings.realm, "pbx.example.com")
        self.assertEqual(settings.timers.t1, 0.5)
        self.assertEqual(settings.algorithms, ("MD5",))
        self.assertEqual((settings.server_header, settings.accept_rfc2069), ("Warden", False))
        self.assertEqual(settings.nat, "auto")
        self.assertEqual(sip_settings(parse_config_text('[sip]\nnat = "never"')).nat, "never")
        self.assertEqual(settings.expiry.min, 60)
