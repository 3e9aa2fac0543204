"""
Warden's configuration: TOML (stdlib ``tomllib``) into frozen ``attrs`` sections.

Every key is optional; ``etc/warden.example.toml`` lists them all with their
defaults. Each section class validates its own values, so a section built by
hand (in a test) is checked exactly like one read from a file. Unknown sections
and keys, values of the wrong type (a boolean is not an integer) and values out
of range raise L{ConfigError} naming the file and the dotted key::

    warden.toml: sip.port: must be an integer 0..65535, got "abc"

Command-line options override the file through L{load_effective_config}.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import attrs

from warden.errors import ConfigError, ConfigFileError
from warden.rtp.ng import parse_address
from warden.rtp.policy import DESTINATION_MODES, LATCH_MODES, SRTP_MODES
from warden.rtp.ports import split_ports
from warden.sip.addressing import NAT_MODES
from warden.sip.dialplan import Rule, RuleError
from warden.sip.transport import DEFAULT_TCP_CONNECTIONS_PER_IP, DEFAULT_TCP_MESSAGE_TIMEOUT
from warden.store.credentials import ALGORITHMS
from warden.store.state_url import StateURLError, parse_state_url
from warden.store.url import StoreURL, parse_store_url
from warden.tls import (
    FIPS_CIPHERS,
    MOZILLA_INTERMEDIATE,
    TLS_VERSIONS,
    check_ciphers,
    fips_cipher_problem,
)

if TYPE_CHECKING:
    from warden.interfaces import IWardenPlugin

__all__ = [
    "RegistrarConfig",
    "SecurityConfig",
    "ServerConfig",
    "SipConfig",
    "StoreConfig",
    "TlsConfig",
    "WardenConfig",
    "load_config",
    "load_effective_config",
    "parse_config_text",
    "parse_section",
]

TRANSPORTS = ("udp", "tcp", "tls")
#: Listened on unless ``[sip] transports`` says otherwise (TLS is opt-in: ADR 0018).
DEFAULT_TRANSPORTS = ("udp", "tcp")
BACKUP_TYPES = ("full", "database", "config", "files")
COMMAND_LINE = "command line"

_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NODE_ID = re.compile(r"^[A-Za-z0-9._-]{0,64}$")
_REALM_FORBIDDEN = re.compile(r'["\\\x00-\x1f\x7f]')
_HEADER_TEXT = re.compile(r"[\x20-\x7e]*\Z")


def _show(value: object) -> str:
    """Render a value the way it was (probably) written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "a table"
    return str(value)


def _fail(instance: Any, name: str, problem: str) -> ConfigError:
    return ConfigError(f"{instance.SECTION}.{name}", problem)


