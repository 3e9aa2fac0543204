"""
``[[trunks]]`` and ``[routes]`` (warden.features.trunk_config) as the
configuration parser reads them: arrays of tables, every key checked, errors
naming the file and key, passwords never inline.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.features.trunk_config import (
    RoutesConfig,
    TrunkConfig,
    TrunksConfig,
    check_routes,
    check_targets,
    parse_dns,
    parse_trunks,
)

GOOD = """
[[trunks]]
name = "itsp"
host = "sip.example.net"
username = "acct"
password_env = "WARDEN_TRUNK_ITSP_PASSWORD"
from_number = "15551230000"

[[trunks]]
name = "backup"
host = "192.0.2.60"
port = 5070
register = false

[[routes.outbound]]
pattern = "_9NXXNXXXXXX"
strip = 1
prefix = "1"
trunks = ["itsp", "backup"]

[[routes.inbound]]
did = "15551230001"
to = "1001"
"""


class ParseTests(SynchronousTestCase):
    """Whole configurations through the parser."""

    def parse(self, text: str) -> tuple[TrunksConfig, RoutesConfig]:
        config = parse_config_text(text, "warden.toml")
        trunks = config.plugin_sections.get("trunks", TrunksConfig())
        routes = config.plugin_sections.get("routes", RoutesConfig())
        assert isinstance(trunks, TrunksConfig) and isinstance(routes, RoutesConfig)
        return trunks, routes

    def bad(self, text: str, message: str) -> None:
        error = self.assertRaises(ConfigError, parse_config_text, text, "warden.toml")
        self.assertEqual(str(error), message)

    def test_example(self) -> None:
        """The contract's example parses to trunks and routes."""
        trunks, routes = self.parse(GOOD)
        self.assertEqual([t.name for t in trunks.trunks], ["itsp", "backup"])
        itsp = trunks.trunks[0]
        self.assertEqual((itsp.port, itsp.transport, itsp.register), (5060, "udp", True))
        self.assertEqual(routes.outbound[0].trunks, ("itsp", "backup"))
        self.assertEqual(routes.outbound[0].applies("1001", "95552345678"), "15552345678")
        self.assertIsNone(routes.outbound[0].applies("1001", "95551234567"))
        self.assertEqual(routes.extension_for("+15551230001"), "1001")
        self.assertEqual(routes.number_of("1001"), "15551230001")
        check_routes(routes, trunks)

    def test_inline_password(self) -> None:
        """A password written in the file is refused, naming file and key."""
        self.bad(
            '[[trunks]]\nname = "a"\nhost = "h.example"\nusername = "u"\npassword = "x"\n',
            "warden.toml: trunks[0].password: a password is never written in the"
            " configuration: use password_env or password_file",
        )

    def test_trunks_must_be_array(self) -> None:
        """``[trunks]`` (one table) is not ``[[trunks]]``."""
        error = self.assertRaises(
            ConfigError, parse_config_text, '[trunks]\nname = "a"\n', "warden.toml"
        )
        self.assertIn("trunks: must be an array of tables ([[trunks]])", str(error))

    def test_registering_needs_credentials(self) -> None:
        """register = true without a password source is refused."""
        self.bad(
            '[[trunks]]\nname = "a"\nhost = "h.example"\nusername = "u"\n',
            "warden.toml: trunks[0].password_env: a registering trunk needs username and"
            " password_env or password_file",
        )

    def test_unknown_key(self) -> None:
        """Unknown keys are named."""
        error = self.assertRaises(
            ConfigError,
            parse_config_text,
            '[[trunks]]\nname = "a"\nhost = "h.example"\nregister = false\nproxy = "x"\n',
            "warden.toml",
        )
        self.assertTrue(str(error).startswith("warden.toml: trunks[0].proxy: unknown key"))

    def test_duplicate_name(self) -> None:
        """Two trunks with one name."""
        table = '[[trunks]]\nname = "a"\nhost = "h.example"\nregister = false\n'
        self.bad(table * 2, "warden.toml: trunks[1].name: another trunk is named 'a'")

    def test_bad_host_and_port(self) -> None:
        """The host must be a host name or IP; the port 1..65535."""
        self.bad(
            '[[trunks]]\nname = "a"\nhost = "bad host"\nregister = false\n',
            "warden.toml: trunks[0].host: must be a host name or an IP address, got 'bad host'",
        )
        self.bad(
            '[[trunks]]\nname = "a"\nhost = "h.example"\nregister = false\nport = 0\n',
            "warden.toml: trunks[0].port: must be a port 1..65535, got 0",
        )

    def test_addresses(self) -> None:
        """Provider addresses are IP addresses or networks."""
        trunks, _ = self.parse(
            '[[trunks]]\nname = "a"\nhost = "h.example"\nregister = false\n'
            'addresses = ["203.0.113.5", "198.51.100.0/24"]\n'
        )
        self.assertEqual([str(n) for n in trunks.trunks[0].addresses],
                         ["203.0.113.5/32", "198.51.100.0/24"])  # fmt: skip
        self.bad(
            '[[trunks]]\nname = "a"\nhost = "h.example"\nregister = false\n'
            'addresses = ["nowhere"]\n',
            "warden.toml: trunks[0].addresses: must be a list of IP addresses or networks"
            " (203.0.113.0/24), got ['nowhere']",
        )

    def test_bad_pattern(self) -> None:
        """A route's pattern is checked as a dialplan pattern."""
        self.bad(
            '[[routes.outbound]]\npattern = "_9[12"\ntrunks = ["a"]\n',
            "warden.toml: routes.outbound[0].pattern: unclosed '[' in '_9[12'",
        )

    def test_route_needs_trunks(self) -> None:
        """A route names at least one trunk."""
        error = self.assertRaises(
            ConfigError, parse_config_text, '[[routes.outbound]]\npattern = "_9X."\n', "w.toml"
        )
        self.assertIn("routes.outbound[0].trunks: must be a non-empty list", str(error))

    def test_unknown_trunk_in_route(self) -> None:
        """A route naming no configured trunk is refused when the plugin is built."""
        trunks, routes = self.parse('[[routes.outbound]]\npattern = "_9X."\ntrunks = ["x"]\n')
        error = self.assertRaises(ConfigError, check_routes, routes, trunks)
        self.assertEqual(
            str(error), "routes.outbound[0].trunks: no trunk is named 'x' (known: none)"
        )

    def test_application_targets(self) -> None:
        """voicemail:, ringgroup: and ivr: targets need a plugin running them."""
        _, routes = self.parse('[[routes.inbound]]\ndid = "1555"\nto = "voicemail:1001"\n')
        error = self.assertRaises(ConfigError, check_targets, routes, frozenset({"ivr"}))
        self.assertEqual(
            str(error),
            "routes.inbound[0].to: voicemail: targets are not available"
            " (no enabled plugin runs 'voicemail')",
        )
        check_targets(routes, frozenset({"voicemail"}))
        self.bad(
            '[[routes.inbound]]\ndid = "1555"\nto = "voicemail:"\n',
            "warden.toml: routes.inbound[0].to: must be an application target"
            " (voicemail:1001), got 'voicemail:'",
        )

    def test_duplicate_did(self) -> None:
        """One DID, one route."""
        route = '[[routes.inbound]]\ndid = "1555"\nto = "1001"\n'
        self.bad(route * 2, "warden.toml: routes.inbound[1].did: 1555 is routed twice")

    def test_callers(self) -> None:
        """A route limited to some extensions applies only to them."""
        _, routes = self.parse(
            '[[routes.outbound]]\npattern = "_9X."\ntrunks = ["a"]\ncallers = ["_1XXX"]\n'
        )
        self.assertEqual(routes.outbound[0].applies("1001", "955"), "955")
        self.assertIsNone(routes.outbound[0].applies("2001", "955"))


