"""Tests for the ``[media]`` source and destination keys (ADR 0013) and their wiring."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.plugins.media import media_policy
from warden.rtp.policy import MediaPolicy, ip_of


class MediaRuleConfigTests(SynchronousTestCase):
    """``latch``, ``latch_packets`` and ``destinations`` parse with safe defaults."""

    def test_defaults(self) -> None:
        """By default media latches only to the phone's own addresses, after 3 packets,
        and goes only to destinations of the phone's address class."""
        media = parse_config_text("", "warden.toml").media
        self.assertEqual(
            (media.latch, media.latch_packets, media.destinations), ("signalling", 3, "same-class")
        )

    def test_values(self) -> None:
        """The widening values are accepted."""
        text = '[media]\nlatch = "any"\nlatch_packets = 1\ndestinations = "any"'
        media = parse_config_text(text, "warden.toml").media
        self.assertEqual((media.latch, media.latch_packets, media.destinations), ("any", 1, "any"))

    def test_bad_values(self) -> None:
        """A bad value names the file, the key and what is expected."""
        cases = {
            '[media]\nlatch = "first"': (
                "media.latch",
                'warden.toml: media.latch: must be "signalling" or "any", got "first"',
            ),
            "[media]\nlatch_packets = 0": (
                "media.latch_packets",
                "warden.toml: media.latch_packets: must be an integer 1..50, got 0",
            ),
            '[media]\ndestinations = "public"': (
                "media.destinations",
                'warden.toml: media.destinations: must be "same-class" or "any", got "public"',
            ),
        }
        for text, (path, message) in cases.items():
            error = self.assertRaises(ConfigError, parse_config_text, text, "warden.toml")
            self.assertEqual((error.path, str(error)), (path, message))

    def test_policy_from_config(self) -> None:
        """The relay gets the configured rules, with this host's addresses as its own."""
        text = '[media]\naddress = "192.0.2.77"\nlatch = "any"\nlatch_packets = 5'
        policy = media_policy(parse_config_text(text, "warden.toml"))
        self.assertEqual(
            (policy.latch, policy.destinations, policy.latch_packets), ("any", "same-class", 5)
        )
        self.assertIn(ip_of("192.0.2.77"), policy.own_addresses)
        self.assertIn(ip_of("127.0.0.1"), policy.own_addresses)
        self.assertIsInstance(policy, MediaPolicy)


class SrtpConfigTests(SynchronousTestCase):
    """``[media] srtp`` (ADR 0019): optional by default, reaching the relay's policy."""

    def test_default_and_required(self) -> None:
        """SRTP is optional unless configured; "required" reaches the media policy."""
        self.assertEqual(parse_config_text("", "warden.toml").media.srtp, "optional")
        config = parse_config_text('[media]\nsrtp = "required"', "warden.toml")
        self.assertEqual(media_policy(config).srtp, "required")

    def test_bad_value(self) -> None:
        """Another value names the file, the key and the choices."""
        error = self.assertRaises(
            ConfigError, parse_config_text, '[media]\nsrtp = "always"', "warden.toml"
        )
        self.assertEqual(
            (error.path, str(error)),
            (
                "media.srtp",
                'warden.toml: media.srtp: must be "optional" or "required", got "always"',
            ),
        )


class MediaEngineConfigTests(SynchronousTestCase):
    """``[media] engine`` and ``rtpengine_ng`` (ADR 0025), and what the plugin provides."""

    def relay(self, text: str) -> object:
        from twisted.internet.testing import MemoryReactorClock

        from warden.interfaces import IMediaRelay
        from warden.plugin import BuildContext
        from warden.plugins.media import plugin

        context = BuildContext(MemoryReactorClock(), parse_config_text(text, "w.toml"), None, {})
        plugin.make(context)
        return context.optional("media", IMediaRelay)

    def test_default_builtin(self) -> None:
        """
        The built-in relay is the default; rtpengine's address defaults to
        127.0.0.1:2223; relay_process = false keeps the relay in this process,
        and rtpengine ignores it.
        """
        from warden.rtp.relay import MediaRelay
        from warden.rtp.rtpengine import RtpengineRelay

        media = parse_config_text("", "w.toml").media
        self.assertEqual((media.engine, media.rtpengine_ng), ("builtin", "127.0.0.1:2223"))
        self.assertIsInstance(self.relay("[media]\nrelay_process = false"), MediaRelay)
        self.assertIsInstance(self.relay('[media]\nengine = "rtpengine"'), RtpengineRelay)

    def test_rtpengine(self) -> None:
        """engine = "rtpengine" provides the rtpengine client at the configured address."""
        from warden.rtp.rtpengine import RtpengineRelay

        text = '[media]\nengine = "rtpengine"\nrtpengine_ng = "[::1]:22222"\ntimeout = 30'
        relay = self.relay(text)
        assert isinstance(relay, RtpengineRelay)
        self.assertEqual((relay.client.address, relay.media_timeout), (("::1", 22222), 30.0))

    def test_relay_process(self) -> None:
        """By default the process relay is provided and starts the media process."""
        import sys

        from twisted.internet.testing import MemoryReactorClock

        from warden.interfaces import IMediaRelay
        from warden.plugin import BuildContext
        from warden.plugins.media import plugin
        from warden.rtp.procrelay import ProcessRelay

        spawned: list[tuple[Any, ...]] = []

        class Reactor(MemoryReactorClock):
            def spawnProcess(self, protocol: Any, executable: str, args: Any, **kw: Any) -> Any:  # noqa: N802
                spawned.append((executable, args, kw["childFDs"]))
                return None

        self.assertTrue(parse_config_text("", "w.toml").media.relay_process)
        text = '[media]\nport_min = 30000\nport_max = 30099\nhold_music = ""'
        context = BuildContext(Reactor(), parse_config_text(text, "w.toml"), None, {})
        plugin.make(context)
        relay = context.optional("media", IMediaRelay)
        assert isinstance(relay, ProcessRelay)
        self.assertEqual(
            spawned,
            [
                (
                    sys.executable,
                    [sys.executable, "-m", "warden.rtp.mediaproc"],
                    {0: "w", 1: "r", 2: "r"},
                )
            ],
        )
        self.assertEqual(
            (relay.settings["port_min"], relay.settings["port_max"], relay.settings["hold_music"]),
            (30000, 30099, ""),
        )

    def test_bad_values(self) -> None:
        """A bad engine or address names the file, the key and what is expected."""
        cases = {
            '[media]\nengine = "kernel"': (
                "media.engine",
                'w.toml: media.engine: must be "builtin" or "rtpengine", got "kernel"',
            ),
            '[media]\nrtpengine_ng = "localhost:2223"': (
                "media.rtpengine_ng",
                'w.toml: media.rtpengine_ng: must be an IP address and port, "127.0.0.1:2223",'
                ' got "localhost:2223"',
            ),
            '[media]\nrelay_process = "yes"': (
                "media.relay_process",
                'w.toml: media.relay_process: must be true or false, got "yes"',
            ),
            '[media]\nengine = "rtpengine"\nsrtp = "required"': (
                "media.srtp",
                'w.toml: media.srtp: "required" needs engine = "builtin" (SRTP, ADR 0025)',
            ),
        }
        for text, (path, message) in cases.items():
            error = self.assertRaises(ConfigError, parse_config_text, text, "w.toml")
            self.assertEqual((error.path, str(error)), (path, message))
        for bad in ("127.0.0.1", "127.0.0.1:0", "::1:2223", "127.0.0.1:٢٢٢٣"):
            error = self.assertRaises(
                ConfigError, parse_config_text, f'[media]\nrtpengine_ng = "{bad}"', "w.toml"
            )
            self.assertEqual(error.path, "media.rtpengine_ng")


