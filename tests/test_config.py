"""
warden.config: TOML into frozen sections, defaults, validation errors that name
the file and the key, and command-line overrides.
"""

from __future__ import annotations

import os
import socket

import attrs
from twisted.trial.unittest import SynchronousTestCase

from warden.config import (
    RegistrarConfig,
    ServerConfig,
    SipConfig,
    StoreConfig,
    WardenConfig,
    load_config,
    load_effective_config,
    parse_config_text,
)
from warden.errors import ConfigError

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "etc", "warden.example.toml")


class DefaultsTests(SynchronousTestCase):
    """An empty configuration means every documented default."""

    def test_empty_text_is_defaults(self) -> None:
        """An empty document parses to WardenConfig()."""
        self.assertEqual(parse_config_text(""), WardenConfig())

    def test_server_defaults(self) -> None:
        """[server] defaults."""
        self.assertEqual(
            attrs.asdict(ServerConfig()),
            {"node_id": "", "data_dir": "./var", "domains": (), "realm": ""},
        )

    def test_sip_defaults(self) -> None:
        """[sip] defaults."""
        self.assertEqual(
            attrs.asdict(SipConfig()),
            {
                "interface": "",
                "port": 5060,
                "transports": ("udp", "tcp"),
                "max_message_bytes": 65535,
                "tcp_idle_timeout": 600.0,
                "tcp_message_timeout": 20.0,
                "tcp_connections_per_ip": 64,
                "t1": 0.5,
                "t2": 4.0,
                "t4": 5.0,
                "udp_receive_buffer": 8388608,
                "server_header": "Warden",
                "nat": "auto",
                "tls_port": 5061,
                "workers": 1,
                "worker_port_base": 5070,
                "worker_tls_port_base": 0,
            },
        )

    def test_registrar_defaults(self) -> None:
        """[registrar] defaults."""
        self.assertEqual(
            attrs.asdict(RegistrarConfig()),
            {
                "min_expires": 60,
                "default_expires": 3600,
                "max_expires": 7200,
                "digest_algorithms": ("MD5",),
                "nonce_lifetime": 300.0,
                "auth_fail_limit": 20,
                "auth_fail_window": 60.0,
                "auth_block_seconds": 300.0,
                "auth_fail_extension_limit": 10,
                "accept_rfc2069": False,
            },
        )

    def test_store_defaults(self) -> None:
        """[store] defaults."""
        self.assertEqual(
            attrs.asdict(StoreConfig()),
            {"url": "", "password_file": "", "pool_size": 4, "directory_cache_seconds": 5.0},
        )

    def test_resolved_defaults(self) -> None:
        """With nothing set, node_id and realm are the host name and the database is
        <data_dir>/warden.db."""
        config = WardenConfig()
        self.assertEqual(config.node_id, socket.gethostname())
        self.assertEqual(config.realm, socket.gethostname())
        self.assertEqual(config.database_path, os.path.join("./var", "warden.db"))

    def test_example_file_is_defaults(self) -> None:
        """etc/warden.example.toml parses and sets every key to its default."""
        self.assertEqual(load_config(EXAMPLE), WardenConfig())

    def test_example_file_lists_every_key(self) -> None:
        """Every key of every section appears in etc/warden.example.toml."""
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        defaults = WardenConfig()
        sections = [getattr(defaults, f.name) for f in attrs.fields(WardenConfig)]
        for section in (type(s) for s in sections if attrs.has(type(s))):
            self.assertIn(f"[{section.SECTION}]", text)
            for field in attrs.fields(section):
                self.assertIn(f"\n{field.name} = ", text)


FULL = """
[server]
node_id = "node-1"
data_dir = "/srv/warden"
domains = ["PBX.Example.com", "pbx2.example.com"]
realm = "example.com"

[sip]
interface = "192.0.2.10"
port = 5070
transports = ["tcp"]
max_message_bytes = 4096
udp_receive_buffer = 1048576
tcp_idle_timeout = 30
tcp_message_timeout = 5
tcp_connections_per_ip = 8
t1 = 0.25
t2 = 2.0
t4 = 2.5

[registrar]
min_expires = 30
default_expires = 600
max_expires = 1200
digest_algorithms = ["SHA-256"]
nonce_lifetime = 60.0
auth_fail_limit = 5
auth_fail_window = 10.0
auth_block_seconds = 3600

[store]
url = "sqlite:///var/lib/warden/pbx.db"
password_file = "/etc/warden/db-password"
pool_size = 8
directory_cache_seconds = 0
"""