class PasswordTests(SynchronousTestCase):
    """Passwords come from the environment or a file, read when Warden starts."""

    def trunk(self, **keys: str) -> TrunkConfig:
        lines = "".join(f'{k} = "{v}"\n' for k, v in keys.items())
        config = parse_config_text(
            f'[[trunks]]\nname = "a"\nhost = "h.example"\nusername = "u"\n{lines}'
        )
        trunks = config.plugin_sections["trunks"]
        assert isinstance(trunks, TrunksConfig)
        return trunks.trunks[0]

    def test_environment(self) -> None:
        """password_env reads the variable; unset is an error naming it."""
        trunk = self.trunk(password_env="WARDEN_TEST_TRUNK_PW")
        os.environ.pop("WARDEN_TEST_TRUNK_PW", None)
        error = self.assertRaises(ConfigError, trunk.password, "trunks[0]")
        self.assertEqual(
            str(error),
            "trunks[0].password_env: the environment variable WARDEN_TEST_TRUNK_PW is not set",
        )
        os.environ["WARDEN_TEST_TRUNK_PW"] = "pw"
        self.addCleanup(os.environ.pop, "WARDEN_TEST_TRUNK_PW", None)
        self.assertEqual(trunk.password("trunks[0]"), "pw")

    def test_file(self) -> None:
        """password_file: its first line; an empty file is an error."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("filepw\nignored\n")
        trunk = self.trunk(password_file=path)
        self.assertEqual(trunk.password("trunks[0]"), "filepw")
        with open(path, "w", encoding="utf-8") as f:
            f.write("")
        error = self.assertRaises(ConfigError, trunk.password, "trunks[0]")
        self.assertIn("trunks[0].password_file", str(error))

    def test_not_in_repr(self) -> None:
        """The trunk's repr names the variable, never a password."""
        os.environ["WARDEN_TEST_TRUNK_PW"] = "hunter2"
        self.addCleanup(os.environ.pop, "WARDEN_TEST_TRUNK_PW", None)
        trunk = self.trunk(password_env="WARDEN_TEST_TRUNK_PW")
        self.assertNotIn("hunter2", repr(trunk))