class RelayProcessesConfigTests(SynchronousTestCase):
    """``[media] relay_processes`` (ADR 0033, amendment of 7 December)."""

    def test_default_and_values(self) -> None:
        """One media process by default; a number; "auto" is one per core, at most 4."""
        from unittest import mock

        from warden import config as config_module

        self.assertEqual(parse_config_text("", "w.toml").media.relay_processes, 1)
        media = parse_config_text("[media]\nrelay_processes = 3", "w.toml").media
        self.assertEqual(media.relay_processes, 3)
        for cores, expected in ((1, 1), (2, 2), (64, 4)):
            with mock.patch.object(config_module, "usable_cores", return_value=cores):
                media = parse_config_text('[media]\nrelay_processes = "auto"', "w.toml").media
            self.assertEqual(media.relay_processes, expected)

    def test_bad_values(self) -> None:
        """A bad count names the file, the key and what is expected."""
        expected = 'must be an integer 1..16 or "auto"'
        for bad in ("0", "17", "true", '"2"', "1.5"):
            error = self.assertRaises(
                ConfigError, parse_config_text, f"[media]\nrelay_processes = {bad}", "w.toml"
            )
            self.assertEqual(error.path, "media.relay_processes")
            self.assertIn(expected, str(error))
        # 8 ports from an odd port: RTP starts at 30002, leaving 3 for the second process.
        odd = "[media]\nport_min = 30001\nport_max = 30008\nrelay_processes = 2"
        error = self.assertRaises(ConfigError, parse_config_text, odd, "w.toml")
        self.assertEqual(error.path, "media.relay_processes")
        text = "[media]\nport_min = 30000\nport_max = 30010\nrelay_processes = 3"
        error = self.assertRaises(ConfigError, parse_config_text, text, "w.toml")
        self.assertEqual(
            (error.path, str(error)),
            (
                "media.relay_processes",
                "w.toml: media.relay_processes: needs 4 ports per process in"
                " media.port_min..port_max",
            ),
        )
        # In the SIP process (relay_process = false) there is one relay whatever the count.
        text += "\nrelay_process = false"
        self.assertEqual(parse_config_text(text, "w.toml").media.relay_processes, 3)

    def test_plugin_starts_each_process(self) -> None:
        """The media plugin provides one relay over that many processes, each its own ports."""
        from twisted.internet.testing import MemoryReactorClock

        from warden.interfaces import IMediaRelay
        from warden.plugin import BuildContext
        from warden.plugins.media import plugin
        from warden.rtp.procrelay import ProcessRelays

        spawned: list[Any] = []

        class Reactor(MemoryReactorClock):
            def spawnProcess(self, protocol: Any, *args: Any, **kw: Any) -> Any:  # noqa: N802
                spawned.append(protocol)
                return None

        text = '[media]\nport_min = 30000\nport_max = 30099\nhold_music = ""\nrelay_processes = 2'
        context = BuildContext(Reactor(), parse_config_text(text, "w.toml"), None, {})
        plugin.make(context)
        relay = context.optional("media", IMediaRelay)
        assert isinstance(relay, ProcessRelays)
        self.assertEqual(len(spawned), 2)
        self.assertEqual(
            [(r.settings["port_min"], r.settings["port_max"]) for r in relay.relays],
            [(30000, 30049), (30050, 30099)],
        )