def _rule(test: Callable[[Any], bool], expected: str) -> _Validator:
    """An attrs validator: ``test(value)`` must hold, else "must be <expected>"."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not test(value):
            raise _fail(instance, attribute.name, f"must be {expected}, got {_show(value)}")

    return validate


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(low: int, high: int | None = None) -> _Validator:
    if high is None:
        return _rule(lambda v: _is_int(v) and v >= low, f"an integer >= {low}")
    return _rule(lambda v: _is_int(v) and low <= v <= high, f"an integer {low}..{high}")


def _seconds(minimum: float = 0.0, *, allow_zero: bool = False) -> _Validator:
    def test(value: Any) -> bool:
        if not isinstance(value, float) or not math.isfinite(value):
            return False
        return value >= minimum if allow_zero else value > minimum

    return _rule(test, f"a number {'>=' if allow_zero else '>'} {minimum:g} (seconds)")


def _to_float(value: Any) -> Any:
    """Accept integers where seconds are expected (``t1 = 1``); leave the rest."""
    return float(value) if _is_int(value) else value


def usable_cores() -> int:
    """
    The cores this process may run on: its CPU affinity (a container's or a
    service's CPU set, ``taskset``), else every core the machine has.
    """
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


#: The most ``[sip] workers``; ``"auto"`` gives one per usable core up to it.
MAX_WORKERS = 64


def _auto_count(value: Any, most: int) -> Any:
    """
    A process count where ``"auto"`` is one per usable core, at most
    ``most``; the rest is left to the validator.
    """
    return min(usable_cores(), most) if value == "auto" else value


def _to_workers(value: Any) -> Any:
    """``[sip] workers``: ``"auto"`` is one worker per core."""
    return _auto_count(value, MAX_WORKERS)


def _to_tuple(value: Any) -> Any:
    """TOML arrays arrive as lists; keep them as tuples so sections stay hashable."""
    return tuple(value) if isinstance(value, list) else value


def _to_domains(value: Any) -> Any:
    """Lower-case host names and drop repeats (DNS names are case-insensitive)."""
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(dict.fromkeys(v.lower() for v in value))
    return value


def _is_hostname(value: object) -> bool:
    if not isinstance(value, str) or not 0 < len(value) <= 253:
        return False
    return all(_HOST_LABEL.match(label) for label in value.split("."))


def _is_ip_or_empty(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if value == "":
        return True
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _choices(allowed: Sequence[str]) -> _Validator:
    """A non-empty list of distinct values taken from ``allowed``."""
    expected = f"a non-empty list of distinct values from {', '.join(allowed)}"
    return _rule(
        lambda v: (
            isinstance(v, tuple)
            and len(v) > 0
            and len(set(v)) == len(v)
            and all(isinstance(x, str) and x in allowed for x in v)
        ),
        expected,
    )


def _is_string(value: object) -> bool:
    return isinstance(value, str)


@attrs.frozen
class ServerConfig:
    """
    ``[server]``: who this node is and where it keeps its files.

    Attributes:
        node_id: this node's name in bindings; "" means the host name.
        data_dir: created at start; relative to the working directory.
        domains: extra local domain names (lower-cased, repeats dropped).
        realm: the digest realm; "" means the first domain, else the host name.
    """

    SECTION: ClassVar[str] = "server"

    node_id: str = attrs.field(
        default="",
        validator=_rule(
            lambda v: isinstance(v, str) and bool(_NODE_ID.match(v)),
            "a string of at most 64 letters, digits, '.', '-' or '_'",
        ),
    )
    data_dir: str = attrs.field(
        default="./var", validator=_rule(lambda v: isinstance(v, str) and v != "", "a path")
    )
    domains: tuple[str, ...] = attrs.field(
        default=(),
        converter=_to_domains,
        validator=_rule(
            lambda v: isinstance(v, tuple) and all(_is_hostname(d) for d in v),
            'a list of host names (like "pbx.example.com")',
        ),
    )
    realm: str = attrs.field(
        default="",
        validator=_rule(
            lambda v: isinstance(v, str) and not _REALM_FORBIDDEN.search(v),
            "a string without quotes, backslashes or control characters",
        ),
    )


@attrs.frozen
class SipConfig:
    """
    ``[sip]``: listeners and RFC 3261 §17 timer values.

    Attributes:
        interface: the address to listen on; "" means every interface.
        port: the UDP and TCP port.
        tls_port: the SIP-over-TLS port (RFC 3261 §26.2: 5061), used when
            ``transports`` has ``tls``.
        transports: the transports to listen on, from ``udp``, ``tcp`` and
            ``tls`` (``[tls]`` configures the last).
        max_message_bytes: the largest SIP message accepted.
        udp_receive_buffer: bytes of kernel receive buffer asked for the UDP
            socket, so that a burst is queued rather than dropped.
        tcp_idle_timeout: seconds without a whole message or keep-alive before a
            TCP connection is closed.
        tcp_message_timeout: seconds a TCP message may take from its first byte
            to its last before the connection is closed (slow senders).
        tcp_connections_per_ip: TCP connections one source IP may hold open;
            more are closed at once.
        t1, t2, t4: RFC 3261 timers, in seconds (``t2 >= t1``).
        server_header: the ``Server`` header of responses (RFC 3261 §20.35);
            "" sends none. No version by default, so a scan learns less.
        nat: how UDP phones are reached: "auto" sends to the Contact unless
            a NAT is detected, "always" to the REGISTER's source, "never" to
            the Contact (``warden.sip.addressing.behind_nat``).
        workers: SIP worker processes sharing ``port`` (``"auto"``: one per
            core); more than one needs ``[state] url`` (L{warden.workers}).
        worker_port_base: worker I also listens on ``worker_port_base + I``
            (UDP and TCP), the port in the Via, Contact and Record-Route of
            the requests it sends, so that a dialog's requests reach it.
        worker_tls_port_base: with "tls" among the transports, worker I also
            listens for TLS on ``worker_tls_port_base + I``, the port in what
            it sends over TLS; 0 (the default): right after the workers'
            own ports (``worker_port_base + workers``).
    """

    SECTION: ClassVar[str] = "sip"

    interface: str = attrs.field(
        default="", validator=_rule(_is_ip_or_empty, 'an IPv4 or IPv6 address, or "" for all')
    )
    port: int = attrs.field(default=5060, validator=_int_in(0, 65535))
    transports: tuple[str, ...] = attrs.field(
        default=DEFAULT_TRANSPORTS, converter=_to_tuple, validator=_choices(TRANSPORTS)
    )
    max_message_bytes: int = attrs.field(default=65535, validator=_int_in(1024, 1048576))
    tcp_idle_timeout: float = attrs.field(default=600.0, converter=_to_float, validator=_seconds())
    t1: float = attrs.field(default=0.5, converter=_to_float, validator=_seconds())
    t2: float = attrs.field(default=4.0, converter=_to_float, validator=_seconds())
    t4: float = attrs.field(default=5.0, converter=_to_float, validator=_seconds())
    udp_receive_buffer: int = attrs.field(
        default=8 * 1024 * 1024, validator=_int_in(65536, 256 * 1024 * 1024)
    )
    server_header: str = attrs.field(
        default="Warden",
        validator=_rule(
            lambda v: isinstance(v, str) and len(v) <= 100 and bool(_HEADER_TEXT.match(v)),
            "at most 100 printable ASCII characters",
        ),
    )
    tcp_message_timeout: float = attrs.field(
        default=DEFAULT_TCP_MESSAGE_TIMEOUT, converter=_to_float, validator=_seconds()
    )
    tcp_connections_per_ip: int = attrs.field(
        default=DEFAULT_TCP_CONNECTIONS_PER_IP, validator=_int_in(1, 65535)
    )

    nat: str = attrs.field(
        default="auto",
        validator=_rule(lambda v: v in NAT_MODES, f"one of {', '.join(NAT_MODES)}"),
    )
    tls_port: int = attrs.field(default=5061, validator=_int_in(0, 65535))
    workers: int = attrs.field(default=1, converter=_to_workers, validator=_int_in(1, MAX_WORKERS))
    worker_port_base: int = attrs.field(default=5070, validator=_int_in(1, 65535))
    worker_tls_port_base: int = attrs.field(default=0, validator=_int_in(0, 65535))

    def __attrs_post_init__(self) -> None:
        if self.workers > 1 and self.worker_port_base + self.workers - 1 > 65535:
            raise _fail(self, "worker_port_base", "leaves no room for a port per worker")
        if self.workers > 1 and self.worker_tls_base() + self.workers - 1 > 65535:
            key = "worker_tls_port_base" if self.worker_tls_port_base else "worker_port_base"
            raise _fail(self, key, "leaves no room for a TLS port per worker")
        if self.t2 < self.t1:
            raise _fail(self, "t2", f"must be >= sip.t1 ({self.t1:g}), got {self.t2:g}")

    def worker_tls_base(self) -> int:
        """The TLS port of worker 0 (L{worker_tls_port_base}, or after the workers' own ports)."""
        return self.worker_tls_port_base or self.worker_port_base + self.workers


def _is_version(value: object) -> bool:
    return value in TLS_VERSIONS


def _is_cipher_string(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        check_ciphers(value)
    except ValueError:
        return False
    return True


@attrs.frozen
class TlsConfig:
    """
    ``[tls]``: SIP over TLS (RFC 3261 §26, RFC 5630), used when ``[sip]
    transports`` has ``tls`` (L{warden.sip.tls}).

    Attributes:
        certificate, private_key: PEM files (the certificate file may hold the
            chain); both "" means a self-signed pair generated in the data
            directory on first start (its fingerprint is logged).
        ca: a PEM bundle of certificate authorities; when set, TLS peers must
            present a certificate one of them signed (mutual TLS); "" asks for none.
        min_version: the oldest TLS version accepted, "1.2" or "1.3".
        ciphers: the OpenSSL cipher string for TLS 1.2 (Mozilla "intermediate").
        handshake_timeout: seconds a new connection may take to complete its
            TLS handshake before it is closed.
    """

    SECTION: ClassVar[str] = "tls"

    certificate: str = attrs.field(default="", validator=_rule(_is_string, "a string"))
    private_key: str = attrs.field(default="", validator=_rule(_is_string, "a string"))
    ca: str = attrs.field(default="", validator=_rule(_is_string, "a string"))
    min_version: str = attrs.field(
        default="1.2", validator=_rule(_is_version, f"one of {', '.join(TLS_VERSIONS)}")
    )
    ciphers: str = attrs.field(
        default=MOZILLA_INTERMEDIATE,
        validator=_rule(_is_cipher_string, "an OpenSSL cipher string selecting a cipher"),
    )
    handshake_timeout: float = attrs.field(default=10.0, converter=_to_float, validator=_seconds())

    def __attrs_post_init__(self) -> None:
        if bool(self.certificate) != bool(self.private_key):
            raise _fail(self, "private_key", "certificate and private_key go together")


@attrs.frozen
class RegistrarConfig:
    """
    ``[registrar]``: binding lifetimes, digest authentication and brute-force limits.

    Attributes:
        min_expires, default_expires, max_expires: binding lifetimes in seconds
            (RFC 3261 §10.3), ``min <= default <= max``.
        digest_algorithms: offered in this order, from ``MD5`` and ``SHA-256``;
            MD5 only by default, because common phones (libre 1.0 in baresip,
            several desk phones) give up on a SHA-256 challenge even when an MD5
            one is offered beside it.
        nonce_lifetime: seconds a nonce stays valid.
        accept_rfc2069: accept digest responses without ``qop`` (RFC 2069, no
            client nonce or nonce-count); refused by default.
        auth_fail_limit: failed authentications from one IP within
            ``auth_fail_window`` seconds that block it for ``auth_block_seconds``.
        auth_fail_extension_limit: the same for one extension at one IP, which
            then is blocked alone (a phone with a wrong password behind a NAT).
    """

    SECTION: ClassVar[str] = "registrar"

    min_expires: int = attrs.field(default=60, validator=_int_in(1))
    default_expires: int = attrs.field(default=3600, validator=_int_in(1))
    max_expires: int = attrs.field(default=7200, validator=_int_in(1))
    digest_algorithms: tuple[str, ...] = attrs.field(
        default=("MD5",), converter=_to_tuple, validator=_choices(ALGORITHMS)
    )
    nonce_lifetime: float = attrs.field(default=300.0, converter=_to_float, validator=_seconds())
    auth_fail_limit: int = attrs.field(default=20, validator=_int_in(1))
    auth_fail_window: float = attrs.field(default=60.0, converter=_to_float, validator=_seconds())
    auth_block_seconds: float = attrs.field(
        default=300.0, converter=_to_float, validator=_seconds()
    )
    auth_fail_extension_limit: int = attrs.field(default=10, validator=_int_in(1))
    accept_rfc2069: bool = attrs.field(
        default=False, validator=_rule(lambda v: isinstance(v, bool), "true or false")
    )

    def __attrs_post_init__(self) -> None:
        if self.max_expires < self.min_expires:
            raise _fail(
                self,
                "max_expires",
                f"must be >= registrar.min_expires ({self.min_expires}), got {self.max_expires}",
            )
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise _fail(
                self,
                "default_expires",
                f"must be between registrar.min_expires ({self.min_expires}) and"
                f" registrar.max_expires ({self.max_expires}), got {self.default_expires}",
            )


@attrs.frozen
class StoreConfig:
    """
    ``[store]``: where durable data lives.

    Attributes:
        url: ``sqlite:///path/warden.db`` or ``postgresql://user@host:port/dbname``
            (see L{warden.store.url}); "" means SQLite in ``<data_dir>/warden.db``.
            Never holds a password.
        password_file: a file whose first line is the PostgreSQL password, read at
            start-up; ``$WARDEN_STORE_PASSWORD`` takes precedence. "" = none.
        pool_size: PostgreSQL connections per process (1..100).
        directory_cache_seconds: seconds between checks for extension changes made
            by other processes (0: never reload).
    """

    SECTION: ClassVar[str] = "store"

    url: str = attrs.field(default="")
    password_file: str = attrs.field(default="", validator=_rule(_is_string, "a string"))
    pool_size: int = attrs.field(default=4, validator=_int_in(1, 100))
    directory_cache_seconds: float = attrs.field(
        default=5.0, converter=_to_float, validator=_seconds(allow_zero=True)
    )

    @url.validator
    def _check_url(self, attribute: attrs.Attribute[str], value: object) -> None:
        if not isinstance(value, str):
            raise _fail(self, attribute.name, f"must be a string, got {_show(value)}")
        if value:
            try:
                parse_store_url(value)
            except ValueError as e:
                raise _fail(self, attribute.name, str(e)) from None


@attrs.frozen
class CallsConfig:
    """
    ``[calls]``: the B2BUA's call handling.

    Attributes:
        ring_timeout: seconds a call rings before the caller gets 480.
        max_calls_per_extension: concurrent calls an extension may take part in
            (486 Busy Here beyond it); 0 means no limit.
        qualify_interval: seconds between OPTIONS to the bindings of extensions
            with qualify on.
    """

    SECTION: ClassVar[str] = "calls"

    ring_timeout: float = attrs.field(default=30.0, converter=_to_float, validator=_seconds())
    max_calls_per_extension: int = attrs.field(default=0, validator=_int_in(0))
    qualify_interval: float = attrs.field(default=30.0, converter=_to_float, validator=_seconds())


#: Values of ``[media] engine``.
MEDIA_ENGINES = ("builtin", "rtpengine")
#: The most ``[media] relay_processes``; ``"auto"`` gives one per core up to it.
MAX_RELAY_PROCESSES = 16
AUTO_RELAY_PROCESSES = 4


def _to_relay_processes(value: Any) -> Any:
    """``[media] relay_processes``: ``"auto"`` is one per core, at most 4."""
    return _auto_count(value, AUTO_RELAY_PROCESSES)


def _is_ng_address(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_address(value)
    except ValueError:
        return False
    return True


@attrs.frozen
class MediaConfig:
    """
    ``[media]``: the built-in RTP relay.

    Attributes:
        address: the IP address the relay binds and advertises in SDP; "" means
            the SIP interface, or the address that reaches each phone.
        port_min, port_max: the UDP port range (RTP on even ports, RTCP + 1).
        timeout: seconds without RTP (not on hold) before a call is hung up.
        latch: which source addresses a phone's media may come from:
            "signalling" (its SIP source or its SDP address) or "any" (ADR 0013).
        latch_packets: consecutive packets of one RTP stream a new source must
            send before the relay follows it.
        destinations: which SDP addresses the relay sends to: "same-class"
            (public ones; loopback, link-local or private ones only for a phone
            signalling from the same class) or "any".
        srtp: "optional" (SRTP with SDES keys for phones on TLS that ask for it,
            plain RTP for the others, bridged) or "required" (plain RTP is
            refused with 488; ADR 0019).
        engine: what relays the media: "builtin" (Warden's own relay, the keys
            above) or "rtpengine" (ADR 0025; its ports and timeouts are
            rtpengine's own configuration, ``timeout`` still applies).
        rtpengine_ng: rtpengine's ng control address, ``host:port`` (an IP
            address; ``[v6]:port`` for IPv6).
        relay_process: run the built-in relay in a media process of its own,
            started and restarted by Warden (ADR 0033); default true, false
            relays in the SIP process (one process: tiny or embedded installs).
            Only the built-in relay has it: ignored with rtpengine.
        relay_processes: how many media processes (ADR 0033, amendment of 7
            December): each owns a slice of ``port_min``..``port_max`` and
            takes new calls when it holds the fewest; ``"auto"`` is one per
            core, at most 4. Default 1. Ignored without ``relay_process``.
        hold_music: what a phone put on hold hears (ADR 0026): "default" (the
            shipped music), the path of an 8 kHz mono 16-bit WAV file, or ""
            (nothing); rtpengine reads the file itself.
    """

    SECTION: ClassVar[str] = "media"

    address: str = attrs.field(
        default="", validator=_rule(_is_ip_or_empty, 'an IPv4 or IPv6 address, or ""')
    )
    port_min: int = attrs.field(default=10000, validator=_int_in(1024, 65534))
    port_max: int = attrs.field(default=20000, validator=_int_in(1025, 65535))
    timeout: float = attrs.field(default=60.0, converter=_to_float, validator=_seconds())
    latch: str = attrs.field(
        default="signalling",
        validator=_rule(lambda v: v in LATCH_MODES, " or ".join(map(json.dumps, LATCH_MODES))),
    )
    latch_packets: int = attrs.field(default=3, validator=_int_in(1, 50))
    destinations: str = attrs.field(
        default="same-class",
        validator=_rule(
            lambda v: v in DESTINATION_MODES, " or ".join(map(json.dumps, DESTINATION_MODES))
        ),
    )
    srtp: str = attrs.field(
        default="optional",
        validator=_rule(lambda v: v in SRTP_MODES, " or ".join(map(json.dumps, SRTP_MODES))),
    )
    engine: str = attrs.field(
        default="builtin",
        validator=_rule(lambda v: v in MEDIA_ENGINES, " or ".join(map(json.dumps, MEDIA_ENGINES))),
    )
    rtpengine_ng: str = attrs.field(
        default="127.0.0.1:2223",
        validator=_rule(_is_ng_address, 'an IP address and port, "127.0.0.1:2223"'),
    )
    hold_music: str = attrs.field(
        default="default",
        validator=_rule(
            lambda v: isinstance(v, str) and len(v) <= 4096 and "\0" not in v,
            'a WAV file path, "default" or ""',
        ),
    )
    relay_process: bool = attrs.field(
        default=True, validator=_rule(lambda v: isinstance(v, bool), "true or false")
    )
    relay_processes: int = attrs.field(
        default=1,
        converter=_to_relay_processes,
        validator=_rule(
            lambda v: _is_int(v) and 1 <= v <= MAX_RELAY_PROCESSES,
            f'an integer 1..{MAX_RELAY_PROCESSES} or "auto"',
        ),
    )

    def __attrs_post_init__(self) -> None:
        if self.port_max - self.port_min < 3:
            raise _fail(self, "port_max", "must be at least media.port_min + 3")
        if self.relay_process:
            try:
                split_ports(self.port_min, self.port_max, self.relay_processes)
            except ValueError:
                why = "needs 4 ports per process in media.port_min..port_max"
                raise _fail(self, "relay_processes", why) from None
        if self.engine == "rtpengine" and self.srtp == "required":
            raise _fail(self, "srtp", '"required" needs engine = "builtin" (SRTP, ADR 0025)')


def _to_rules(value: Any) -> Any:
    """``[[dialplan.rules]]`` tables into L{Rule}s; errors name the rule's index."""
    if not isinstance(value, list | tuple):
        return value
    rules = []
    for index, table in enumerate(value):
        if isinstance(table, Rule):
            rules.append(table)
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"dialplan.rules[{index}]", "must be a table ([[dialplan.rules]])")
        try:
            rules.append(Rule.from_table(table))
        except RuleError as e:
            raise ConfigError(f"dialplan.rules[{index}].{e.key}", e.problem) from None
    return tuple(rules)


@attrs.frozen
class DialplanConfig:
    """
    ``[dialplan]``: what dialled numbers mean (L{warden.sip.dialplan}).

    Attributes:
        rules: ``[[dialplan.rules]]`` tables, tried in order; a number no rule
            matches is dialled as an extension.
    """

    SECTION: ClassVar[str] = "dialplan"

    rules: tuple[Rule, ...] = attrs.field(
        default=(),
        converter=_to_rules,
        validator=_rule(lambda v: isinstance(v, tuple), "a list of tables ([[dialplan.rules]])"),
    )


def _check_state_url(instance: Any, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise _fail(instance, attribute.name, f"must be a string, got {_show(value)}")
    if value:
        try:
            parse_state_url(value)
        except StateURLError as e:
            raise _fail(instance, attribute.name, str(e)) from None


@attrs.frozen
class StateConfig:
    """
    ``[state]``: shared, short-lived state (bindings, live calls), see
    L{warden.store.redis}.

    Attributes:
        url: ``redis://host:port/db`` or ``redis+sentinel://host:port,host:port/master/db``;
            "" keeps the state in this process. The password, if any, comes from
            ``$WARDEN_STATE_PASSWORD``, never from the URL.
        timeout: seconds a Redis command may take; a request that needed it is
            then answered 503 with Retry-After.
        heartbeat_interval: seconds between this node's heartbeats; a node whose
            heartbeat is three intervals old counts as dead.
    """

    SECTION: ClassVar[str] = "state"

    url: str = attrs.field(default="", validator=_check_state_url)
    timeout: float = attrs.field(default=1.0, converter=_to_float, validator=_seconds())
    heartbeat_interval: float = attrs.field(
        default=5.0, converter=_to_float, validator=_seconds(0.1, allow_zero=True)
    )


_NODE_ID_RULE = "a string of at most 64 letters, digits, '.', '-' or '_'"


@attrs.frozen
class ClusterConfig:
    """
    ``[cluster]``: the nodes that serve one PBX together.

    Attributes:
        name: the cluster's name; its keys in Redis start with ``warden:<name>:``.
        node_id: this node's name in bindings, calls and records; "" means
            ``server.node_id``, else the host name. Each node needs its own.
        address: the IP address other nodes reach this node's SIP port at, to
            route calls through it to phones whose connection (TCP) or NAT
            binding it holds; "" means ``sip.interface``.
        path_mtu: the MTU of the network between nodes in bytes, 0 for unknown:
            requests to another node within 200 bytes of it (over 1300 bytes
            when unknown) go over TCP (RFC 3261 §18.1.1).
        dialog_token_lifetime: seconds the Record-Route token of a call routed
            through the node holding the phone's flow stays valid: the longest
            such call whose in-dialog requests (BYE, re-INVITE) still pass.
    """

    SECTION: ClassVar[str] = "cluster"

    name: str = attrs.field(
        default="default",
        validator=_rule(
            lambda v: isinstance(v, str) and v != "" and bool(_NODE_ID.match(v)),
            "a non-empty string of at most 64 letters, digits, '.', '-' or '_'",
        ),
    )
    node_id: str = attrs.field(
        default="",
        validator=_rule(lambda v: isinstance(v, str) and bool(_NODE_ID.match(v)), _NODE_ID_RULE),
    )
    address: str = attrs.field(
        default="",
        validator=_rule(_is_ip_or_empty, 'an IPv4 or IPv6 address, or "" for [sip] interface'),
    )
    dialog_token_lifetime: float = attrs.field(
        default=86400.0, converter=_to_float, validator=_seconds(60.0, allow_zero=True)
    )
    path_mtu: int = attrs.field(
        default=0,
        validator=_rule(
            lambda v: _is_int(v) and (v == 0 or 576 <= v <= 65535), "0 (unknown) or 576..65535"
        ),
    )


@attrs.frozen
class BackupConfig:
    """
    ``[backup]``: scheduled backups made by the running PBX (see
    L{warden.backup.schedule}).

    Attributes:
        interval: seconds between backups; 0 means no scheduled backups.
        type: what each backup holds: ``full``, ``database``, ``config`` or ``files``.
        directory: where backups go; "" means ``<data_dir>/backups``.
        keep_count: newest backups kept (0: no limit).
        keep_days: backups older than this many days are deleted (0: no limit).
        file_dirs: voicemail and recording directories, relative to data_dir.
        key_file: a 256-bit key file; when set, backups are encrypted archives.
        include_keys: back up private keys named by the configuration even when
            backups are not encrypted.
        signing_key_file: the key unencrypted backups' manifests are signed
            with; "" means ``<data_dir>/backup-signing.key``, created by the
            first backup (see L{warden.backup.signing}).
    """

    SECTION: ClassVar[str] = "backup"

    interval: float = attrs.field(
        default=0.0, converter=_to_float, validator=_seconds(allow_zero=True)
    )
    type: str = attrs.field(
        default="full",
        validator=_rule(lambda v: v in BACKUP_TYPES, f"one of {', '.join(BACKUP_TYPES)}"),
    )
    directory: str = attrs.field(default="", validator=_rule(_is_string, "a string"))
    keep_count: int = attrs.field(default=7, validator=_int_in(0))
    keep_days: float = attrs.field(
        default=0.0, converter=_to_float, validator=_seconds(allow_zero=True)
    )
    file_dirs: tuple[str, ...] = attrs.field(
        default=("voicemail", "recordings"),
        converter=_to_tuple,
        validator=_rule(
            lambda v: isinstance(v, tuple) and all(isinstance(d, str) and d for d in v),
            "a list of directory paths",
        ),
    )
    key_file: str = attrs.field(default="", validator=_rule(_is_string, "a string"))
    include_keys: bool = attrs.field(
        default=False, validator=_rule(lambda v: isinstance(v, bool), "true or false")
    )
    signing_key_file: str = attrs.field(default="", validator=_rule(_is_string, "a string"))


_ENDPOINT = re.compile(r"^(tcp6?:(port=)?[0-9]{1,5}(:.*)?|unix:.+)$")


def _is_endpoint(value: object) -> bool:
    return isinstance(value, str) and bool(_ENDPOINT.match(value))


def _is_endpoint_or_empty(value: object) -> bool:
    return value == "" or _is_endpoint(value)


@attrs.frozen
class AdminConfig:
    """
    ``[admin]``: the HTTPS admin API, health and metrics (L{warden.admin}).

    Attributes:
        enabled: serve the admin API.
        listen: a Twisted endpoint string (``tcp:8443:interface=127.0.0.1``);
            Warden serves HTTPS (TLS 1.2+) on it.
        certificate, private_key: PEM files; both "" means a self-signed pair
            generated in the data directory on first start.
        metrics_listen: an endpoint for plain-HTTP ``/metrics``, ``/healthz`` and
            ``/readyz`` for scrapers; "" means none.
        require_mfa: every account must enrol TOTP before using the API.
        session_seconds: lifetime of a login session.
        login_fail_limit: failed logins (per account, per address) before back-off.
        login_backoff_seconds, login_backoff_max_seconds: the first and longest back-off.
        login_concurrency: password checks (scrypt) running at once; further
            logins are refused with 503 and Retry-After.
        token_days: how long a new API token lasts (0: for ever).
        drain_timeout: seconds a drain (or SIGTERM) waits for calls before hanging up.
    """

    SECTION: ClassVar[str] = "admin"

    enabled: bool = attrs.field(
        default=True, validator=_rule(lambda v: isinstance(v, bool), "true or false")
    )
    listen: str = attrs.field(
        default="tcp:8443:interface=127.0.0.1",
        validator=_rule(_is_endpoint, 'an endpoint string like "tcp:8443:interface=127.0.0.1"'),
    )
    certificate: str = attrs.field(default="", validator=_rule(_is_string, "a string"))
    private_key: str = attrs.field(default="", validator=_rule(_is_string, "a string"))
    metrics_listen: str = attrs.field(
        default="",
        validator=_rule(_is_endpoint_or_empty, 'an endpoint string like "tcp:9090", or ""'),
    )
    require_mfa: bool = attrs.field(
        default=False, validator=_rule(lambda v: isinstance(v, bool), "true or false")
    )
    session_seconds: float = attrs.field(
        default=900.0, converter=_to_float, validator=_seconds(minimum=10.0, allow_zero=True)
    )
    login_fail_limit: int = attrs.field(default=5, validator=_int_in(1, 1000))
    login_backoff_seconds: float = attrs.field(
        default=1.0, converter=_to_float, validator=_seconds()
    )
    login_backoff_max_seconds: float = attrs.field(
        default=900.0, converter=_to_float, validator=_seconds()
    )
    login_concurrency: int = attrs.field(default=4, validator=_int_in(1, 64))
    token_days: int = attrs.field(default=90, validator=_int_in(0, 3650))
    drain_timeout: float = attrs.field(
        default=60.0, converter=_to_float, validator=_seconds(allow_zero=True)
    )

    @property
    def token_seconds(self) -> float | None:
        """How long a new API token lasts in seconds; None for ever."""
        return self.token_days * 86400.0 if self.token_days else None

    def __attrs_post_init__(self) -> None:
        if bool(self.certificate) != bool(self.private_key):
            raise _fail(self, "private_key", "certificate and private_key go together")


@attrs.frozen
class SecurityConfig:
    """
    ``[security]``: policies that span every part of Warden.

    Attributes:
        fips: FIPS mode (ADR 0029, docs/FIPS.md): SHA-256 digest only, TLS with
            FIPS-approved suites and groups only, PBKDF2-HMAC-SHA256 for admin
            passwords and voicemail PINs; the start-up log says whether the
            OpenSSL in use runs a FIPS provider.
    """

    SECTION: ClassVar[str] = "security"

    fips: bool = attrs.field(
        default=False, validator=_rule(lambda v: isinstance(v, bool), "true or false")
    )


def _fips_defaults(data: Mapping[str, Any], sections: dict[str, Any]) -> None:
    """
    With ``[security] fips = true``, the FIPS defaults of keys the file does not
    set: SHA-256 digest only, FIPS-approved TLS 1.2 suites. Keys the file sets
    are checked by L{WardenConfig}, which refuses MD5 and non-approved suites.
    """
    security = sections.get("security")
    if security is None or not security.fips:
        return
    registrar, tls = data.get("registrar", {}), data.get("tls", {})
    if "digest_algorithms" not in registrar:
        old = sections.get("registrar", RegistrarConfig())
        sections["registrar"] = attrs.evolve(old, digest_algorithms=("SHA-256",))
    if "ciphers" not in tls:
        sections["tls"] = attrs.evolve(sections.get("tls", TlsConfig()), ciphers=FIPS_CIPHERS)


def _is_plugin_names(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and all(isinstance(v, str) and v for v in value)
        and len(set(value)) == len(value)
    )


def _default_plugins() -> tuple[str, ...]:
    from warden.plugin import DEFAULT_PLUGINS

    return DEFAULT_PLUGINS


@attrs.frozen
class PluginsConfig:
    """
    ``[plugins]``: which plugins run (L{warden.plugin}).

    Attributes:
        enabled: plugin names, each installed (``twistd warden --list-plugins``);
            the default is every plugin Warden ships that runs by default.
    """

    SECTION: ClassVar[str] = "plugins"

    enabled: tuple[str, ...] = attrs.field(
        factory=_default_plugins,
        converter=_to_tuple,
        validator=_rule(_is_plugin_names, "a list of distinct plugin names"),
    )


#: Sections the core parses; every other section belongs to an enabled plugin.
_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "store": StoreConfig,
    "plugins": PluginsConfig,
    "security": SecurityConfig,
}


@attrs.frozen
class WardenConfig:
    """The whole configuration, one attribute per TOML section."""

    server: ServerConfig = attrs.field(factory=ServerConfig)
    sip: SipConfig = attrs.field(factory=SipConfig)
    tls: TlsConfig = attrs.field(factory=TlsConfig)
    registrar: RegistrarConfig = attrs.field(factory=RegistrarConfig)
    store: StoreConfig = attrs.field(factory=StoreConfig)
    calls: CallsConfig = attrs.field(factory=CallsConfig)
    media: MediaConfig = attrs.field(factory=MediaConfig)
    dialplan: DialplanConfig = attrs.field(factory=DialplanConfig)
    state: StateConfig = attrs.field(factory=StateConfig)
    cluster: ClusterConfig = attrs.field(factory=ClusterConfig)
    backup: BackupConfig = attrs.field(factory=BackupConfig)
    admin: AdminConfig = attrs.field(factory=AdminConfig)
    plugins: PluginsConfig = attrs.field(factory=PluginsConfig)
    security: SecurityConfig = attrs.field(factory=SecurityConfig)
    #: The parsed sections of plugins that are not Warden's own, by section name.
    plugin_sections: Mapping[str, object] = attrs.field(factory=dict, eq=False)
    #: Which SIP worker process this is (L{warden.workers}); -1: the only process.
    worker: int = -1

    def __attrs_post_init__(self) -> None:
        ours, legacy = self.cluster.node_id, self.server.node_id
        if ours and legacy and ours != legacy:
            raise ConfigError(
                "cluster.node_id",
                f"{_show(ours)} differs from server.node_id {_show(legacy)};"
                " set only cluster.node_id",
            )
        if self.security.fips:
            self._check_fips()
        if self.sip.workers > 1:
            self._check_workers()

    def _check_workers(self) -> None:
        """Several SIP workers share their state through Redis and listen on their own ports."""
        sip = self.sip
        if not self.state.url:
            raise ConfigError(
                "sip.workers",
                f"{sip.workers} workers share registrations, nonces and counters through"
                " Redis: set [state] url (or sip.workers = 1)",
            )
        if sip.worker_port_base <= sip.port < sip.worker_port_base + sip.workers:
            raise ConfigError(
                "sip.worker_port_base",
                f"worker ports {sip.worker_port_base}..{sip.worker_port_base + sip.workers - 1}"
                f" include sip.port {sip.port}",
            )
        if "tls" in sip.transports:
            self._check_worker_tls_ports()

    def _check_worker_tls_ports(self) -> None:
        """The workers' TLS ports overlap neither their own ports nor the shared ones."""
        sip = self.sip
        first = sip.worker_tls_base()
        last = first + sip.workers - 1
        key = "sip.worker_tls_port_base" if sip.worker_tls_port_base else "sip.worker_port_base"
        own = range(sip.worker_port_base, sip.worker_port_base + sip.workers)
        for name, port in (("sip.port", sip.port), ("sip.tls_port", sip.tls_port)):
            if first <= port <= last:
                raise ConfigError(key, f"worker TLS ports {first}..{last} include {name} {port}")
        if first <= own[-1] and own[0] <= last:
            raise ConfigError(
                key, f"worker TLS ports {first}..{last} overlap worker ports {own[0]}..{own[-1]}"
            )
        if own[0] <= sip.tls_port <= own[-1]:
            raise ConfigError(
                "sip.worker_port_base",
                f"worker ports {own[0]}..{own[-1]} include sip.tls_port {sip.tls_port}",
            )

    def _check_fips(self) -> None:
        """Refuse settings FIPS mode does not allow (MD5 digest, non-approved TLS suites)."""
        if "MD5" in self.registrar.digest_algorithms:
            raise ConfigError(
                "registrar.digest_algorithms",
                "MD5 is not FIPS-approved; with security.fips = true list only"
                ' "SHA-256" (or leave the key out)',
            )
        problem = fips_cipher_problem(self.tls.ciphers)
        if problem:
            raise ConfigError(
                "tls.ciphers", f"with security.fips = true the cipher string {problem}"
            )

    @property
    def node_id(self) -> str:
        """``cluster.node_id``, else ``server.node_id``, else this machine's host name."""
        return self.cluster.node_id or self.server.node_id or socket.gethostname()

    @property
    def realm(self) -> str:
        """``server.realm``, else the first of ``server.domains``, else the host name."""
        if self.server.realm:
            return self.server.realm
        if self.server.domains:
            return self.server.domains[0]
        return socket.gethostname()

    @property
    def store_url(self) -> StoreURL:
        """``store.url`` parsed; SQLite in ``<data_dir>/warden.db`` when it is ""."""
        if self.store.url:
            return parse_store_url(self.store.url)
        return StoreURL("sqlite", path=os.path.join(self.server.data_dir, "warden.db"))

    @property
    def database_path(self) -> str:
        """The SQLite database file of L{store_url}; "" when the store is PostgreSQL."""
        return self.store_url.path


def parse_section(cls: type[Any], name: str, table: object, filename: str | None) -> Any:
    """
    The frozen ``attrs`` section ``cls`` from the TOML ``table`` of ``[name]``.

    Raises:
        ConfigError: ``table`` is not a table, has an unknown key or a bad value.
    """
    if not isinstance(table, dict):
        raise ConfigError(name, f"must be a table ([{name}]), got {_show(table)}", filename)
    known = [f.name for f in attrs.fields(cls)]
    for key in table:
        if key not in known:
            raise ConfigError(
                f"{name}.{key}", f"unknown key (known: {', '.join(known)})", filename
            )
    try:
        return cls(**table)
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, filename) from None


def _plugin_section(
    plugin: IWardenPlugin, name: str, table: object, filename: str | None
) -> object:
    # A plugin names in ``array_sections`` the sections that are arrays of
    # tables (``[[trunks]]``); it receives those as a list of tables.
    arrays: tuple[str, ...] = getattr(plugin, "array_sections", ())
    if name in arrays:
        if not (isinstance(table, list) and all(isinstance(t, dict) for t in table)):
            raise ConfigError(
                name, f"must be an array of tables ([[{name}]]), got {_show(table)}", filename
            )
    elif not isinstance(table, dict):
        raise ConfigError(name, f"must be a table ([{name}]), got {_show(table)}", filename)
    try:
        return plugin.parse_section(name, cast(Any, table), filename)
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, filename) from None
    except (ValueError, TypeError, KeyError) as e:  # a third-party parser's own error
        raise ConfigError(name, f"refused by plugin {plugin.name!r}: {e}", filename) from None


def parse_config_text(
    text: str,
    filename: str | None = None,
    plugins: Mapping[str, IWardenPlugin] | None = None,
) -> WardenConfig:
    """
    Parse a TOML document into a L{WardenConfig}.

    The core parses ``[server]``, ``[store]``, ``[plugins]`` and ``[security]``; every other
    section is parsed by the enabled plugin that owns it.

    Args:
        text: the TOML text.
        filename: named in error messages.
        plugins: the installed plugins by name (default: L{warden.plugin.discover}).

    Raises:
        ConfigError: invalid TOML, an unknown plugin, a section no enabled plugin
            owns, an unknown key, or a bad value.
    """
    from warden.plugin import discover, enabled_plugins

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigFileError(f"invalid TOML: {e}", filename) from None
    available = discover() if plugins is None else plugins
    chosen = parse_section(PluginsConfig, "plugins", data.get("plugins", {}), filename)
    try:
        enabled = enabled_plugins(chosen.enabled, available)
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, filename) from None
    owners = {section: p for p in enabled for section in p.sections}
    builtin = {f.name for f in attrs.fields(WardenConfig)}
    sections: dict[str, Any] = {}
    extra: dict[str, object] = {}
    for name, table in data.items():
        if name in _SECTIONS:
            sections[name] = parse_section(_SECTIONS[name], name, table, filename)
        elif name in owners:
            parsed = _plugin_section(owners[name], name, table, filename)
            if name in builtin:
                sections[name] = parsed
            else:
                extra[name] = parsed
        else:
            known = ", ".join([*_SECTIONS, *owners])
            raise ConfigError(name, f"unknown section (known: {known})", filename)
    _fips_defaults(data, sections)
    try:
        return WardenConfig(**sections, plugin_sections=extra)
    except ConfigError as e:  # a check across sections
        raise ConfigError(e.path, e.problem, filename) from None