class TlsTrunkConfigTests(SynchronousTestCase):
    """``transport = "tls"``: its default port and ``tls_ca_file`` (ADR 0034)."""

    def trunk(self, **keys: object) -> TrunkConfig:
        return parse_trunks([{"name": "itsp", "host": "sip.example.net", "register": False,
                              **keys}]).trunks[0]  # fmt: skip

    def test_default_port(self) -> None:
        """A TLS trunk without ``port`` uses 5061, and says the port was not given."""
        trunk = self.trunk(transport="tls")
        self.assertEqual((trunk.port, trunk.port_given), (5061, False))
        self.assertEqual(self.trunk(transport="tls", port=5061).port_given, True)
        self.assertEqual(self.trunk(transport="tcp").port, 5060)

    def test_ca_file(self) -> None:
        """A readable PEM bundle is kept; its path is checked now."""
        from tests.features.stir_pki import make_ca

        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(make_ca("Test CA").pem)
        self.assertEqual(self.trunk(transport="tls", tls_ca_file=path).tls_ca_file, path)

    def test_bad_ca_file(self) -> None:
        """A missing file, a file without a certificate, a CA on a UDP trunk: errors by key."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate\n")
        for keys, message in (
            ({"tls_ca_file": "/nonexistent/ca.pem"},
             "trunks[0].tls_ca_file: cannot read /nonexistent/ca.pem: No such file or directory"),
            ({"tls_ca_file": path},
             f"trunks[0].tls_ca_file: {path} is not a PEM certificate bundle"),
            ({"tls_ca_file": 5}, "trunks[0].tls_ca_file: must be a file path, got 5"),
        ):  # fmt: skip
            error = self.assertRaises(ConfigError, self.trunk, transport="tls", **keys)
            self.assertEqual(str(error), message)
        error = self.assertRaises(ConfigError, self.trunk, tls_ca_file=path)
        self.assertIn("trunks[0].tls_ca_file", str(error))
        error = self.assertRaises(ConfigError, self.trunk, transport="sctp")
        self.assertEqual(str(error), "trunks[0].transport: must be udp, tcp or tls, got 'sctp'")


class DnsConfigTests(SynchronousTestCase):
    """``[dns] servers``: IP addresses with optional ports, bounded, errors by key."""

    def test_servers(self) -> None:
        """IPv4 and IPv6 addresses, with or without a port (53)."""
        config = parse_dns({"servers": ["192.0.2.53", "127.0.0.1:5353", "[2001:db8::53]:54",
                                        "2001:db8::1"]})  # fmt: skip
        self.assertEqual(
            config.servers,
            (("192.0.2.53", 53), ("127.0.0.1", 5353), ("2001:db8::53", 54), ("2001:db8::1", 53)),
        )
        self.assertEqual(parse_dns({}).servers, ())

    def test_bad(self) -> None:
        """A name, a bad port, too many servers, an unknown key: errors naming the key."""
        for table, message in (
            ({"servers": ["dns.example.net"]},
             "dns.servers: 'dns.example.net' is not an IP address with an optional :port"),
            ({"servers": ["127.0.0.1:0"]},
             "dns.servers: '127.0.0.1:0': the port must be 1..65535"),
            ({"servers": ["127.0.0.1:٥٣"]},
             "dns.servers: '127.0.0.1:٥٣': the port must be 1..65535"),
            ({"servers": "127.0.0.1"}, "dns.servers: must be a list of at most 8 addresses"
             " (192.0.2.53 or 127.0.0.1:5353), got '127.0.0.1'"),
            ({"servers": ["127.0.0.1"] * 9}, None),
            ({"timeout": 3}, None),
        ):  # fmt: skip
            error = self.assertRaises(ConfigError, parse_dns, table)
            if message is not None:
                self.assertEqual(str(error), message)