class ValuesTests(SynchronousTestCase):
    """Every key can be set, and derived values follow."""

    def test_every_key(self) -> None:
        """Every key of the schema is read into its section, integers given for
        seconds become floats and domains are lower-cased."""
        config = parse_config_text(FULL, "warden.toml")
        self.assertEqual(
            config.server,
            ServerConfig(
                "node-1", "/srv/warden", ("pbx.example.com", "pbx2.example.com"), "example.com"
            ),
        )
        self.assertEqual(
            config.sip,
            SipConfig(
                "192.0.2.10",
                5070,
                ("tcp",),
                4096,
                30.0,
                0.25,
                2.0,
                2.5,
                1048576,
                tcp_message_timeout=5.0,
                tcp_connections_per_ip=8,
            ),
        )
        self.assertEqual(
            config.registrar, RegistrarConfig(30, 600, 1200, ("SHA-256",), 60.0, 5, 10.0, 3600.0)
        )
        self.assertEqual(
            config.store,
            StoreConfig("sqlite:///var/lib/warden/pbx.db", "/etc/warden/db-password", 8, 0.0),
        )
        self.assertIsInstance(config.sip.tcp_idle_timeout, float)
        self.assertEqual(config.node_id, "node-1")
        self.assertEqual(config.realm, "example.com")
        self.assertEqual(config.database_path, "/var/lib/warden/pbx.db")

    def test_realm_from_first_domain(self) -> None:
        """With no realm, the first domain is the realm."""
        config = parse_config_text('[server]\ndomains = ["a.example", "b.example"]')
        self.assertEqual(config.realm, "a.example")

    def test_database_in_data_dir(self) -> None:
        """With no store path, the database lives in data_dir."""
        config = parse_config_text('[server]\ndata_dir = "/srv/w"')
        self.assertEqual(config.database_path, "/srv/w/warden.db")

    def test_ipv6_interface_and_port_zero(self) -> None:
        """An IPv6 literal is a valid interface, and port 0 is allowed."""
        config = parse_config_text('[sip]\ninterface = "::1"\nport = 0')
        self.assertEqual((config.sip.interface, config.sip.port), ("::1", 0))

    def test_boundaries_accepted(self) -> None:
        """Values at the edges of their ranges are accepted."""
        config = parse_config_text(
            "[sip]\nport = 65535\nmax_message_bytes = 1048576\nt1 = 1.0\nt2 = 1.0\n"
            "[registrar]\nmin_expires = 1\ndefault_expires = 1\nmax_expires = 1\n"
            "auth_fail_limit = 1\n"
        )
        self.assertEqual(config.sip.t2, config.sip.t1)
        self.assertEqual(config.registrar.max_expires, 1)


