"""Tests for L{bench.calls}' options."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bench.calls import media_settings, parse_args


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
