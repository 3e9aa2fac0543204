"""
SIP requests and responses (RFC 3261 §7).

A message keeps its headers as ``(canonical name, raw value)`` pairs in the order
received and parses the ones it is asked about, once. The bytes a message was
parsed from are kept in ``raw`` so that relaying does not re-serialise needlessly;
any change to the headers or body drops them.

A parsed message's headers are a L{HeaderList}, which indexes them by name so a
lookup does not scan the list; ``compact()`` shrinks a message that is only kept
in case it is needed again (a transaction waiting for retransmissions).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, SupportsIndex

from warden.digits import parse_uint
from warden.errors import SipParseError
from warden.randomness import random_hex
from warden.sip.headers import (
    MULTI_VALUED,
    USUAL_SPELLINGS,
    Address,
    CSeq,
    Via,
    canonical_name,
    parse_address,
    parse_cseq,
    parse_via,
    split_commas,
)
from warden.sip.uri import URI, parse_uri

REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
}  # fmt: skip


class HeaderList(list[tuple[str, str]]):
    """
    The header list of a parsed message: a list that keeps an index of its
    header names, and drops it whenever it is changed, by whoever and however.
    """

    __slots__ = ("_names",)

    def __init__(
        self, items: Iterable[tuple[str, str]] = (), names: HeaderNames | None = None
    ) -> None:
        """``names``, when given, must be the index of ``items``."""
        super().__init__(items)
        self._names = names

    def names(self) -> HeaderNames:
        """The index of header names (built on first use after a change)."""
        names = self._names
        if names is None:
            names = self._names = HeaderNames(self)
        return names

    def __setitem__(self, index: Any, value: Any) -> None:
        self._names = None
        super().__setitem__(index, value)

    def __delitem__(self, index: Any) -> None:
        self._names = None
        super().__delitem__(index)

    def __iadd__(self, items: Iterable[tuple[str, str]]) -> HeaderList:  # type: ignore[override, misc]
        self._names = None
        return super().__iadd__(items)

    def __imul__(self, times: SupportsIndex) -> HeaderList:
        self._names = None
        return super().__imul__(times)

    def append(self, item: tuple[str, str]) -> None:
        """As list.append."""
        self._names = None
        super().append(item)

    def extend(self, items: Iterable[tuple[str, str]]) -> None:
        """As list.extend."""
        self._names = None
        super().extend(items)

    def insert(self, index: SupportsIndex, item: tuple[str, str]) -> None:
        """As list.insert."""
        self._names = None
        super().insert(index, item)

    def pop(self, index: SupportsIndex = -1) -> tuple[str, str]:
        """As list.pop."""
        self._names = None
        return super().pop(index)

    def remove(self, item: tuple[str, str]) -> None:
        """As list.remove."""
        self._names = None
        super().remove(item)

    def clear(self) -> None:
        """As list.clear."""
        self._names = None
        super().clear()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        """As list.sort."""
        self._names = None
        super().sort(*args, **kwargs)

    def reverse(self) -> None:
        """As list.reverse."""
        self._names = None
        super().reverse()


class HeaderNames:
    """Where the headers of a L{HeaderList} are, by name."""

    __slots__ = ("first", "repeated")

    def __init__(
        self, headers: Iterable[tuple[str, str]] = (), first: dict[str, str] | None = None
    ) -> None:
        """Index ``headers``, or take ``first`` as the index of headers seen once."""
        repeated: set[str] = set()
        if first is None:
            first = {}
            for name, value in headers:
                if name in first:
                    repeated.add(name)
                else:
                    first[name] = value
        self.first = first  # name -> first value
        self.repeated = repeated  # names that appear more than once


class Message:
    """Common part of requests and responses."""

    __slots__ = ("_cache", "_headers", "_raw", "body")

    def __init__(
        self,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        raw: bytes | None = None,
    ) -> None:
        # A list; after compact() a tuple, or None when ``raw`` holds them.
        self._headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] | None = (
            headers if headers is not None else []
        )
        self._raw = raw
        self.body = body
        self._cache: dict[str, Any] = {}

    @property
    def headers(self) -> list[tuple[str, str]]:
        """``(canonical name, value)`` pairs in the order received."""
        headers = self._headers
        if headers is None or isinstance(headers, tuple):
            headers = self._expand()
        return headers

    @headers.setter
    def headers(self, headers: list[tuple[str, str]]) -> None:
        self._headers = headers

    @property
    def raw(self) -> bytes | None:
        """The bytes the message was parsed from, while it is unchanged."""
        return self._raw

    @raw.setter
    def raw(self, raw: bytes | None) -> None:
        if self._headers is None:
            self._expand()  # they are still in the old bytes
        self._raw = raw

    def compact(self) -> None:
        """
        Save memory on a message kept only in case it is needed again, such as the
        messages of a transaction waiting for retransmissions: parsed forms are
        dropped, and the headers are kept in the raw bytes of a parsed message or
        frozen in a tuple. They come back as they were when asked for.
        """
        self._cache.clear()
        if self._raw is not None:
            self._headers = None
        elif self._headers is not None:
            self._headers = tuple(self._headers)

    def _expand(self) -> HeaderList:
        """The headers of a compacted message, as a list again."""
        headers = self._headers
        if headers is None:
            from warden.sip.parser import parse_datagram

            assert self._raw is not None
            headers = parse_datagram(self._raw, len(self._raw)).headers
        expanded = HeaderList(headers)
        self._headers = expanded
        return expanded

    # -- generic header access ----------------------------------------------------

    def _names(self) -> HeaderNames | None:
        """
        The index of header names of a parsed message (its headers are a
        L{HeaderList}); None for a message built from a plain list, whose headers
        are scanned instead.
        """
        headers = self._headers
        if type(headers) is HeaderList:
            return headers.names()
        if isinstance(headers, list):
            return None
        return self._expand().names()

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (any spelling), or None."""
        name = USUAL_SPELLINGS.get(name) or canonical_name(name)
        headers = self._headers
        if type(headers) is HeaderList:  # the usual case, spelled out
            return (headers._names or headers.names()).first.get(name)
        names = self._names()
        if names is not None:
            return names.first.get(name)
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; comma-separated lists are split for list headers."""
        name = USUAL_SPELLINGS.get(name) or canonical_name(name)
        headers = self._headers
        names = (
            (headers._names or headers.names()) if type(headers) is HeaderList else self._names()
        )
        if names is None or name in names.repeated:
            values = [value for key, value in self.headers if key == name]
        else:
            value = names.first.get(name)
            if value is None:
                return []
            values = [value]
        if name in MULTI_VALUED:
            if len(values) == 1 and "," not in values[0]:
                return [values[0].strip()]  # as split_commas would
            out: list[str] = []
            for value in values:
                out.extend(split_commas(value))
            return out
        return values

    def count(self, name: str) -> int:
        """How many header lines named ``name`` the message has."""
        name = USUAL_SPELLINGS.get(name) or canonical_name(name)
        names = self._names()
        if names is not None and name not in names.repeated:
            return 1 if name in names.first else 0
        return sum(1 for key, _ in self.headers if key == name)

    def header_names(self) -> tuple[Collection[str], Collection[str]]:
        """The names of the headers present, and of those present more than once."""
        names = self._names()
        if names is None:
            names = HeaderNames(self.headers)
        return names.first.keys(), names.repeated

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` header with one value (appended if absent)."""
        name = canonical_name(name)
        for i, (key, _) in enumerate(self.headers):
            if key == name:
                self.headers[i] = (name, value)
                self.headers[i + 1 :] = [h for h in self.headers[i + 1 :] if h[0] != name]
                break
        else:
            self.headers.append((name, value))
        self._changed()

    def add(self, name: str, value: str, first: bool = False) -> None:
        """Add a ``name`` header, after the existing ones or before them."""
        name = canonical_name(name)
        if first:
            index = next((i for i, h in enumerate(self.headers) if h[0] == name), 0)
            self.headers.insert(index, (name, value))
        else:
            self.headers.append((name, value))
        self._changed()

    def remove(self, name: str) -> None:
        """Remove every ``name`` header."""
        name = canonical_name(name)
        self.headers = [h for h in self.headers if h[0] != name]
        self._changed()

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        """Replace the body (Content-Length is computed on serialisation)."""
        self.body = body
        if content_type is not None:
            self.set("Content-Type", content_type)
        self._changed()

    def _changed(self) -> None:
        if self._headers is None:
            self._expand()
        self._raw = None
        self._cache.clear()

    def _required(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise SipParseError(f"missing {name} header")
        return value

    # -- parsed accessors ---------------------------------------------------------

    @property
    def vias(self) -> list[Via]:
        """All Via values, top first."""
        vias: list[Via] | None = self._cache.get("via")
        if vias is None:
            vias = self._cache["via"] = [parse_via(v) for v in self.get_all("Via")]
        return vias

    @property
    def top_via(self) -> Via:
        """The topmost Via (raises SipParseError when there is none)."""
        vias = self.vias
        if not vias:
            raise SipParseError("missing Via header")
        return vias[0]

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        return self._required("Call-ID").strip()

    @property
    def cseq(self) -> CSeq:
        """The parsed CSeq."""
        cseq: CSeq | None = self._cache.get("cseq")
        if cseq is None:
            cseq = self._cache["cseq"] = parse_cseq(self._required("CSeq"))
        return cseq

    @property
    def from_(self) -> Address:
        """The parsed From header."""
        address: Address | None = self._cache.get("from")
        if address is None:
            address = self._cache["from"] = parse_address(self._required("From"))
        return address

    @property
    def to(self) -> Address:
        """The parsed To header."""
        address: Address | None = self._cache.get("to")
        if address is None:
            address = self._cache["to"] = parse_address(self._required("To"))
        return address

    @property
    def contacts(self) -> list[Address]:
        """Every Contact value, parsed."""
        contacts: list[Address] | None = self._cache.get("contact")
        if contacts is None:
            contacts = [parse_address(v) for v in self.get_all("Contact")]
            self._cache["contact"] = contacts
        return contacts

    def int_header(self, name: str, maximum: int = 2**32 - 1) -> int | None:
        """A header holding one non-negative integer (Expires, Max-Forwards...)."""
        value = self.get(name)
        if value is None:
            return None
        value = value.strip()
        number = parse_uint(value, maximum, max_digits=10)
        if number is None:
            raise SipParseError(f"bad {canonical_name(name)} value {value!r}")
        return number

    def header_lines(self) -> list[bytes]:
        """Header lines as they will be serialised (without Content-Length)."""
        return [
            f"{name}: {value}".encode("utf-8", "surrogateescape")
            for name, value in self.headers
            if name != "Content-Length"
        ]

    def start_line(self) -> str:  # pragma: no cover - overridden
        """The request or status line."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise (the original bytes when the message was not changed)."""
        if self.raw is not None:
            return self.raw
        headers = self.headers
        text = "\r\n".join(map(": ".join, headers))
        if "Content-Length" in text:  # rarely: leave the header out, exactly
            text = "\r\n".join([f"{n}: {v}" for n, v in headers if n != "Content-Length"])
        length = f"Content-Length: {len(self.body)}\r\n\r\n"
        lines = [self.start_line(), text, length] if text else [self.start_line(), length]
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body


class Request(Message):
    """A SIP request."""

    __slots__ = ("method", "uri_text")

    def __init__(
        self,
        method: str,
        uri: str | URI,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        raw: bytes | None = None,
    ) -> None:
        super().__init__(headers, body, raw)
        self.method = method
        self.uri_text = str(uri)
        if isinstance(uri, URI):
            self._cache["uri"] = uri

    is_request = True

    @property
    def uri(self) -> URI:
        """The parsed Request-URI."""
        uri: URI | None = self._cache.get("uri")
        if uri is None:
            uri = self._cache["uri"] = parse_uri(self.uri_text)
        return uri

    def start_line(self) -> str:
        """``METHOD uri SIP/2.0``."""
        return f"{self.method} {self.uri_text} SIP/2.0"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        raw: bytes | None = None,
    ) -> None:
        super().__init__(headers, body, raw)
        self.status = status
        self.reason = reason if reason is not None else REASONS.get(status, "Unknown")

    is_request = False

    def start_line(self) -> str:
        """``SIP/2.0 status reason``."""
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