class ErrorTests(SynchronousTestCase):
    """Bad configurations raise ConfigError naming the file, the key and the problem."""

    def assertBad(self, text: str, path: str, message: str) -> ConfigError:
        error = self.assertRaises(ConfigError, parse_config_text, text, "warden.toml")
        self.assertEqual(error.path, path)
        self.assertEqual(error.filename, "warden.toml")
        self.assertEqual(str(error), message)
        return error

    def test_port_not_integer(self) -> None:
        """A string port is refused, quoted as written."""
        self.assertBad(
            '[sip]\nport = "abc"',
            "sip.port",
            'warden.toml: sip.port: must be an integer 0..65535, got "abc"',
        )

    def test_bool_is_not_integer(self) -> None:
        """true is not a port number."""
        self.assertBad(
            "[sip]\nport = true",
            "sip.port",
            "warden.toml: sip.port: must be an integer 0..65535, got true",
        )

    def test_port_out_of_range(self) -> None:
        """Ports above 65535 and below 0 are refused."""
        self.assertBad(
            "[sip]\nport = 65536",
            "sip.port",
            "warden.toml: sip.port: must be an integer 0..65535, got 65536",
        )
        self.assertBad(
            "[sip]\nport = -1",
            "sip.port",
            "warden.toml: sip.port: must be an integer 0..65535, got -1",
        )

    def test_float_for_integer(self) -> None:
        """A float where an integer is expected is refused."""
        self.assertBad(
            "[registrar]\nauth_fail_limit = 2.5",
            "registrar.auth_fail_limit",
            "warden.toml: registrar.auth_fail_limit: must be an integer >= 1, got 2.5",
        )

    def test_seconds_must_be_positive(self) -> None:
        """Zero, negative and non-numeric durations are refused; so are nan and inf."""
        self.assertBad(
            "[sip]\nt1 = 0",
            "sip.t1",
            "warden.toml: sip.t1: must be a number > 0 (seconds), got 0.0",
        )
        self.assertBad(
            '[registrar]\nnonce_lifetime = "5m"',
            "registrar.nonce_lifetime",
            'warden.toml: registrar.nonce_lifetime: must be a number > 0 (seconds), got "5m"',
        )
        self.assertBad(
            "[sip]\nt4 = inf",
            "sip.t4",
            "warden.toml: sip.t4: must be a number > 0 (seconds), got inf",
        )
        self.assertBad(
            "[store]\ndirectory_cache_seconds = -1",
            "store.directory_cache_seconds",
            "warden.toml: store.directory_cache_seconds: must be a number >= 0 (seconds),"
            " got -1.0",
        )

    def test_t2_below_t1(self) -> None:
        """t2 must not be smaller than t1."""
        self.assertBad(
            "[sip]\nt1 = 2.0\nt2 = 1.0",
            "sip.t2",
            "warden.toml: sip.t2: must be >= sip.t1 (2), got 1",
        )

    def test_expires_order(self) -> None:
        """min_expires <= default_expires <= max_expires."""
        self.assertBad(
            "[registrar]\ndefault_expires = 10",
            "registrar.default_expires",
            "warden.toml: registrar.default_expires: must be between registrar.min_expires"
            " (60) and registrar.max_expires (7200), got 10",
        )
        self.assertBad(
            "[registrar]\nmin_expires = 100\nmax_expires = 50\ndefault_expires = 70",
            "registrar.max_expires",
            "warden.toml: registrar.max_expires: must be >= registrar.min_expires (100), got 50",
        )

    def test_transports(self) -> None:
        """Transports must be a non-empty list of distinct known names."""
        problem = "must be a non-empty list of distinct values from udp, tcp, tls, got"
        self.assertBad(
            '[sip]\ntransports = ["sctp"]',
            "sip.transports",
            f'warden.toml: sip.transports: {problem} ["sctp"]',
        )
        self.assertBad(
            "[sip]\ntransports = []",
            "sip.transports",
            f"warden.toml: sip.transports: {problem} []",
        )
        self.assertBad(
            '[sip]\ntransports = ["udp", "udp"]',
            "sip.transports",
            f'warden.toml: sip.transports: {problem} ["udp", "udp"]',
        )
        self.assertBad(
            '[sip]\ntransports = "udp"',
            "sip.transports",
            f'warden.toml: sip.transports: {problem} "udp"',
        )

    def test_digest_algorithms(self) -> None:
        """Digest algorithms come from MD5 and SHA-256, without repeats."""
        self.assertBad(
            '[registrar]\ndigest_algorithms = ["SHA-512"]',
            "registrar.digest_algorithms",
            "warden.toml: registrar.digest_algorithms: must be a non-empty list of distinct"
            ' values from MD5, SHA-256, got ["SHA-512"]',
        )
        self.assertBad(
            '[registrar]\ndigest_algorithms = ["MD5", "MD5"]',
            "registrar.digest_algorithms",
            "warden.toml: registrar.digest_algorithms: must be a non-empty list of distinct"
            ' values from MD5, SHA-256, got ["MD5", "MD5"]',
        )

    def test_tcp_limits(self) -> None:
        """The TCP per-IP cap is 1..65535 connections; the message deadline positive seconds."""
        self.assertBad(
            "[sip]\ntcp_connections_per_ip = 0",
            "sip.tcp_connections_per_ip",
            "warden.toml: sip.tcp_connections_per_ip: must be an integer 1..65535, got 0",
        )
        self.assertBad(
            "[sip]\ntcp_message_timeout = 0",
            "sip.tcp_message_timeout",
            "warden.toml: sip.tcp_message_timeout: must be a number > 0 (seconds), got 0.0",
        )

    def test_bad_interface(self) -> None:
        """The interface must be an IP literal, not a host name."""
        self.assertBad(
            '[sip]\ninterface = "localhost"',
            "sip.interface",
            'warden.toml: sip.interface: must be an IPv4 or IPv6 address, or "" for all,'
            ' got "localhost"',
        )

    def test_bad_nat(self) -> None:
        """[sip] nat must be auto, always or never."""
        self.assertBad(
            '[sip]\nnat = "sometimes"',
            "sip.nat",
            'warden.toml: sip.nat: must be one of auto, always, never, got "sometimes"',
        )

    def test_bad_domains(self) -> None:
        """Domains must be host names."""
        for bad in [
            '["under_score.example"]',
            '["-x.example"]',
            '["a..b"]',
            '"pbx.example"',
            "[1]",
        ]:
            self.assertRaises(ConfigError, parse_config_text, f"[server]\ndomains = {bad}")
        error = self.assertRaises(
            ConfigError, parse_config_text, '[server]\ndomains = ["a b"]', "w.toml"
        )
        self.assertEqual(error.path, "server.domains")

    def test_bad_strings(self) -> None:
        """Realm, node_id, data_dir, backend and path have their own rules."""
        self.assertBad(
            '[server]\nrealm = "a\\"b"',
            "server.realm",
            "warden.toml: server.realm: must be a string without quotes, backslashes or control"
            ' characters, got "a\\"b"',
        )
        self.assertBad(
            '[server]\nnode_id = "a b"',
            "server.node_id",
            "warden.toml: server.node_id: must be a string of at most 64 letters, digits,"
            " '.', '-' or '_', got \"a b\"",
        )
        self.assertBad(
            '[server]\ndata_dir = ""',
            "server.data_dir",
            'warden.toml: server.data_dir: must be a path, got ""',
        )
        self.assertBad(
            '[store]\nurl = "mysql://db/warden"',
            "store.url",
            'warden.toml: store.url: must start with "sqlite:" or "postgresql://" (got mysql:)',
        )
        self.assertBad(
            "[store]\nurl = 3", "store.url", "warden.toml: store.url: must be a string, got 3"
        )
        self.assertBad(
            "[store]\npool_size = 0",
            "store.pool_size",
            "warden.toml: store.pool_size: must be an integer 1..100, got 0",
        )

    def test_store_url_without_password(self) -> None:
        """A password in [store] url is refused, and the message does not echo it."""
        for url in [
            "postgresql://warden:s3cret@db/warden",
            "postgresql://warden@db/warden?password=s3cret",
        ]:
            error = self.assertRaises(
                ConfigError, parse_config_text, f'[store]\nurl = "{url}"', "warden.toml"
            )
            self.assertEqual(error.path, "store.url")
            self.assertIn("WARDEN_STORE_PASSWORD", str(error))
            self.assertNotIn("s3cret", str(error))

    def test_postgresql_url(self) -> None:
        """A PostgreSQL URL is parsed into its parts; database_path is then empty."""
        config = parse_config_text(
            '[store]\nurl = "postgresql://warden@db.example:6432/pbx?sslmode=require"'
        )
        url = config.store_url
        self.assertEqual(
            (url.dialect, url.host, url.port, url.database, url.user, url.params),
            ("postgresql", "db.example", 6432, "pbx", "warden", (("sslmode", "require"),)),
        )
        self.assertEqual(config.database_path, "")

    def test_unknown_key(self) -> None:
        """A key the section does not have is refused, listing the known ones."""
        error = self.assertRaises(
            ConfigError, parse_config_text, "[sip]\nprot = 5060", "warden.toml"
        )
        self.assertEqual(error.path, "sip.prot")
        self.assertTrue(
            str(error).startswith("warden.toml: sip.prot: unknown key (known: interface, port,")
        )

    def test_unknown_subtable(self) -> None:
        """A table nested in a section is an unknown key."""
        error = self.assertRaises(ConfigError, parse_config_text, "[sip.tls]\nport = 5061")
        self.assertEqual(error.path, "sip.tls")

    def test_unknown_section(self) -> None:
        """A section Warden does not have is refused."""
        self.assertBad(
            "[paging]\nenabled = true",
            "paging",
            "warden.toml: paging: unknown section (known: server, store, plugins,"
            " security, media, state, cluster, sip, tls, registrar, calls, dialplan, admin,"
            " backup, ringgroups, pickupgroups, trunks, routes, dns, emergency, stirshaken,"
            " recording, voicemail, ivr)",
        )

    def test_section_not_table(self) -> None:
        """A top-level key that should be a section must be a table."""
        self.assertBad("sip = 5", "sip", "warden.toml: sip: must be a table ([sip]), got 5")

    def test_bad_toml(self) -> None:
        """Invalid TOML is reported with the file name and tomllib's line and column."""
        error = self.assertRaises(
            ConfigError, parse_config_text, "[sip]\nport = = 1\n", "warden.toml"
        )
        self.assertTrue(str(error).startswith("warden.toml: invalid TOML: "))
        self.assertIn("line 2, column", str(error))

    def test_missing_file(self) -> None:
        """A file that does not exist is a ConfigError naming it."""
        path = self.mktemp()
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(str(error), f"{path}: cannot read the file: No such file or directory")

    def test_file_not_utf8(self) -> None:
        """A file that is not UTF-8 is a ConfigError naming it."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b'[server]\nrealm = "\xff"\n')
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(str(error), f"{path}: not UTF-8 text")

    def test_file_errors_name_file(self) -> None:
        """Errors from load_config carry the path of the file."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("[sip]\nport = 99999\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(str(error), f"{path}: sip.port: must be an integer 0..65535, got 99999")

    def test_sections_validate_when_built_directly(self) -> None:
        """Section classes check their values when built in code, too."""
        error = self.assertRaises(ConfigError, SipConfig, port=70000)
        self.assertEqual(str(error), "sip.port: must be an integer 0..65535, got 70000")


