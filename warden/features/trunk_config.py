"""
The configuration of SIP trunks (``[[trunks]]``) and of the routes over them
(``[[routes.outbound]]``, ``[[routes.inbound]]``), owned by the ``trunks``
plugin (L{warden.features.trunks}).

A trunk's password is never written in the configuration: ``password_env``
names an environment variable and ``password_file`` a file holding it, read
when Warden starts (L{TrunkConfig.password}). An inline ``password`` key is an
error. Outbound patterns are the pattern language of ``[[dialplan.rules]]``
(L{warden.sip.dialplan}).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import attrs

from warden.errors import ConfigError
from warden.features.smtp import load_trust_root
from warden.secrets import ENV_NAME, read_password
from warden.sip.dialplan import Rule, RuleError, pattern_regex
from warden.sip.locate import DEFAULT_PORTS

__all__ = [
    "DnsConfig",
    "InboundRoute",
    "OutboundRoute",
    "RoutesConfig",
    "TrunkConfig",
    "TrunksConfig",
    "parse_dns",
    "parse_routes",
    "parse_trunks",
]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_USER = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=%-]{1,64}$")
_NUMBER = re.compile(r"^\+?[0-9]{1,20}$")
_DID = re.compile(r"^\+?[0-9]{1,32}$")
_EXTENSION = re.compile(r"^[0-9A-Za-z*#._-]{1,64}$")
_ENV = ENV_NAME
#: An inbound target answered by a local application (``voicemail:1001``).
_APPLICATION_TARGET = re.compile(r"^([a-z][a-z0-9-]{0,31}):([0-9A-Za-z*#._-]{1,64})$")
#: Transports a trunk may use.
TRANSPORTS = ("udp", "tcp", "tls")

_TRUNK_KEYS = (
    "name", "host", "port", "transport", "register", "username", "password_env",
    "password_file", "from_number", "expires", "timeout", "addresses", "max_calls",
    "tls_ca_file",
)  # fmt: skip
_OUTBOUND_KEYS = ("pattern", "regex", "strip", "prefix", "trunks", "callers")
_INBOUND_KEYS = ("did", "to")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    if not 0 < len(value) <= 253:
        return False
    return all(_HOST_LABEL.match(label) for label in value.split("."))


@attrs.frozen
class TrunkConfig:
    """
    One ``[[trunks]]`` table: an ITSP Warden sends calls to and takes calls from.

    Attributes:
        name: referenced by routes, metrics and ``wardenctl trunks``.
        host: the provider's host name or IP address.
        port: its SIP port (5060; 5061 for ``tls``).
        port_given: whether ``port`` was written (RFC 3263 §4.2: then the
            host's addresses are looked up, no SRV records).
        transport: ``udp``, ``tcp`` or ``tls`` (Warden opens the connection;
            over TLS it verifies the provider's certificate and host name).
        register: Warden registers to the provider (digest auth); False for a
            trunk that knows Warden by its address (IP-authenticated).
        username: digest user for REGISTER and the provider's INVITE challenges.
        password_env: environment variable holding the password.
        password_file: file holding the password (first line).
        from_number: caller ID presented on this trunk when the caller's
            extension has no number of its own.
        expires: registration lifetime asked for, in seconds.
        timeout: seconds the provider has to answer an INVITE at all (100
            Trying included) before the next trunk of the route is tried.
        addresses: further addresses or networks (CIDR) the provider sends
            its calls from, besides ``host``'s address.
        max_calls: calls the trunk carries at once (its channels; 0: no
            limit). Outbound calls beyond it (less the emergency reserve,
            ``[emergency] reserve_calls``) try the route's next trunk; an
            emergency call beyond it drops the trunk's newest other call.
        tls_ca_file: a PEM bundle of the CAs the provider's TLS certificate
            must chain to ("": the system's trust store).
    """

    name: str
    host: str
    port: int = 5060
    transport: str = "udp"
    register: bool = True
    username: str = ""
    password_env: str = ""
    password_file: str = ""
    from_number: str = ""
    expires: int = 3600
    timeout: float = 5.0
    addresses: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_calls: int = 0
    port_given: bool = True
    tls_ca_file: str = ""

    @property
    def has_password(self) -> bool:
        """Whether a password source is configured."""
        return bool(self.password_env or self.password_file)

    def password(self, path: str) -> str:
        """
        The password from its environment variable or file (read now).

        Args:
            path: the trunk's configuration path (``trunks[0]``), for errors.

        Raises:
            ConfigError: the variable is unset or the file unreadable or empty.
        """
        return read_password(
            self.password_env, self.password_file, f"{path}.password_env", f"{path}.password_file"
        )


@attrs.frozen
class TrunksConfig:
    """``[[trunks]]``: every trunk, in the order written."""

    trunks: tuple[TrunkConfig, ...] = ()

    def get(self, name: str) -> TrunkConfig | None:
        """The trunk called ``name``, if any."""
        for trunk in self.trunks:
            if trunk.name == name:
                return trunk
        return None


@attrs.frozen
class DnsConfig:
    """
    ``[dns]``: where Warden asks DNS questions (the trunks' servers, RFC 3263).

    Attributes:
        servers: ``(address, port)`` of the DNS servers asked, in order
            (empty: those of ``/etc/resolv.conf``).
    """

    servers: tuple[tuple[str, int], ...] = ()


#: DNS servers ``[dns] servers`` may list.
MAX_DNS_SERVERS = 8


def parse_dns(value: object) -> DnsConfig:
    """
    ``[dns]``: ``servers = ["192.0.2.53", "127.0.0.1:5353", "[2001:db8::53]:53"]``.

    Raises:
        ConfigError: naming ``dns.servers`` (or an unknown key) and the problem.
    """
    if not isinstance(value, dict):
        raise ConfigError("dns", "must be a table ([dns])")
    _check_keys("dns", value, ("servers",))
    servers = value.get("servers", [])
    expected = f"a list of at most {MAX_DNS_SERVERS} addresses (192.0.2.53 or 127.0.0.1:5353)"
    _want("dns.servers", isinstance(servers, list) and len(servers) <= MAX_DNS_SERVERS
          and all(isinstance(s, str) for s in servers), expected, servers)  # fmt: skip
    assert isinstance(servers, list)
    return DnsConfig(tuple(_dns_server(s) for s in servers))


def _dns_server(text: str) -> tuple[str, int]:
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            host, port = host, _dns_port(text, rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        port = _dns_port(text, number)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise ConfigError(
            "dns.servers", f"{text!r} is not an IP address with an optional :port"
        ) from None


def _dns_port(text: str, number: str) -> int:
    if number.isascii() and number.isdigit() and 0 < int(number) <= 65535:
        return int(number)
    raise ConfigError("dns.servers", f"{text!r}: the port must be 1..65535")


@attrs.frozen
class OutboundRoute:
    """
    One ``[[routes.outbound]]`` table.

    Attributes:
        rule: the pattern (or regex) and the rewrite (``strip``, ``prefix``).
        trunks: the trunks tried in order (the next on 5xx, 408 or time-out).
        callers: patterns of the extensions that may use the route (empty: all).
    """

    rule: Rule
    trunks: tuple[str, ...]
    callers: tuple[re.Pattern[str], ...] = ()

    def applies(self, caller: str, dialled: str) -> str | None:
        """The number to send when ``caller`` dialling ``dialled`` takes this route."""
        if self.callers and not any(p.fullmatch(caller) for p in self.callers):
            return None
        return self.rule.apply(dialled)


@attrs.frozen
class InboundRoute:
    """One ``[[routes.inbound]]`` table: a DID and the extension it rings."""

    did: str
    to: str


@attrs.frozen
class RoutesConfig:
    """``[routes]``: outbound routes tried in order, and inbound DIDs."""

    outbound: tuple[OutboundRoute, ...] = ()
    inbound: tuple[InboundRoute, ...] = ()

    def extension_for(self, did: str) -> str | None:
        """The extension a DID rings, if any (a leading ``+`` is not significant)."""
        wanted = did.removeprefix("+")
        for route in self.inbound:
            if route.did.removeprefix("+") == wanted:
                return route.to
        return None

    def number_of(self, extension: str) -> str | None:
        """
        An extension's own outbound number: the DID of the first inbound route
        ringing it (the number a callee can call back), if any.
        """
        for route in self.inbound:
            if route.to == extension:
                return route.did
        return None


def _check_keys(path: str, table: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in table:
        if key == "password" and "password_env" in known:
            raise ConfigError(
                f"{path}.password",
                "a password is never written in the configuration:"
                " use password_env or password_file",
            )
        if key not in known:
            raise ConfigError(f"{path}.{key}", f"unknown key (known: {', '.join(known)})")


def _want(path: str, ok: bool, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(path, f"must be {expected}, got {value!r}")


def _trunk(path: str, table: object) -> TrunkConfig:
    if not isinstance(table, dict):
        raise ConfigError(path, "must be a table ([[trunks]])")
    _check_keys(path, table, _TRUNK_KEYS)
    for key in ("name", "host"):
        if key not in table:
            raise ConfigError(f"{path}.{key}", "missing")
    values = dict(table)
    name, host = values["name"], values["host"]
    _want(f"{path}.name", isinstance(name, str) and bool(_NAME.match(name)),
          "1-32 letters, digits, '-' or '_'", name)  # fmt: skip
    _want(f"{path}.host", isinstance(host, str) and _is_host(host),
          "a host name or an IP address", host)  # fmt: skip
    transport = values.get("transport", "udp")
    _want(f"{path}.transport", transport in TRANSPORTS, "udp, tcp or tls", transport)
    port = values.get("port", DEFAULT_PORTS.get(transport, 5060))
    _want(f"{path}.port", _is_int(port) and 1 <= port <= 65535, "a port 1..65535", port)
    ca_file = _ca_file(f"{path}.tls_ca_file", values.get("tls_ca_file", ""))
    if ca_file and transport != "tls":
        raise ConfigError(f"{path}.tls_ca_file", 'only a trunk with transport = "tls" has one')
    register = values.get("register", True)
    _want(f"{path}.register", isinstance(register, bool), "true or false", register)
    username = values.get("username", "")
    _want(f"{path}.username", isinstance(username, str) and (not username or bool(
        _USER.match(username))), "a SIP user name", username)  # fmt: skip
    env = values.get("password_env", "")
    _want(f"{path}.password_env", isinstance(env, str) and (not env or bool(_ENV.match(env))),
          "an environment variable name", env)  # fmt: skip
    file = values.get("password_file", "")
    _want(f"{path}.password_file", isinstance(file, str), "a file path", file)
    if env and file:
        raise ConfigError(f"{path}.password_file", "give password_env or password_file, not both")
    if register and not (username and (env or file)):
        key = "username" if not username else "password_env"
        raise ConfigError(
            f"{path}.{key}",
            "a registering trunk needs username and password_env or password_file",
        )
    number = values.get("from_number", "")
    number_ok = isinstance(number, str) and (not number or bool(_NUMBER.match(number)))
    _want(f"{path}.from_number", number_ok, "a phone number (digits, optional +)", number)
    expires = values.get("expires", 3600)
    expires_ok = _is_int(expires) and 60 <= expires <= 86400
    _want(f"{path}.expires", expires_ok, "an integer 60..86400 (seconds)", expires)
    timeout = values.get("timeout", 5.0)
    timeout_ok = (_is_int(timeout) or isinstance(timeout, float)) and 0.5 <= timeout <= 60
    _want(f"{path}.timeout", timeout_ok, "a number 0.5..60 (seconds)", timeout)
    max_calls = values.get("max_calls", 0)
    max_ok = _is_int(max_calls) and 0 <= max_calls <= 100000
    _want(f"{path}.max_calls", max_ok, "an integer 0..100000 (0: no limit)", max_calls)
    return TrunkConfig(
        name=name, host=host.lower(), port=port, transport=transport, register=register,
        username=username, password_env=env, password_file=file, from_number=number,
        expires=expires, timeout=float(timeout),
        addresses=_networks(f"{path}.addresses", values.get("addresses", [])),
        max_calls=max_calls, port_given="port" in values, tls_ca_file=ca_file,
    )  # fmt: skip


def _ca_file(path: str, value: object) -> str:
    """``tls_ca_file``: a readable PEM bundle of at least one certificate, checked now."""
    _want(path, isinstance(value, str), "a file path", value)
    assert isinstance(value, str)
    load_trust_root(value, path)
    return value


def _networks(
    path: str, value: object
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A list of IP addresses or CIDR networks."""
    expected = "a list of IP addresses or networks (203.0.113.0/24)"
    _want(path, isinstance(value, list) and all(isinstance(v, str) for v in value),
          expected, value)  # fmt: skip
    assert isinstance(value, list)
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in value)
    except ValueError:
        raise ConfigError(path, f"must be {expected}, got {value!r}") from None


def parse_trunks(value: object) -> TrunksConfig:
    """
    ``[[trunks]]`` (an array of tables) into L{TrunksConfig}.

    Raises:
        ConfigError: naming ``trunks[i].key`` and the problem.
    """
    if not isinstance(value, list):
        raise ConfigError("trunks", "must be an array of tables ([[trunks]])")
    trunks = tuple(_trunk(f"trunks[{i}]", table) for i, table in enumerate(value))
    seen: set[str] = set()
    for i, trunk in enumerate(trunks):
        if trunk.name in seen:
            raise ConfigError(f"trunks[{i}].name", f"another trunk is named {trunk.name!r}")
        seen.add(trunk.name)
    return TrunksConfig(trunks)


def _outbound(path: str, table: object) -> OutboundRoute:
    if not isinstance(table, dict):
        raise ConfigError(path, "must be a table ([[routes.outbound]])")
    _check_keys(path, table, _OUTBOUND_KEYS)
    names = table.get("trunks")
    _want(f"{path}.trunks", isinstance(names, list) and bool(names) and all(
        isinstance(n, str) for n in names) and len(set(names)) == len(names),
        "a non-empty list of distinct trunk names", names)  # fmt: skip
    assert isinstance(names, list)
    rule_table = {k: v for k, v in table.items() if k in ("pattern", "regex", "strip", "prefix")}
    try:
        rule = Rule.from_table(rule_table)
    except RuleError as e:
        raise ConfigError(f"{path}.{e.key}", e.problem) from None
    callers = table.get("callers", [])
    callers_ok = isinstance(callers, list) and all(isinstance(c, str) for c in callers)
    _want(f"{path}.callers", callers_ok, "a list of extension patterns", callers)
    compiled = []
    for pattern in callers:
        try:
            compiled.append(re.compile(pattern_regex(pattern)))
        except RuleError as e:
            raise ConfigError(f"{path}.callers", e.problem) from None
    return OutboundRoute(rule, tuple(names), tuple(compiled))


def _inbound(path: str, table: object) -> InboundRoute:
    if not isinstance(table, dict):
        raise ConfigError(path, "must be a table ([[routes.inbound]])")
    _check_keys(path, table, _INBOUND_KEYS)
    did, to = table.get("did"), table.get("to")
    did_ok = isinstance(did, str) and bool(_DID.match(did))
    _want(f"{path}.did", did_ok, "a number (digits, optional leading +)", did)
    _want(f"{path}.to", isinstance(to, str) and bool(to), "an extension number", to)
    assert isinstance(did, str) and isinstance(to, str)
    if ":" in to:
        expected = "an application target (voicemail:1001)"
        _want(f"{path}.to", bool(_APPLICATION_TARGET.match(to)), expected, to)
    else:
        _want(f"{path}.to", bool(_EXTENSION.match(to)), "an extension number", to)
    return InboundRoute(did, to)


def parse_routes(value: object) -> RoutesConfig:
    """
    ``[routes]`` with its ``[[routes.outbound]]`` and ``[[routes.inbound]]``.

    Args:
        value: the TOML table.

    Raises:
        ConfigError: naming ``routes.outbound[i].key`` and the problem.
    """
    if not isinstance(value, dict):
        raise ConfigError("routes", "must be a table ([routes])")
    _check_keys("routes", value, ("outbound", "inbound"))
    outbound, inbound = value.get("outbound", []), value.get("inbound", [])
    for key, tables in (("outbound", outbound), ("inbound", inbound)):
        if not isinstance(tables, list):
            raise ConfigError(f"routes.{key}", f"must be an array of tables ([[routes.{key}]])")
    routes = RoutesConfig(
        tuple(_outbound(f"routes.outbound[{i}]", t) for i, t in enumerate(outbound)),
        tuple(_inbound(f"routes.inbound[{i}]", t) for i, t in enumerate(inbound)),
    )
    seen: set[str] = set()
    for i, route in enumerate(routes.inbound):
        did = route.did.removeprefix("+")
        if did in seen:
            raise ConfigError(f"routes.inbound[{i}].did", f"{route.did} is routed twice")
        seen.add(did)
    return routes


def check_routes(routes: RoutesConfig, trunks: TrunksConfig) -> None:
    """
    Every trunk an outbound route names exists (the sections are parsed one
    at a time; this runs when the plugin is built).

    Raises:
        ConfigError: naming the route's ``trunks`` key.
    """
    for i, route in enumerate(routes.outbound):
        for name in route.trunks:
            if trunks.get(name) is None:
                known = ", ".join(t.name for t in trunks.trunks) or "none"
                raise ConfigError(
                    f"routes.outbound[{i}].trunks", f"no trunk is named {name!r} (known: {known})"
                )


def check_targets(routes: RoutesConfig, applications: frozenset[str]) -> None:
    """
    Every inbound target ``<kind>:<name>`` (``voicemail:1001``,
    ``ringgroup:sales``, ``ivr:main``) is of a kind an enabled plugin answers
    (L{warden.features.trunks.target_kinds}).

    Raises:
        ConfigError: naming the route's ``to`` key.
    """
    for i, route in enumerate(routes.inbound):
        kind, colon, _ = route.to.partition(":")
        if colon and kind not in applications:
            raise ConfigError(
                f"routes.inbound[{i}].to",
                f"{kind}: targets are not available (no enabled plugin runs {kind!r})",
            )
