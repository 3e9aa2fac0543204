"""
SIP header names and the values Warden interprets (RFC 3261 §7.3, §20, §25.1).

Header names are registered with their canonical spelling and compact form.
Values are kept as text in the message and parsed here on demand: ``Via``,
``name-addr``/``addr-spec`` (``From``, ``To``, ``Contact``, ``Route``...),
``CSeq``, generic parameters and digest credentials.
"""

from __future__ import annotations

import functools
import re

import attrs

from warden.digits import is_digits
from warden.errors import SipParseError
from warden.sip.uri import URI, is_valid_host, parse_uri, split_host_port

_CANONICAL = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
    "Allow", "Allow-Events", "Authentication-Info", "Authorization", "Call-ID",
    "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info",
    "Event", "Expires", "From", "Identity", "In-Reply-To", "Max-Forwards",
    "MIME-Version", "Min-Expires", "Min-SE", "Organization", "P-Asserted-Identity",
    "Path", "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require",
    "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact",
    "Replaces", "Reply-To", "Request-Disposition", "Require", "Retry-After", "Route",
    "RSeq", "Server", "Session-Expires", "Subject", "Subscription-State", "Supported",
    "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate",
]  # fmt: skip

CANONICAL_NAMES: dict[str, str] = {name.lower(): name for name in _CANONICAL}

COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1). The others
# must appear once; a second copy makes a request malformed (RFC 4475 §3.3.9).
MULTI_VALUED = frozenset(
    [
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
        "Allow", "Allow-Events", "Call-Info", "Contact", "Content-Encoding",
        "Content-Language", "Error-Info", "In-Reply-To", "P-Asserted-Identity", "Path",
        "Proxy-Require", "Reason", "Record-Route", "Reject-Contact", "Require", "Route",
        "Supported", "Unsupported", "Via", "Warning",
    ]
)  # fmt: skip

# Headers of which RFC 3261 allows exactly one in a request (RFC 4475 §3.3.9).
SINGLE_VALUED = frozenset(
    ["Call-ID", "Content-Length", "Content-Type", "CSeq", "Expires", "From",
     "Max-Forwards", "Min-Expires", "To"]
)  # fmt: skip

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def canonical_name(name: str) -> str:
    """The registered spelling of a header name (compact forms expanded)."""
    known = USUAL_SPELLINGS.get(name)
    if known is not None:
        return known
    lower = name.lower()
    full = CANONICAL_NAMES.get(lower)
    if full is not None:
        return full
    if len(lower) == 1:
        compact = COMPACT_FORMS.get(lower)
        if compact is not None:
            return compact
    if not _TOKEN_RE.match(name):
        raise SipParseError(f"bad header name {name!r}")
    canonical = "-".join(part.capitalize() for part in lower.split("-"))
    if len(USUAL_SPELLINGS) < _MAX_SPELLINGS:
        USUAL_SPELLINGS[name] = canonical
    return canonical


def _usual_spellings() -> dict[str, str]:
    """Exact spellings seen on the wire, mapped without case folding."""
    spellings: dict[str, str] = {}
    for name in _CANONICAL:
        for spelling in (name, name.lower(), name.upper(), name.title()):
            spellings[spelling] = name
    for compact, name in COMPACT_FORMS.items():
        spellings[compact] = spellings[compact.upper()] = name
    return spellings


# Header name as written -> canonical name: the registered names in their usual
# spellings, then other valid names as they are met (bounded: names come from peers).
USUAL_SPELLINGS = _usual_spellings()
_MAX_SPELLINGS = len(USUAL_SPELLINGS) + 1024

# The longest run of list-item text: characters other than the delimiters, and
# whole quoted-strings (backslash escapes inside). It stops at ',', '<', '>', at
# the end, or at a '"' that opens no complete quoted-string.
_ITEM_TEXT_RE = re.compile(r'(?:[^"<>,]++|"(?:[^"\\]++|\\.)*+")*+', re.S)


