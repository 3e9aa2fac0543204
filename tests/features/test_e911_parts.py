"""
The parts of the e911 plugin that are no call: ``[emergency]`` parsing, civic
address checks (RFC 4119/5139 element names), the PIDF-LO builder (RFC 4119,
RFC 5491), network matching (most specific prefix), and the plugin's place
first among the call hooks.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from twisted.trial.unittest import SynchronousTestCase

from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.features.e911 import EmergencyPlugin, best_network
from warden.features.e911_config import EmergencyConfig, parse_emergency
from warden.features.pidf import CIVIC_NS, DM_NS, GP_NS, PIDF_NS, geolocation_header, pidf_lo
from warden.model.emergency import (
    CivicError,
    CivicLocation,
    check_civic,
    civic_text,
    parse_civic,
    parse_network,
)
from warden.plugin import BuildContext, discover, enabled_plugins
from warden.testing.reactor import MemoryWardenReactor

ISSUE_EXAMPLE = "country=US,A1=CA,A3=San Jose,RD=Main St,HNO=100,FLR=2,ROOM=201"


class ConfigTests(SynchronousTestCase):
    """``[emergency]``: every key checked, errors name the key."""

    def bad(self, table: dict[str, object], path: str) -> str:
        error = self.assertRaises(ConfigError, parse_emergency, table)
        self.assertEqual(error.path, path)
        return str(error)

    def test_defaults(self) -> None:
        """911 and 933 (the test number), no trunk, no prefix."""
        config = parse_emergency({})
        self.assertEqual(config, EmergencyConfig())
        self.assertEqual(config.numbers, ("911", "933"))
        self.assertEqual(config.test_numbers, ("933",))

    def test_contract(self) -> None:
        """The issue's contract parses, notify keys included."""
        config = parse_emergency({
            "numbers": ["911", "933"], "trunks": ["itsp"], "outside_prefix": "9",
            "notify_extensions": ["1000"], "notify_webhook": "https://hooks.example.net/911",
            "default_location": "hq-lobby", "notify_email": ["security@example.net"],
            "smtp_host": "mail.example.net", "smtp_port": 587, "smtp_from": "pbx@example.net",
            "reserve_calls": 1,
        })  # fmt: skip
        self.assertEqual(config.trunks, ("itsp",))
        self.assertEqual(config.notify.notify_extensions, ("1000",))
        self.assertEqual(config.notify.smtp_port, 587)

    def test_emergency_number(self) -> None:
        """With prefix 9: 911, 9911, 933, 9933; not 91, 99911 or 9."""
        config = parse_emergency({"outside_prefix": "9"})
        for dialled, number in (("911", "911"), ("9911", "911"), ("933", "933"),
                                ("9933", "933"), ("91", None), ("99911", None), ("9", None),
                                ("", None)):  # fmt: skip
            self.assertEqual(config.emergency_number(dialled), number, dialled)
        self.assertIsNone(parse_emergency({}).emergency_number("9911"))

    def test_bad_values(self) -> None:
        """Each bad value is refused naming its key."""
        self.assertIn("unknown key", self.bad({"psap": "x"}, "emergency.psap"))
        self.bad({"numbers": ["91a"]}, "emergency.numbers")
        self.bad({"numbers": ["\uff19\uff11\uff11"]}, "emergency.numbers")  # fullwidth digits
        self.bad({"numbers": []}, "emergency.numbers")
        self.bad({"numbers": ["911", "911"]}, "emergency.numbers")
        self.bad({"test_numbers": ["112"]}, "emergency.test_numbers")
        self.bad({"trunks": "itsp"}, "emergency.trunks")
        self.bad({"outside_prefix": "99999"}, "emergency.outside_prefix")
        self.bad({"default_location": "hq lobby"}, "emergency.default_location")
        self.bad({"reserve_calls": -1}, "emergency.reserve_calls")
        self.bad({"reserve_calls": True}, "emergency.reserve_calls")
        self.bad({"notify_webhook": "http://hooks.example.net/"}, "emergency.notify_webhook")
        self.bad({"notify_webhook": "https://"}, "emergency.notify_webhook")
        self.bad({"notify_webhook": "https://h:99999/"}, "emergency.notify_webhook")
        self.bad({"notify_extensions": ["10 00"]}, "emergency.notify_extensions")
        self.bad({"notify_email": ["a@b.example"]}, "emergency.notify_email")
        self.bad({"notify_email": ["not-an-address"]}, "emergency.notify_email")
        self.bad({"smtp_port": 0}, "emergency.smtp_port")
        self.bad({"smtp_from": "x"}, "emergency.smtp_from")

    def test_in_config_file(self) -> None:
        """The section is the e911 plugin's; a bad key names the file."""
        config = parse_config_text('[emergency]\ntrunks = ["itsp"]\n')
        self.assertEqual(config.plugin_sections["emergency"].trunks, ("itsp",))
        error = self.assertRaises(
            ConfigError, parse_config_text, "[emergency]\nnumbers = 911\n", "w.toml"
        )
        self.assertIn("w.toml", str(error))
        self.assertEqual(error.path, "emergency.numbers")


