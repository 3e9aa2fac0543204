"""Tests for L{bench.calls}' options."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench.calls import Rig, media_settings, parse_args


class MediaSettingsTests(SynchronousTestCase):
    """``--media KEY=VALUE``: a [media] setting for the Warden under test."""

    def test_toml_values(self) -> None:
        """Values are TOML: numbers, booleans, strings."""
        self.assertEqual(
            media_settings(["relay_processes=2", "relay_process = false", 'engine="builtin"']),
            {"relay_processes": 2, "relay_process": False, "engine": "builtin"},
        )

    def test_bad(self) -> None:
        """A pair without '=', a bad key or a value that is not TOML is a ValueError."""
        for bad in ("relay_processes", "=2", "a b=1", "engine=builtin"):
            self.assertRaises(ValueError, media_settings, [bad])

    def test_option(self) -> None:
        """The option is repeatable and reaches the parsed arguments as a table."""
        options = ["--media", "relay_processes=2", "--media", "timeout=30"]
        args = parse_args(["--mode", "cps", *options])
        self.assertEqual(args.media, {"relay_processes": 2, "timeout": 30})
        self.assertEqual(parse_args(["--mode", "cps"]).media, {})
        with self.assertRaises(SystemExit):
            parse_args(["--media", "nonsense"])


class SocketPerCallTests(SynchronousTestCase):
    """``--socket-per-call``: each UAC call from a socket of its own (SIPp's ``-t un``)."""

    def rig(self, per_call: bool) -> Rig:
        return Rig(Path(self.mktemp()), echo=False, socket_per_call=per_call)

    def test_uac_arguments(self) -> None:
        """With it the UAC runs ``-t un`` with room for the sockets; without it, SIPp's default."""
        args = self.rig(True).uac_args("call_uac_cps.xml", 10, 5.0, 30.0)
        self.assertEqual(args[args.index("-t") + 1], "un")
        self.assertEqual(args[args.index("-max_socket") + 1], "10000")
        plain = self.rig(False).uac_args("call_uac_cps.xml", 10, 5.0, 30.0)
        self.assertNotIn("-t", plain)
        self.assertNotIn("-max_socket", plain)

    def test_option(self) -> None:
        self.assertTrue(parse_args(["--mode", "cps", "--socket-per-call"]).socket_per_call)
        self.assertFalse(parse_args(["--mode", "cps"]).socket_per_call)
        self.assertEqual(parse_args(["--mode", "cps", "--cpu-cap", "0.4"]).cpu_cap, 0.4)