def split_commas(value: str) -> list[str]:
    """Split a header value at commas that are outside quotes and angle brackets."""
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [item for item in (part.strip() for part in value.split(",")) if item]
    items: list[str] = []
    in_angle = False
    start = 0
    end = len(value)
    pos = _item_end(value, 0)
    while pos < end:
        c = value[pos]
        if c == ",":
            if not in_angle:
                items.append(value[start:pos].strip())
                start = pos + 1
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        else:
            raise SipParseError(f"unbalanced quotes in {value!r}")
        pos = _item_end(value, pos + 1)
    items.append(value[start:].strip())
    return [item for item in items if item]


def _item_end(value: str, pos: int) -> int:
    """Where the list-item text starting at ``pos`` ends."""
    m = _ITEM_TEXT_RE.match(value, pos)
    return pos if m is None else m.end()


def parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """
    Parse ``;name=value;flag`` generic parameters (RFC 3261 §25.1 generic-param).

    Names are lower-cased; quoted values keep their quotes; whitespace around ``;``
    and ``=`` is allowed (LWS).
    """
    text = text.strip()
    if not text:
        return ()
    if _PLAIN_PARAMS_RE.match(text):
        # The usual case (no quotes, no whitespace): every item is already valid.
        out: list[tuple[str, str | None]] = []
        for item in text[1:].split(";"):
            key, eq, value = item.partition("=")
            out.append((key.lower(), value if eq else None))
        return tuple(out)
    if not text.startswith(";"):
        raise SipParseError(f"bad parameters {text!r}")
    params: list[tuple[str, str | None]] = []
    for item in _split_semicolons(text[1:]):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not _TOKEN_RE.match(key):
            raise SipParseError(f"bad parameter {item!r}")
        if eq:
            value = value.strip()
            if not value:
                raise SipParseError(f"empty parameter value in {item!r}")
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    raise SipParseError(f"bad quoted parameter {item!r}")
            elif not _PARAM_VALUE_RE.fullmatch(value):
                raise SipParseError(f"bad parameter value {item!r}")
            params.append((key.lower(), value))
        else:
            params.append((key.lower(), None))
    return tuple(params)


_PARAM_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")
# Parameters without quotes or whitespace, each a token with an optional value.
_PLAIN_PARAMS_RE = re.compile(r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)+\Z")


def _split_semicolons(text: str) -> list[str]:
    if '"' not in text:
        return text.split(";")
    items, start, in_quote, i = [], 0, False, 0
    while i < len(text):
        c = text[i]
        if in_quote and c == "\\":
            i += 1
        elif c == '"':
            in_quote = not in_quote
        elif c == ";" and not in_quote:
            items.append(text[start:i])
            start = i + 1
        i += 1
    items.append(text[start:])
    return items


