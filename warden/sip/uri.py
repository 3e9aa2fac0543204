"""
SIP and SIPS URIs (RFC 3261 §19.1), IPv6 references (RFC 5118) and comparison
(RFC 3261 §19.1.4).

Other schemes (``tel:``, ``http:``, anything) parse into a L{URI} with ``opaque``
set, so that a message carrying them still parses and the application layer can
answer 416 where it must (RFC 4475 §3.3.1).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import unquote

import attrs

from warden.digits import parse_uint
from warden.errors import SipParseError

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?\Z")
_IPV4_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}\Z")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"
_IPV4_ADDRESS_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z")
# RFC 3261 §25.1: characters allowed unescaped in the user part, and in parameters.
_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+\Z")
_PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*\Z")
_PARAM_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+\Z")
_HEADER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*\Z")

# URI parameters that, when present in only one of two URIs, make them unequal
# (RFC 3261 §19.1.4).
_STICKY_PARAMS = ("user", "ttl", "method", "maddr")


def _unescape(text: str) -> str:
    return unquote(text, errors="surrogateescape") if "%" in text else text


def is_valid_host(host: str) -> bool:
    """True for a hostname, an IPv4 address or a bracketed IPv6 reference."""
    if _IPV4_ADDRESS_RE.match(host):
        return True
    if host.startswith("["):
        return host.endswith("]") and is_ipv6(host[1:-1])
    if _IPV4_RE.match(host):
        a, b, c, d = host.split(".")
        return int(a) < 256 and int(b) < 256 and int(c) < 256 and int(d) < 256
    if ":" in host:
        return False
    return bool(_HOSTNAME_RE.match(host))


def is_ipv6(text: str) -> bool:
    """True when ``text`` (no brackets, no zone index) is an IPv6 address."""
    if "%" in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def split_host_port(hostport: str) -> tuple[str, int | None]:
    """
    Split ``host[:port]`` where host may be a bracketed IPv6 reference.

    Raises SipParseError for an empty host, a bad port or an invalid host.
    """
    port: int | None = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {hostport!r}")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise SipParseError(f"bad host:port {hostport!r}")
            port = _parse_port(rest[1:], hostport)
    else:
        host, sep, port_text = hostport.partition(":")
        if sep:
            port = _parse_port(port_text, hostport)
    if not is_valid_host(host):
        raise SipParseError(f"invalid host {host!r}")
    return host.lower(), port


def _parse_port(text: str, whole: str) -> int:
    port = parse_uint(text, 65535)
    if port is None:
        raise SipParseError(f"bad port in {whole!r}")
    return port


@attrs.frozen
class URI:
    """
    A parsed URI.

    For ``sip``/``sips``: ``user`` (escaped form as received), ``password``,
    ``host`` (lower-cased; IPv6 in brackets), ``port``, ``params`` (names lower-cased,
    values as received, None for a flag) and ``headers``. For other schemes only
    ``scheme`` and ``opaque`` are set.
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    opaque: str | None = None

    @property
    def is_sip(self) -> bool:
        """True for sip: and sips: URIs."""
        return self.opaque is None

    def param(self, name: str, default: str | None = None) -> str | None:
        """The value of URI parameter ``name`` (flag parameters give "")."""
        for key, value in self.params:
            if key == name:
                return "" if value is None else value
        return default

    def has_param(self, name: str) -> bool:
        """True when URI parameter ``name`` is present."""
        return any(key == name for key, _ in self.params)

    @property
    def user_unescaped(self) -> str | None:
        """The user part with %-escapes decoded."""
        return None if self.user is None else _unescape(self.user)

    @property
    def transport(self) -> str | None:
        """The lower-cased ``transport`` parameter, if any."""
        value = self.param("transport")
        return None if value is None else value.lower()

    def with_params(self, **changes: str | None) -> URI:
        """A copy with parameters replaced (None removes, "" adds a flag)."""
        params = [(k, v) for k, v in self.params if k not in changes]
        for key, value in changes.items():
            if value is not None:
                params.append((key, value or None))
        return attrs.evolve(self, params=tuple(params))

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        user = ""
        if self.user is not None:
            user = self.user + ("" if self.password is None else ":" + self.password) + "@"
        port = "" if self.port is None else f":{self.port}"
        params = "".join([f";{k}" if v is None else f";{k}={v}" for k, v in self.params])
        headers = "&".join([f"{k}={v}" for k, v in self.headers])
        return f"{self.scheme}:{user}{self.host}{port}{params}{'?' if headers else ''}{headers}"

    def equals(self, other: URI) -> bool:
        """Compare as RFC 3261 §19.1.4 says."""
        if self.scheme != other.scheme:
            return False
        if self.opaque is not None or other.opaque is not None:
            return self.opaque == other.opaque
        if _unescape(self.user or "") != _unescape(other.user or ""):
            return False
        if _unescape(self.password or "") != _unescape(other.password or ""):
            return False
        if self.host != other.host or self.port != other.port:
            return False
        mine = {k: _unescape(v or "").lower() for k, v in self.params}
        theirs = {k: _unescape(v or "").lower() for k, v in other.params}
        for key in mine.keys() & theirs.keys():
            if mine[key] != theirs[key]:
                return False
        for key in _STICKY_PARAMS:
            if (key in mine) != (key in theirs):
                return False
        mine_h = {k.lower(): _unescape(v) for k, v in self.headers}
        theirs_h = {k.lower(): _unescape(v) for k, v in other.headers}
        return mine_h == theirs_h