def load_config(path: str, plugins: Mapping[str, IWardenPlugin] | None = None) -> WardenConfig:
    """
    Read and parse the TOML file at ``path``.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8, or is invalid.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigFileError(f"cannot read the file: {e.strerror}", path) from None
    except UnicodeDecodeError:
        raise ConfigFileError("not UTF-8 text", path) from None
    return parse_config_text(text, path, plugins)


def load_effective_config(
    config_path: str | None,
    data_dir: str | None = None,
    sip_port: int | None = None,
    sip_interface: str | None = None,
    domains: Sequence[str] = (),
    plugins: Mapping[str, IWardenPlugin] | None = None,
    sip_tls_port: int | None = None,
) -> WardenConfig:
    """
    The configuration the server (and ``wardenctl``) runs with.

    The file at ``config_path`` (or the defaults when it is None), then the
    command-line overrides: ``data_dir``, ``sip_port``, ``sip_tls_port`` and
    ``sip_interface`` replace the file's values; ``domains`` are appended to ``server.domains``.

    Raises:
        ConfigError: from the file, or an override that is invalid (its file name
            is then "command line").
    """
    if config_path is not None:
        config = load_config(config_path, plugins)
    else:
        config = WardenConfig()
    server: dict[str, Any] = {}
    sip: dict[str, Any] = {}
    if data_dir is not None:
        server["data_dir"] = data_dir
    if domains:
        server["domains"] = (*config.server.domains, *domains)
    if sip_port is not None:
        sip["port"] = sip_port
    if sip_interface is not None:
        sip["interface"] = sip_interface
    if sip_tls_port is not None:
        sip["tls_port"] = sip_tls_port
    try:
        return attrs.evolve(
            config,
            server=attrs.evolve(config.server, **server),
            sip=attrs.evolve(config.sip, **sip),
        )
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, COMMAND_LINE) from None