def param_value(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    """Value of ``name`` ("" for a flag), or None when absent."""
    for key, value in params:
        if key == name:
            return "" if value is None else value
    return None


def unquote_string(text: str) -> str:
    """Remove the quotes and backslash escapes of a quoted-string."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        return _ESCAPE_RE.sub(r"\1", inner) if "\\" in inner else inner
    return text


_ESCAPE_RE = re.compile(r"\\(.)")


_UNQUOTABLE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def quote_string(text: str) -> str:
    """
    Make a quoted-string of ``text`` (RFC 3261 §25.1): backslash and double
    quote are escaped; control characters, which a quoted-string cannot carry
    (CR and LF not even escaped), become spaces, so no value can end the
    string or the header line early.
    """
    text = _UNQUOTABLE_RE.sub(" ", text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def name_addr(display: str, uri: str) -> str:
    """``"display" <uri>`` (name-addr, RFC 3261 §25.1) with the name escaped; ``<uri>`` if none."""
    return f"{quote_string(display)} <{uri}>" if display else f"<{uri}>"


@attrs.frozen
class Via:
    """One Via value (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]

    @property
    def branch(self) -> str | None:
        """The branch parameter, or None."""
        return param_value(self.params, "branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """``(host, port)`` of the sent-by field."""
        return self.host, self.port

    def param(self, name: str) -> str | None:
        """A parameter's value ("" for a flag) or None."""
        return param_value(self.params, name)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params)
        return f"SIP/2.0/{self.transport} {self.host}{port}{params}"


# ``SIP/2.0/UDP host[:port];params`` with a plain host and plain parameters.
_PLAIN_VIA_RE = re.compile(
    r"SIP/2\.0/([A-Za-z0-9\-.!%*_+`'~]+) ([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*)\Z"
)
# Any SIP version is read, so that a request of another version can still be
# answered with 505 (RFC 4475 §3.1.2.16); the request line decides the version.
_VIA_RE = re.compile(
    r"SIP\s*/\s*[0-9]+\.[0-9]+\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+([^;\s]+)\s*(.*)\Z", re.S
)


def parse_via(value: str) -> Via:
    """Parse one Via value (already split at commas)."""
    plain = _PLAIN_VIA_RE.match(value)
    if plain is not None and _plain_port_ok(plain[3]) and is_valid_host(plain[2]):
        # The usual shape, split the way the general path below splits it.
        transport, host, port = plain[1].upper(), plain[2].lower(), plain[3]
        params = parse_params(plain[4])
        via = Via(transport, host, None if port is None else int(port), params)
    else:
        m = _VIA_RE.match(value.strip())
        if m is None:
            raise SipParseError(f"bad Via {value!r}")
        host, port_number = split_host_port(m.group(2))
        params = parse_params(m.group(3))
        via = Via(m.group(1).upper(), host, port_number, params)
    for key, param in params:
        if key == "received" and param is not None:
            _check_received(param)
        if key == "branch" and not param:
            raise SipParseError(f"empty branch in Via {value!r}")
    return via


def _plain_port_ok(port: str | None) -> bool:
    return port is None or int(port) <= 65535


def _check_received(value: str) -> None:
    from warden.sip.uri import is_ipv6

    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if not (is_ipv6(bare) or (is_valid_host(value) and is_digits(value[:1]))):
        raise SipParseError(f"bad received parameter {value!r}")


@attrs.frozen
class Address:
    """
    A ``name-addr`` or ``addr-spec`` with header parameters (From, To, Contact...).

    ``display`` is the display name without quotes (None when absent); ``star`` is
    True for ``Contact: *``.
    """

    uri: URI
    display: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    star: bool = False

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter."""
        return param_value(self.params, "tag")

    def param(self, name: str) -> str | None:
        """A header parameter's value ("" for a flag) or None."""
        return param_value(self.params, name)

    def __str__(self) -> str:
        if self.star:
            return "*"
        name = "" if self.display is None else quote_string(self.display) + " "
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params)
        return f"{name}<{self.uri}>{params}"


_DISPLAY_TOKENS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~ \t]*\Z")


#: Header values L{parse_address} remembers, and the longest it remembers.
ADDRESSES_CACHED = 4096
CACHED_ADDRESS_LENGTH = 256


def parse_address(value: str) -> Address:
    """
    Parse ``name-addr`` / ``addr-spec`` followed by header parameters
    (RFC 3261 §20.10, §20.20, §20.39).

    Addresses are immutable, so recent answers are kept (the last
    L{ADDRESSES_CACHED} values of at most L{CACHED_ADDRESS_LENGTH} characters;
    errors are not kept): a REGISTER's authenticated retry repeats its From,
    To and Contact, and a phone's next REGISTER its To and Contact.
    """
    if len(value) <= CACHED_ADDRESS_LENGTH:
        return _cached_address(value)
    return _parse_address(value)


