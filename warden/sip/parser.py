"""
SIP message parsing (RFC 3261 §7, §18.3): datagrams and byte streams.

``parse_datagram(data)`` parses one UDP datagram; extra octets after the body that
Content-Length announces are ignored (RFC 3261 §18.3, RFC 4475 §3.1.1.11).
``StreamFramer.feed(data)`` frames messages on TCP by Content-Length and refuses
headers or bodies larger than the configured maximum, so a peer that sends an
endless header or a huge body is cut off without memory growth.

Malformed input raises L{SipParseError}; when the start line and headers were
readable, the error carries the partial message so a 400 can still be built.
"""

from __future__ import annotations

import re

from warden.digits import parse_uint
from warden.errors import SipParseError
from warden.sip.headers import USUAL_SPELLINGS, canonical_name
from warden.sip.message import HeaderList, HeaderNames, Message, Request, Response

_METHOD_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_STATUS_RE = re.compile(r"SIP/2\.0 ([0-9]{3}) (.*)\Z", re.S)
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z")
DEFAULT_MAX_MESSAGE_BYTES = 65535


class UnsupportedVersion(SipParseError):
    """A request with a SIP version other than 2.0 (answered with 505)."""


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4 :]
    end = data.find(b"\n\n")
    if end >= 0:
        return data[:end], data[end + 2 :]
    return data, b""


def _parse_head(head: bytes) -> Message:
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    start = lines[0]
    if start.startswith("SIP/"):
        m = _STATUS_RE.match(start)
        if m is None:
            raise SipParseError(f"bad status line {start!r}")
        message: Message = Response(int(m.group(1)), m.group(2))
    else:
        parts = start.split(" ")
        if not _METHOD_RE.match(parts[0]):
            raise SipParseError(f"bad request line {start!r}")
        message = Request(parts[0], parts[1] if len(parts) > 1 else "")
        if len(parts) != 3 or not parts[1]:
            # Still read the headers so that a 400 can be routed (RFC 4475 §3.1.2.7).
            _read_headers(message, lines)
            raise SipParseError(f"bad request line {start!r}", message)
        if parts[2] != "SIP/2.0":
            _read_headers(message, lines)
            if _VERSION_RE.match(parts[2]):
                raise UnsupportedVersion(f"unsupported version {parts[2]!r}", message)
            raise SipParseError(f"bad request line {start!r}", message)
    _read_headers(message, lines)
    return message


def _read_headers(message: Message, lines: list[str]) -> None:
    # A plain list while reading (a partial message for a 400 sees what was read).
    headers: list[tuple[str, str]] = []
    message.headers = headers
    append = headers.append
    usual = USUAL_SPELLINGS.get
    first: dict[str, str] | None = {}  # the index of names, while each is seen once
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        full = usual(name)
        if full is not None and colon and first is not None and full not in first:
            # The common case: a usual spelling, not seen before, one lookup.
            value = value.strip()
            append((full, value))
            first[full] = value
            continue
        first = None
        if not line:
            continue
        if line[0] in " \t":
            if not headers:
                raise SipParseError("continuation line before any header", message)
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without colon {line[:80]!r}", message)
        try:
            headers.append((canonical_name(name.rstrip(" \t")), value.strip()))
        except SipParseError as e:
            raise SipParseError(e.reason, message) from None
    message.headers = HeaderList(headers, None if first is None else HeaderNames(first=first))


def _content_length(message: Message) -> int | None:
    values = message.get_all("Content-Length")
    if not values:
        return None
    if len(values) > 1:
        raise SipParseError("several Content-Length headers", message)
    value = values[0].strip()
    length = parse_uint(value, 2**32 - 1, max_digits=10)
    if length is None:
        raise SipParseError(f"bad Content-Length {value!r}", message)
    return length


def parse_datagram(data: bytes, max_size: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """
    Parse one datagram into a Request or Response.

    Raises SipParseError (with ``partial`` when possible) on malformed input.
    """
    if len(data) > max_size:
        raise SipParseError(f"message of {len(data)} bytes exceeds {max_size}")
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    head, body = _split_head(data)
    message = _parse_head(head)
    head_size = len(data) - len(body)
    length = _content_length(message)
    if length is not None:
        if length > len(body):
            raise SipParseError(
                f"Content-Length {length} exceeds the {len(body)} body bytes", message
            )
        body = body[:length]
    message.body = body
    message.raw = data[: head_size + len(body)]
    return message


class StreamFramer:
    """
    Frames SIP messages in a byte stream (RFC 3261 §18.3): Content-Length decides
    where each body ends. Keep-alive CRLFs between messages are skipped.

    ``feed(data)`` returns the complete messages; a framing error (oversized
    headers or body, bad Content-Length) raises SipParseError, after which the
    connection must be closed since the stream cannot be resynchronised.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._head: Message | None = None
        self._head_bytes = b""
        self._body_length = 0

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes; return every message now complete."""
        self.push(data)
        out: list[Message] = []
        while (message := self.next_message()) is not None:
            out.append(message)
        return out

    def push(self, data: bytes) -> None:
        """Add received bytes without framing them yet."""
        self._buffer += data

    def next_message(self) -> Message | None:
        """
        The next complete message, or None until more bytes arrive. Messages
        before a framing error are returned before the error is raised.
        """
        return self._next()

    @property
    def pending_bytes(self) -> int:
        """Bytes buffered towards an incomplete message."""
        return len(self._buffer)

    @property
    def mid_message(self) -> bool:
        """True from the first byte of a message to its last (keep-alive CRLFs aside)."""
        return self._head is not None or bool(self._buffer.lstrip(b"\r\n"))

    def _next(self) -> Message | None:
        buf = self._buffer
        if self._head is None:
            while buf[:2] == b"\r\n":
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_size:
                    raise SipParseError(f"header block exceeds {self.max_size} bytes")
                return None
            head = bytes(buf[:end])
            del buf[: end + 4]
            self._head = _parse_head(head)
            self._head_bytes = head
            length = _content_length(self._head) or 0
            if length + end > self.max_size:
                raise SipParseError(
                    f"message of {length + end} bytes exceeds {self.max_size}", self._head
                )
            self._body_length = length
        if len(buf) < self._body_length:
            return None
        message = self._head
        body = bytes(buf[: self._body_length])
        del buf[: self._body_length]
        message.body = body
        message.raw = self._head_bytes + b"\r\n\r\n" + body
        self._head = None
        return message