#: URIs L{parse_uri} remembers, and the longest it remembers.
URIS_CACHED = 4096
CACHED_URI_LENGTH = 256


def parse_uri(text: str) -> URI:
    """
    Parse a URI (RFC 3261 §19.1.1 for sip/sips; any ``scheme:opaque`` otherwise).

    Raises SipParseError on malformed input. URIs are immutable, so recent results
    are cached (the last L{URIS_CACHED} of at most L{CACHED_URI_LENGTH}
    characters, so that long hostile texts cannot fill memory): a message names
    the same URI several times (To and From of a REGISTER, the Request-URI of
    every request to the PBX), and a retransmission or an authenticated retry
    repeats them.
    """
    if len(text) <= CACHED_URI_LENGTH:
        return _cached_uri(text)
    return _parse_uri(text)


def _parse_uri(text: str) -> URI:
    fast = _parse_plain_sip_uri(text)
    if fast is not None:
        return fast
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME_RE.match(scheme) or not rest:
        raise SipParseError(f"bad URI {text!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        if any(c in rest for c in ' \t\r\n<>"'):
            raise SipParseError(f"bad URI {text!r}")
        return URI(scheme=scheme, opaque=rest)
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        hostpart = rest
    hostpart, qmark, header_text = hostpart.partition("?")
    user: str | None = None
    password: str | None = None
    if at:
        user, colon, pw = userinfo.partition(":")
        if not user or not _USER_RE.match(user):
            raise SipParseError(f"bad user part in {text!r}")
        if colon:
            if not _PASSWORD_RE.match(pw):
                raise SipParseError(f"bad password in {text!r}")
            password = pw
    hostport, _, param_text = hostpart.partition(";")
    host, port = split_host_port(hostport)
    params: list[tuple[str, str | None]] = []
    if param_text:
        for item in param_text.split(";"):
            key, eq, value = item.partition("=")
            if not _PARAM_RE.match(key) or (eq and not _PARAM_RE.match(value)):
                raise SipParseError(f"bad URI parameter {item!r} in {text!r}")
            params.append((key.lower(), value if eq else None))
    headers: list[tuple[str, str]] = []
    if qmark:
        for item in header_text.split("&"):
            key, eq, value = item.partition("=")
            if not key or not eq or not _HEADER_RE.match(key) or not _HEADER_RE.match(value):
                raise SipParseError(f"bad URI header {item!r} in {text!r}")
            headers.append((key, value))
    return URI(
        scheme=scheme,
        user=user,
        password=password,
        host=host,
        port=port,
        params=tuple(params),
        headers=tuple(headers),
    )


_cached_uri = functools.lru_cache(maxsize=URIS_CACHED)(_parse_uri)


# The usual SIP URI: lower-case scheme, an optional user of plain characters, a
# valid host name or IPv4 address, an optional port and plain parameters; no
# password, escapes, IPv6 reference or headers. Whatever it matches, parse_uri's
# general path would accept and split the same way.
_PARAM_CHARS = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+"
_IPV4_SHAPE = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
_PLAIN_HOST = (
    rf"{_OCTET}(?:\.{_OCTET}){{3}}(?=[:;]|\Z)"  # an IPv4 address
    rf"|(?!{_IPV4_SHAPE}(?:[:;]|\Z))[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?"  # a name
)
_PLAIN_SIP_URI_RE = re.compile(
    rf"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,]+)@)?({_PLAIN_HOST})(?::([0-9]{{1,5}}))?"
    rf"((?:;{_PARAM_CHARS}(?:={_PARAM_CHARS})?)*)\Z"
)


def _parse_plain_sip_uri(text: str) -> URI | None:
    """parse_uri for the usual shape of SIP URI; None for anything else."""
    m = _PLAIN_SIP_URI_RE.match(text)
    if m is None:
        return None
    scheme, user, host, port_text, param_text = m.groups()
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            return None  # the general path raises the error
    params: tuple[tuple[str, str | None], ...] = ()
    if param_text:
        items = [item.partition("=") for item in param_text[1:].split(";")]
        params = tuple([(key.lower(), value if eq else None) for key, eq, value in items])
    return URI(scheme, user, None, host.lower(), port, params, ())


def contact_key(uri: URI) -> str:
    """
    A string that is equal for two Contact URIs exactly when they are equal under
    RFC 3261 §19.1.4 for registrar purposes (scheme, unescaped user and password,
    host, port, sorted lower-cased parameters and headers).
    """
    if uri.opaque is not None:
        return f"{uri.scheme}:{uri.opaque}"
    if len(uri.params) == 1:  # the usual case: nothing to sort
        ((k, v),) = uri.params
        p = f"{k}={_unescape(v or '').lower()}"
    else:
        params = sorted((k, _unescape(v or "").lower()) for k, v in uri.params)
        p = ";".join(f"{k}={v}" for k, v in params)
    h = ""
    if uri.headers:
        headers = sorted((k.lower(), _unescape(v)) for k, v in uri.headers)
        h = "&".join(f"{k}={v}" for k, v in headers)
    user = _unescape(uri.user or "")
    pw = _unescape(uri.password or "")
    port = "" if uri.port is None else str(uri.port)
    return f"{uri.scheme}:{user}:{pw}@{uri.host}:{port};{p}?{h}"