def _parse_address(value: str) -> Address:
    text = value.strip()
    if text.startswith("<"):
        # ``<uri>;params``, as the general path below reads it.
        gt = text.find(">")
        inner = text[1:gt]
        if gt > 0 and inner == inner.strip():
            return Address(parse_uri(inner), None, parse_params(text[gt + 1 :]))
    if text == "*":
        return Address(uri=URI(scheme="*", opaque=""), star=True)
    display: str | None = None
    if text.startswith('"'):
        end = _closing_quote(text)
        display = unquote_string(text[: end + 1])
        text = text[end + 1 :].lstrip()
        if not text.startswith("<"):
            raise SipParseError(f"display name without <URI> in {value!r}")
    if "<" in text:
        lt = text.index("<")
        if display is None:
            name = text[:lt].strip()
            if not _DISPLAY_TOKENS_RE.match(name):
                raise SipParseError(f"bad display name in {value!r}")
            display = name or None
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(f"unterminated <URI> in {value!r}")
        inner = text[lt + 1 : gt]
        if inner != inner.strip():
            raise SipParseError(f"whitespace inside <URI> in {value!r}")
        uri = parse_uri(inner)
        params = parse_params(text[gt + 1 :])
    else:
        # addr-spec: parameters after the URI are header parameters (§20.10).
        uri_text, semi, rest = text.partition(";")
        uri_text = uri_text.rstrip()
        if not uri_text or any(c in uri_text for c in ' \t"?'):
            if "?" in uri_text:
                raise SipParseError(f"addr-spec with URI headers must use <> in {value!r}")
            raise SipParseError(f"bad addr-spec {value!r}")
        uri = parse_uri(uri_text)
        params = parse_params(";" + rest) if semi else ()
    return Address(uri=uri, display=display, params=params)


_cached_address = functools.lru_cache(maxsize=ADDRESSES_CACHED)(_parse_address)


def _closing_quote(text: str) -> int:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    raise SipParseError(f"unbalanced quotes in {text!r}")


@attrs.frozen
class CSeq:
    """The CSeq header: sequence number and method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_CSEQ_RE = re.compile(r"\s*([0-9]{1,10})\s+([A-Za-z0-9\-.!%*_+`'~]+)\s*\Z")


def parse_cseq(value: str) -> CSeq:
    """Parse CSeq; the number must be below 2**31 (RFC 3261 §8.1.1.5)."""
    m = _CSEQ_RE.match(value)
    if m is None:
        raise SipParseError(f"bad CSeq {value!r}")
    number = int(m.group(1))
    if number >= 2**31:
        raise SipParseError(f"CSeq number out of range {value!r}")
    return CSeq(number, m.group(2))


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """
    Parse ``Digest username="..", realm=".."`` credentials or challenges
    (RFC 3261 §25.1, RFC 7616). Fires back ``(scheme, {name: unquoted value})``;
    names lower-cased.
    """
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if not _TOKEN_RE.match(scheme):
        raise SipParseError(f"bad auth scheme in {value!r}")
    params: dict[str, str] = {}
    if _AUTH_PARAMS_RE.match(rest):
        # The usual shape: every item is ``token = token-or-quoted-string``; what
        # unquote_string would do is done here for the quoted ones.
        for key, quoted, plain in _AUTH_PARAM_RE.findall(rest):
            if "\\" in quoted:
                quoted = _ESCAPE_RE.sub(r"\1", quoted)
            params[key.lower()] = quoted or plain
        return scheme, params
    for item in split_commas(rest):
        key, eq, val = item.partition("=")
        key = key.strip().lower()
        if not eq or not _TOKEN_RE.match(key):
            raise SipParseError(f"bad auth parameter {item!r}")
        params[key] = unquote_string(val.strip())
    return scheme, params


_AUTH_PARAM = (
    r"[ \t]*+([A-Za-z0-9\-.!%*_+`'~]++)[ \t]*+=[ \t]*+"
    r'(?:"((?:[^"\\]++|\\.)*+)"|([^\s",<>]*+))[ \t]*+'
)
# A whole list of auth-params in the usual shape, and one of its items: name,
# quoted-string content and plain value.
_AUTH_PARAMS_RE = re.compile(rf"{_AUTH_PARAM}(?:,{_AUTH_PARAM})*+\Z", re.S)
_AUTH_PARAM_RE = re.compile(rf"{_AUTH_PARAM}(?:,|\Z)", re.S)
