"""
SIP requests and responses (RFC 3261 §7).

A message keeps its headers as ``(canonical name, raw value)`` pairs in the order
received and parses the ones it is asked about, once. The bytes a message was
parsed from are kept in ``raw`` so that relaying does not re-serialise needlessly;
any change to the headers or body drops them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from warden.errors import SipParseError
from warden.sip.headers import (
    MULTI_VALUED,
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


class Message:
    """Common part of requests and responses."""

    __slots__ = ("_headers", "body", "raw", "_cache")

    def __init__(
        self,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        raw: bytes | None = None,
    ) -> None:
        self._headers: list[tuple[str, str]] | None = headers if headers is not None else []
        self.body = body
        self.raw = raw
        self._cache: dict[str, Any] = {}

    @property
    def headers(self) -> list[tuple[str, str]]:
        """``(canonical name, value)`` pairs in the order received."""
        headers = self._headers
        if headers is None:  # compacted: parse them again from the raw bytes
            from warden.sip.parser import parse_datagram

            assert self.raw is not None
            headers = self._headers = parse_datagram(self.raw, len(self.raw)).headers
        return headers

    @headers.setter
    def headers(self, headers: list[tuple[str, str]]) -> None:
        self._headers = headers

    # -- generic header access ----------------------------------------------------

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (any spelling), or None."""
        name = canonical_name(name)
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; comma-separated lists are split for list headers."""
        name = canonical_name(name)
        values = [value for key, value in self.headers if key == name]
        if name in MULTI_VALUED:
            out: list[str] = []
            for value in values:
                out.extend(split_commas(value))
            return out
        return values

    def count(self, name: str) -> int:
        """How many header lines named ``name`` the message has."""
        name = canonical_name(name)
        return sum(1 for key, _ in self.headers if key == name)

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

    def compact(self) -> None:
        """
        Keep only the bytes of a message that was parsed and not changed since:
        headers and their parsed forms are parsed again if asked for. For a
        message kept only in case it is needed again, such as the request of a
        transaction that waits for retransmissions.
        """
        self._cache.clear()
        if self.raw is not None:
            self._headers = None

    def _changed(self) -> None:
        self.raw = None
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
        if not value.isdigit() or len(value) > 10 or int(value) > maximum:
            raise SipParseError(f"bad {canonical_name(name)} value {value!r}")
        return int(value)

    def header_lines(self) -> list[bytes]:
        """Header lines as they will be serialised (without Content-Length)."""
        return [
            f"{name}: {value}".encode() for name, value in self.headers if name != "Content-Length"
        ]

    def start_line(self) -> str:  # pragma: no cover - overridden
        """The request or status line."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise (the original bytes when the message was not changed)."""
        if self.raw is not None:
            return self.raw
        lines = [self.start_line()]
        lines += [f"{name}: {value}" for name, value in self.headers if name != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}\r\n\r\n")
        return "\r\n".join(lines).encode() + self.body


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

    __slots__ = ("status", "reason")

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


_ECHOED = ("Via", "From", "To", "Call-ID", "CSeq")


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
    anything but 100.
    """
    copied = [(k, v) for k, v in request.headers if k in _ECHOED]
    if to_tag is not None and status > 100:
        for i, (key, value) in enumerate(copied):
            if key == "To" and request.to.tag is None:
                copied[i] = (key, f"{value};tag={to_tag}")
    copied.extend(headers)
    return Response(status, reason, copied)


def new_tag() -> str:
    """A random From/To tag (RFC 3261 §19.3: at least 32 bits of randomness)."""
    return os.urandom(6).hex()