class EffectiveConfigTests(SynchronousTestCase):
    """load_effective_config: a file or the defaults, then command-line overrides."""

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_no_file_no_overrides(self) -> None:
        """Without a file or overrides the defaults apply."""
        self.assertEqual(load_effective_config(None), WardenConfig())

    def test_file_only(self) -> None:
        """Without overrides the file's values apply."""
        path = self.write("[sip]\nport = 5070\n")
        self.assertEqual(load_effective_config(path).sip.port, 5070)

    def test_overrides(self) -> None:
        """data_dir, sip_port and sip_interface replace the file's values; domains are
        appended to the file's list, and the database follows data_dir."""
        path = self.write(
            '[server]\ndata_dir = "/a"\ndomains = ["one.example"]\n'
            '[sip]\nport = 5070\ninterface = "192.0.2.1"\n'
        )
        config = load_effective_config(
            path,
            data_dir="/b",
            sip_port=5080,
            sip_interface="::",
            domains=["two.example", "ONE.example"],
        )
        self.assertEqual(config.server.data_dir, "/b")
        self.assertEqual(config.server.domains, ("one.example", "two.example"))
        self.assertEqual((config.sip.port, config.sip.interface), (5080, "::"))
        self.assertEqual(config.database_path, "/b/warden.db")
        self.assertEqual(config.realm, "one.example")

    def test_domain_override_sets_realm(self) -> None:
        """With no realm and no domains in the file, the first --domain is the realm."""
        config = load_effective_config(None, domains=["pbx.example"])
        self.assertEqual(config.realm, "pbx.example")

    def test_store_path_kept(self) -> None:
        """An explicit [store] url is not moved by --data-dir."""
        path = self.write('[store]\nurl = "sqlite:///db/w.db"\n')
        self.assertEqual(load_effective_config(path, data_dir="/x").database_path, "/db/w.db")

    def test_bad_override(self) -> None:
        """An invalid override is a ConfigError from the command line."""
        error = self.assertRaises(ConfigError, load_effective_config, None, sip_port=70000)
        self.assertEqual(
            str(error), "command line: sip.port: must be an integer 0..65535, got 70000"
        )
        error = self.assertRaises(ConfigError, load_effective_config, None, domains=["bad_name"])
        self.assertEqual(error.path, "server.domains")
        error = self.assertRaises(ConfigError, load_effective_config, None, sip_interface="eth0")
        self.assertEqual(error.path, "sip.interface")

    def test_bad_file(self) -> None:
        """A bad file is reported before any override is considered."""
        path = self.write("[sip]\nport = true\n")
        error = self.assertRaises(ConfigError, load_effective_config, path, sip_port=5060)
        self.assertEqual(error.filename, path)