class CivicTests(SynchronousTestCase):
    """Civic addresses: RFC 4119/5139 element names only, checked values."""

    def test_issue_example(self) -> None:
        """The documented example parses, in schema order."""
        civic = parse_civic(ISSUE_EXAMPLE)
        self.assertEqual(list(civic), ["country", "A1", "A3", "RD", "HNO", "FLR", "ROOM"])
        self.assertEqual(civic["A3"], "San Jose")
        self.assertEqual(civic_text(civic), "100 Main St, Floor 2, Room 201, San Jose, CA, US")

    def test_refused(self) -> None:
        """Unknown elements, no or bad country, repeats, empties and control characters."""
        for text, said in (
            ("country=US,FLOOR=2", "unknown civic address element 'FLOOR'"),
            ("country=US,flr=2", "unknown civic address element 'flr'"),
            ("A1=CA", "needs 'country'"),
            ("country=USA", "ISO 3166"),
            ("country=us", "ISO 3166"),
            ("country=US,A1=CA,A1=NV", "twice"),
            ("country=US,A1=", "empty"),
            ("country=US,A1", "not ELEMENT=value"),
            ("country=US,LOC=a\x00b", "printable"),
            ("country=US,LOC=" + "x" * 129, "at most 128"),
        ):
            error = self.assertRaises(CivicError, parse_civic, text)
            self.assertIn(said, str(error), text)

    def test_check_mapping(self) -> None:
        """A mapping (the API's object) is checked the same way."""
        self.assertEqual(check_civic({"A1": "CA", "country": "US"}), {"country": "US", "A1": "CA"})
        self.assertRaises(CivicError, check_civic, {"country": "US", "PIDF": "x"})

    def test_networks(self) -> None:
        """Networks are canonical CIDR; host bits or garbage are refused."""
        self.assertEqual(parse_network("10.1.2.0/24"), "10.1.2.0/24")
        self.assertEqual(parse_network("2001:DB8::/48"), "2001:db8::/48")
        self.assertEqual(parse_network("10.1.2.3"), "10.1.2.3/32")
        for text in ("10.1.2.3/24", "10.1.2.0/33", "lobby", ""):
            self.assertRaises(CivicError, parse_network, text)

    def test_best_network(self) -> None:
        """The most specific network holding the address wins; other families never match."""
        networks = [("10.0.0.0/8", "campus"), ("10.1.2.0/24", "floor2"),
                    ("10.1.0.0/16", "building"), ("2001:db8::/32", "v6")]  # fmt: skip
        self.assertEqual(best_network(networks, "10.1.2.77"), "floor2")
        self.assertEqual(best_network(networks, "10.1.9.1"), "building")
        self.assertEqual(best_network(networks, "10.200.0.1"), "campus")
        self.assertEqual(best_network(networks, "[2001:db8::5]"), "v6")
        self.assertIsNone(best_network(networks, "192.0.2.1"))
        self.assertIsNone(best_network(networks, "phone.example"))


class PidfTests(SynchronousTestCase):
    """PIDF-LO documents (RFC 4119 with RFC 5491's device element)."""

    def test_document(self) -> None:
        """A civicAddress in geopriv/location-info of a device, in schema order, escaped."""
        civic = parse_civic("country=US,A1=CA,ROOM=2<1>&,FLR=2")
        body = pidf_lo("pres:1001@pbx.example", civic, "1001", 0.0)
        self.assertTrue(body.startswith(b"<?xml"))
        root = ET.fromstring(body)
        self.assertEqual(root.tag, f"{{{PIDF_NS}}}presence")
        self.assertEqual(root.get("entity"), "pres:1001@pbx.example")
        device = root.find(f"{{{DM_NS}}}device")
        assert device is not None
        self.assertEqual(device.findtext(f"{{{DM_NS}}}timestamp"), "1970-01-01T00:00:00Z")
        geopriv = device.find(f"{{{GP_NS}}}geopriv")
        assert geopriv is not None
        self.assertEqual(geopriv.findtext(f"{{{GP_NS}}}method"), "Manual")
        self.assertIsNotNone(geopriv.find(f"{{{GP_NS}}}usage-rules"))
        address = geopriv.find(f"{{{GP_NS}}}location-info/{{{CIVIC_NS}}}civicAddress")
        assert address is not None
        self.assertEqual(
            [(e.tag.split("}")[1], e.text) for e in address],
            [("country", "US"), ("A1", "CA"), ("FLR", "2"), ("ROOM", "2<1>&")],
        )
        self.assertIn(b"2&lt;1&gt;&amp;", body)

    def test_geolocation_header(self) -> None:
        """A cid: URI in angle brackets (RFC 6442 §4.1)."""
        self.assertEqual(geolocation_header("abc@pbx.example"), "<cid:abc@pbx.example>")

    def test_location_text(self) -> None:
        """A location reads as one line."""
        location = CivicLocation("lobby", {"country": "US", "A3": "San Jose", "LOC": "Lobby"})
        self.assertEqual(location.text, "Lobby, San Jose, US")


class HookOrderTests(SynchronousTestCase):
    """The plugin must be the first call hook: nothing may divert an emergency call."""

    def test_after_callfeatures_refused(self) -> None:
        """Listed after other call hooks, building fails naming the first."""
        available = discover()
        config = parse_config_text(
            '[plugins]\nenabled = ["sip", "media", "trunks", "callfeatures", "e911"]\n'
        )
        plugins = enabled_plugins(config.plugins.enabled, available)
        context = BuildContext(MemoryWardenReactor(), config, None, {}, plugins)
        plugin = available["e911"]
        assert isinstance(plugin, EmergencyPlugin)
        error = self.assertRaises(ConfigError, plugin.make, context)
        self.assertEqual(error.path, "plugins.enabled")
        self.assertIn("e911 must come before 'trunks'", str(error))