_ECHOED = frozenset(("Via", "From", "To", "Call-ID", "CSeq"))


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """
    Build a response to ``request`` as RFC 3261 §8.2.6.2 says: Via, From, To,
    Call-ID and CSeq copied verbatim; a To tag added (when given and absent) to
    anything but 100. An unreadable To (answered 400) is echoed as it came.
    """
    copied = [header for header in request.headers if header[0] in _ECHOED]
    if to_tag is not None and status > 100:
        for i, (key, value) in enumerate(copied):
            if key == "To" and _lacks_to_tag(request):
                copied[i] = (key, f"{value};tag={to_tag}")
    copied.extend(headers)
    return Response(status, reason, copied)


def _lacks_to_tag(request: Request) -> bool:
    try:
        return request.to.tag is None
    except SipParseError:
        return False


def new_tag() -> str:
    """A random From/To tag (RFC 3261 §19.3: at least 32 bits of randomness)."""
    return random_hex(6)


def out_of_dialog_request(
    method: str,
    uri: str,
    transport: str,
    sent_by: str,
    branch: str,
    from_: str,
    to: str,
    domain: str,
    headers: Iterable[tuple[str, str]] = (),
) -> Request:
    """
    A request outside any dialog (RFC 3261 §8.1.1): a Via for ``transport``
    and ``sent_by`` with ``branch``, a new From tag and Call-ID (at
    ``domain``), CSeq 1, then ``headers``.

    Args:
        from_: the From value without its tag (``<sip:warden@pbx>``).
        to: the To value.
    """
    tag = new_tag()
    return Request(
        method,
        uri,
        [
            ("Via", f"SIP/2.0/{transport.upper()} {sent_by};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"{from_};tag={tag}"),
            ("To", to),
            ("Call-ID", f"{new_tag()}{tag}@{domain}"),
            ("CSeq", f"1 {method}"),
            *headers,
        ],
    )
