"""
SDP (RFC 8866, which obsoletes RFC 4566) as a B2BUA anchoring media needs it.

Pure: bytes in, value objects out, bytes back; no I/O.

- ``parse_sdp(bytes)`` builds a L{SessionDescription}: the session-level lines, then
  one L{MediaDescription} per ``m=`` line, each holding its own lines in order. The
  lines the relay reads are parsed (``v=``, ``o=``, ``c=``, ``m=``, ``a=rtpmap``,
  ``a=rtcp``); every other line, unknown attributes and unknown type letters
  included, is kept untouched.
- ``SessionDescription.to_bytes()`` gives back exactly the bytes parsed when nothing
  was changed: every line keeps its own ending (CRLF, or a bare LF from sloppy
  phones), trailing blank lines are kept, and text that is not UTF-8 (``s=`` in
  the charset of ``a=charset``, RFC 8866 §6.10) survives the round trip.
- ``rewrite()`` points a description at the media relay: connection addresses
  (session and media level, ``IN IP4`` or ``IN IP6``), media ports and ``a=rtcp``
  (RFC 3605) change; codecs, ``ptime``, telephone-event and direction stay. An
  unspecified address (``0.0.0.0``, RFC 3264 §8.4 legacy hold) is kept, so the
  far phone still sees the hold.
- ``direction()``, ``is_hold()``, ``codecs()``, ``payload_formats()`` and
  ``ptime_ms()`` answer what the call controller asks about a stream.

Anything malformed raises L{SdpError}, which the B2BUA answers with 488.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from itertools import pairwise

import attrs

from warden.digits import parse_decimal, parse_uint
from warden.errors import WardenError
from warden.iplit import ip_address, ip_literal


class SdpError(WardenError):
    """
    A session description Warden cannot use (answered with 488 Not Acceptable Here).

    Args:
        reason: what is wrong, naming the line when there is one.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

#: Static RTP payload types of RFC 3551 §6 (Tables 4 and 5): name, clock rate, channels.
STATIC_PAYLOAD_TYPES: Mapping[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1), 3: ("GSM", 8000, 1), 4: ("G723", 8000, 1), 5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1), 7: ("LPC", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1),
    10: ("L16", 44100, 2), 11: ("L16", 44100, 1), 12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1), 14: ("MPA", 90000, 1), 15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1), 17: ("DVI4", 22050, 1), 18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1), 26: ("JPEG", 90000, 1), 28: ("nv", 90000, 1),
    31: ("H261", 90000, 1), 32: ("MPV", 90000, 1), 33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}  # fmt: skip

# Type letters whose value is free text and may use another charset (RFC 8866 §5).
_TEXT_KINDS = frozenset("siuepka")
_SESSION_ONLY = frozenset("vosuepztr")
# The type letter of a line (RFC 8866 §5: one lower-case letter).
_KINDS = frozenset("abcdefghijklmnopqrstuvwxyz")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_DIGITS = re.compile(r"[0-9]+")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
)
_M_PORT = re.compile(r"(\S+ +)([0-9]+)(/[0-9]+)?")
_RTCP_PORT = re.compile(r"([0-9]+)(.*)", re.DOTALL)
# The longest a=ptime read, in milliseconds (RFC 4566 §6).
_MAX_PTIME_MS = 10_000.0
# Largest a=rtpmap clock rate and channel count read (RFC 4566 §6, RFC 3551 §4).
_MAX_CLOCK_RATE = 2**32 - 1
_MAX_CHANNELS = 255


@attrs.frozen
class SdpLine:
    """
    One ``<type>=<value>`` line.

    Attributes:
        kind: the type letter (``v``, ``o``, ``c``, ``m``, ``a``, ...).
        value: everything after ``=``, without the line ending.
        eol: the line ending it was received with (``"\\r\\n"``, ``"\\n"``, or
            ``""`` for a last line without one); new lines use CRLF.
    """

    kind: str
    value: str
    eol: str = "\r\n"

    def text(self) -> str:
        """The line as it goes on the wire."""
        return f"{self.kind}={self.value}{self.eol}"


@attrs.frozen
class Connection:
    """
    Connection data, ``c=IN IP4 192.0.2.1`` (RFC 8866 §5.7).

    Attributes:
        addrtype: ``IP4`` or ``IP6``.
        address: an IP literal or a domain name.
        suffix: the multicast ``/ttl[/count]`` part, usually empty.
        nettype: always ``IN``.
    """

    addrtype: str
    address: str
    suffix: str = ""
    nettype: str = "IN"

    @property
    def unspecified(self) -> bool:
        """``0.0.0.0`` or ``::``: the RFC 2543 way of putting a call on hold."""
        ip = ip_literal(self.address)
        return ip is not None and ip.is_unspecified

    def value(self) -> str:
        """The ``c=`` value."""
        return f"{self.nettype} {self.addrtype} {self.address}{self.suffix}"


@attrs.frozen
class Codec:
    """
    A payload format of an RTP stream.

    Attributes:
        payload_type: 0-127.
        name: encoding name as declared (``PCMU``, ``opus``, ``telephone-event``).
        clock_rate: RTP timestamp rate in Hz.
        channels: audio channels.
        fmtp: the ``a=fmtp`` parameters, e.g. ``"0-16"`` for telephone-event.
    """

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None


@attrs.frozen
class MediaDescription:
    """
    One media section: its ``m=`` line and every line up to the next one.

    Attributes:
        media: ``audio``, ``video``, ...
        port: the transport port; 0 means the stream is disabled (RFC 3264 §5.1).
        port_count: the ``/<number of ports>`` of the ``m=`` line, if any.
        proto: ``RTP/AVP``, ``RTP/SAVP``, ``UDP/TLS/RTP/SAVPF``, ...
        formats: the format list; payload type numbers for RTP.
        lines: every line of the section, the ``m=`` line first.
        connections: the section's own ``c=`` lines.
    """

    media: str
    port: int
    port_count: int | None
    proto: str
    formats: tuple[str, ...]
    lines: tuple[SdpLine, ...]
    connections: tuple[Connection, ...]

    @property
    def is_rtp(self) -> bool:
        """Whether the transport protocol is RTP-based (RFC 3551 and its profiles)."""
        return _is_rtp(self.proto)

    @functools.cached_property
    def _attribute_pairs(self) -> tuple[tuple[str, str | None], ...]:
        # Read once per section: the relay, the controller and the records ask often.
        return tuple(_attributes(self.lines))

    def attributes(self) -> list[tuple[str, str | None]]:
        """``(name, value)`` of each ``a=`` line in order; value None for flags."""
        return list(self._attribute_pairs)

    def attribute_values(self, name: str) -> list[str]:
        """Values of every ``a=<name>`` line (``""`` for a flag), in order."""
        return _values_named(self._attribute_pairs, name)

    def has_attribute(self, name: str) -> bool:
        """Whether an ``a=<name>`` line is present, with or without a value."""
        wanted = name.lower()
        return any(n == wanted for n, _ in self._attribute_pairs)


@attrs.frozen
class SessionDescription:
    """
    A parsed SDP body.

    Attributes:
        lines: the session-level lines, ``v=`` first.
        media: the media sections in order (their index is the "media index").
        connections: the session-level ``c=`` lines.
        trailer: blank lines after the last line, kept for byte-exact output.
    """

    lines: tuple[SdpLine, ...]
    media: tuple[MediaDescription, ...]
    connections: tuple[Connection, ...]
    trailer: str = ""

    @property
    def origin(self) -> str:
        """The ``o=`` value; it changes version when the description changes (RFC 3264 §8)."""
        return next(line.value for line in self.lines if line.kind == "o")

    def attribute_values(self, name: str) -> list[str]:
        """Values of every session-level ``a=<name>`` line, in order."""
        return _attribute_values(self.lines, name)

    def connection_for(self, index: int) -> Connection | None:
        """The connection data in force for media ``index``: its own, else the session's."""
        own = self.media[index].connections
        if own:
            return own[0]
        return self.connections[0] if self.connections else None

    def to_bytes(self) -> bytes:
        """Serialise; the exact bytes parsed when nothing was changed."""
        parts = [line.text() for line in self.lines]
        for media in self.media:
            parts.extend(line.text() for line in media.lines)
        parts.append(self.trailer)
        return "".join(parts).encode("utf-8", "surrogateescape")


# -- parsing -------------------------------------------------------------------------


#: How many descriptions L{parse_sdp} keeps, by their bytes, and the largest
#: kept (a phone's description is a few hundred bytes; a larger one is parsed
#: each time rather than held).
PARSED_KEPT = 64
PARSED_MAX_BYTES = 4096

# Descriptions parsed lately. A call reads the same body again within moments (the
# B2BUA's codec for the call record after the relay's rewrite, a re-INVITE or a
# handover repeating it); the values are immutable, so one parse serves them all.
# Bounded in count and size, oldest out first; a body that fails to parse is
# not kept.
_parsed: dict[bytes, SessionDescription] = {}


def parse_sdp(data: bytes) -> SessionDescription:
    """
    Parse an SDP body (the same bytes parsed lately: the same value again).

    Raises:
        SdpError: missing ``v=``/``o=``/``s=``, a bad ``m=`` or ``c=`` line, a port
            out of range, a non-numeric field, control characters or binary garbage,
            or a media stream with a port but no connection address.
    """
    if type(data) is not bytes:
        return _parse_sdp(data)
    found = _parsed.get(data)
    if found is not None:
        return found
    sdp = _parse_sdp(data)
    _remember(data, sdp)
    return sdp


def serialised(sdp: SessionDescription) -> bytes:
    """
    ``sdp.to_bytes()``, kept as what L{parse_sdp} gives for those bytes. Only for
    descriptions built from parsed ones by L{rewrite} or L{with_media_lines},
    whose bytes parse to an equal value: reading them again (the codec for the
    call record) then costs no parse.
    """
    data = sdp.to_bytes()
    _remember(data, sdp)
    return data


def _remember(data: bytes, sdp: SessionDescription) -> None:
    if len(data) > PARSED_MAX_BYTES:
        return
    if len(_parsed) >= PARSED_KEPT:
        _parsed.pop(next(iter(_parsed)), None)
    _parsed[data] = sdp


def _parse_sdp(data: bytes) -> SessionDescription:
    text = data.decode("utf-8", "surrogateescape")
    raw_lines, trailer = _split_lines(text)
    if not raw_lines:
        raise SdpError("empty session description")
    lines = [_parse_line(number, body, eol) for number, (body, eol) in enumerate(raw_lines, 1)]
    if lines[0].kind != "v" or lines[0].value != "0":
        raise SdpError("the first line must be v=0")
    starts = [i for i, line in enumerate(lines) if line.kind == "m"] + [len(lines)]
    session_lines = tuple(lines[: starts[0]])
    _check_session(session_lines)
    connections = _connections(session_lines)
    media = tuple(_build_media(tuple(lines[a:b])) for a, b in pairwise(starts))
    for index, section in enumerate(media):
        if section.port != 0 and not section.connections and not connections:
            raise SdpError(f"media {index} has a port but no c= line")
    return SessionDescription(session_lines, media, connections, trailer)


def _split_lines(text: str) -> tuple[list[tuple[str, str]], str]:
    # Each line with its own ending: CRLF, a bare LF, or none for a last line
    # without one (a CR elsewhere stays in the line, where it is refused).
    pieces: list[tuple[str, str]] = []
    *ended, last = text.split("\n")
    for body in ended:
        if body.endswith("\r"):
            pieces.append((body[:-1], "\r\n"))
        else:
            pieces.append((body, "\n"))
    if last:
        pieces.append((last, ""))
    trailer = ""
    while pieces and pieces[-1][0] == "":
        body, eol = pieces.pop()
        trailer = eol + trailer
    return pieces, trailer


def _parse_line(number: int, body: str, eol: str) -> SdpLine:
    if body[1:2] != "=" or body[:1] not in _KINDS:
        raise SdpError(f"line {number} is not <type>=<value>")
    kind, value = body[0], body[2:]
    if _CONTROL.search(value):
        raise SdpError(f"line {number} contains control characters")
    if kind not in _TEXT_KINDS and not value.isascii():
        raise SdpError(f"line {number} ({kind}=) is not ASCII")
    return SdpLine(kind, value, eol)


def _check_session(lines: tuple[SdpLine, ...]) -> None:
    for kind in "vos":
        count = sum(1 for line in lines if line.kind == kind)
        if count != 1:
            problem = "missing" if count == 0 else "repeated"
            raise SdpError(f"{kind}= line {problem} in the session section")
    origin = next(line.value for line in lines if line.kind == "o").split(" ")
    if len(origin) != 6:
        raise SdpError("o= must have 6 fields")
    if not (_DIGITS.fullmatch(origin[1]) and _DIGITS.fullmatch(origin[2])):
        raise SdpError("o= session id and version must be numeric")
    if origin[5] != "-":  # seen from some gateways; the address is informative only
        _parse_address(origin[3], origin[4], origin[5], "o=")
    for line in lines:
        if line.kind == "t":
            fields = line.value.split()
            if len(fields) != 2 or not all(_DIGITS.fullmatch(f) for f in fields):
                raise SdpError("t= must be two numbers")


def _connections(lines: tuple[SdpLine, ...]) -> tuple[Connection, ...]:
    return tuple(parse_connection(line.value) for line in lines if line.kind == "c")


def parse_connection(value: str) -> Connection:
    """Parse a ``c=`` value; raise SdpError when it is not ``IN IP4|IP6 <address>``."""
    fields = value.split(" ")
    if len(fields) != 3:
        raise SdpError(f"bad c= line {value!r}")
    nettype, addrtype, rest = fields
    address, slash, suffix = rest.partition("/")
    if slash:
        parts = suffix.split("/")
        if len(parts) > (2 if addrtype == "IP4" else 1) or not all(
            _DIGITS.fullmatch(p) for p in parts
        ):
            raise SdpError(f"bad c= multicast suffix {value!r}")
    _parse_address(nettype, addrtype, address, "c=")
    return Connection(addrtype, address, slash + suffix, nettype)


def _parse_address(nettype: str, addrtype: str, address: str, where: str) -> None:
    if nettype != "IN":
        raise SdpError(f"{where} network type {nettype!r} is not IN")
    if addrtype not in ("IP4", "IP6"):
        raise SdpError(f"{where} address type {addrtype!r} is not IP4 or IP6")
    if ":" in address or re.fullmatch(r"[0-9.]+", address):
        ip = ip_literal(address)
        if ip is None:
            raise SdpError(f"{where} address {address!r} is not an IP address")
        if ip.version != (4 if addrtype == "IP4" else 6):
            raise SdpError(f"{where} address {address!r} is not {addrtype}")
    elif not _HOSTNAME.fullmatch(address):
        raise SdpError(f"{where} address {address!r} is neither an IP address nor a name")


def _build_media(lines: tuple[SdpLine, ...]) -> MediaDescription:
    fields = lines[0].value.split()
    if len(fields) < 4:
        raise SdpError(f"bad m= line {lines[0].value!r}: needs media, port, proto, formats")
    media, port_text, proto = fields[0], fields[1], fields[2]
    if not _TOKEN.fullmatch(media) or not _TOKEN.fullmatch(proto.replace("/", "")):
        raise SdpError(f"bad m= line {lines[0].value!r}")
    port_text, slash, count_text = port_text.partition("/")
    port = parse_uint(port_text, 65535)
    count = parse_uint(count_text, 65535) if slash else None
    if port is None or (slash and count is None):
        raise SdpError(f"m= port {fields[1]!r} is not a number 0-65535")
    if count == 0:
        raise SdpError("m= number of ports must be at least 1")
    formats = tuple(fields[3:])
    if _is_rtp(proto):
        for fmt in formats:
            if parse_uint(fmt, 127, max_digits=3) is None:
                raise SdpError(f"m= payload type {fmt!r} is not 0-127")
    for line in lines[1:]:
        if line.kind in _SESSION_ONLY:
            raise SdpError(f"{line.kind}= line inside a media section")
    section = MediaDescription(media, port, count, proto, formats, lines, _connections(lines[1:]))
    for value in section.attribute_values("rtpmap"):
        _parse_rtpmap(value)
    for value in section.attribute_values("rtcp"):
        parse_rtcp_attribute(value)
    return section


def _parse_rtpmap(value: str) -> tuple[int, str, int, int]:
    pt_text, _, encoding = value.partition(" ")
    parts = encoding.strip().split("/")
    pt = parse_uint(pt_text, 127, max_digits=3)
    rate = parse_uint(parts[1], _MAX_CLOCK_RATE) if len(parts) in (2, 3) else None
    channels = parse_uint(parts[2], _MAX_CHANNELS) if len(parts) == 3 else 1
    if pt is None or rate is None or channels is None or not parts[0]:
        raise SdpError(f"bad a=rtpmap:{value}")
    return pt, parts[0], rate, channels


def parse_rtcp_attribute(value: str) -> tuple[int, Connection | None]:
    """
    Parse an ``a=rtcp`` value, ``<port> [IN IP4|IP6 <address>]`` (RFC 3605 §2.1),
    into the port and the connection (None when only a port is given).
    """
    match = _RTCP_PORT.fullmatch(value)
    port = None if match is None else parse_uint(match.group(1), 65535)
    if match is None or port is None:
        raise SdpError(f"bad a=rtcp:{value}")
    rest = match.group(2)
    if not rest:
        return port, None
    if not rest.startswith(" "):
        raise SdpError(f"bad a=rtcp:{value}")
    return port, parse_connection(rest[1:])


def _attributes(lines: tuple[SdpLine, ...]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for line in lines:
        if line.kind == "a":
            name, colon, value = line.value.partition(":")
            out.append((name.lower(), value if colon else None))
    return out


def _attribute_values(lines: tuple[SdpLine, ...], name: str) -> list[str]:
    return _values_named(_attributes(lines), name)


def _values_named(pairs: Iterable[tuple[str, str | None]], name: str) -> list[str]:
    wanted = name.lower()
    return [v or "" for n, v in pairs if n == wanted]


def _is_rtp(proto: str) -> bool:
    return "RTP/" in proto.upper()


# -- questions about a stream ----------------------------------------------------------


def payload_formats(media: MediaDescription) -> list[Codec]:
    """
    The stream's payload formats in ``m=`` order: from ``a=rtpmap`` (with
    ``a=fmtp``), else the static table of RFC 3551. Dynamic payload types without
    an ``a=rtpmap`` are left out.
    """
    if not media.is_rtp:
        return []
    rtpmaps: dict[int, tuple[str, int, int]] = {}
    for value in media.attribute_values("rtpmap"):
        pt, name, rate, channels = _parse_rtpmap(value)
        rtpmaps.setdefault(pt, (name, rate, channels))
    fmtps: dict[int, str] = {}
    for value in media.attribute_values("fmtp"):
        pt_text, _, params = value.partition(" ")
        fmtp_pt = parse_uint(pt_text, 127, max_digits=3)
        if fmtp_pt is not None:
            fmtps.setdefault(fmtp_pt, params.strip())
    out = []
    for fmt in media.formats:
        pt = int(fmt)
        known = rtpmaps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
        if known is not None:
            out.append(Codec(pt, known[0], known[1], known[2], fmtps.get(pt)))
    return out


def codecs(media: MediaDescription) -> list[str]:
    """Encoding names of the stream's payload formats, in ``m=`` order."""
    return [codec.name for codec in payload_formats(media)]


def telephone_events(media: MediaDescription) -> list[Codec]:
    """The RFC 4733 ``telephone-event`` formats offered (``fmtp`` lists the events)."""
    return [c for c in payload_formats(media) if c.name.lower() == "telephone-event"]


def relayed_stream(sdp: SessionDescription) -> int | None:
    """
    Index of the stream a one-stream relay carries: the first enabled RTP audio
    stream, else the first enabled RTP stream of any kind; None when there is none.
    """
    enabled = [i for i, m in enumerate(sdp.media) if m.port != 0 and m.is_rtp]
    audio = [i for i in enabled if sdp.media[i].media.lower() == "audio"]
    chosen = audio or enabled
    return chosen[0] if chosen else None


def codecs_of(data: bytes) -> list[str]:
    """Codec names of the relayed stream of an SDP body (for call records); SdpError if bad."""
    sdp = parse_sdp(data)
    index = relayed_stream(sdp)
    return [] if index is None else codecs(sdp.media[index])


def ptime_ms(media: MediaDescription) -> float | None:
    """The ``a=ptime`` packet time in milliseconds, or None when absent or unreadable."""
    for value in media.attribute_values("ptime"):
        milliseconds = parse_decimal(value.strip(), _MAX_PTIME_MS)
        return milliseconds or None
    return None


def direction(media: MediaDescription, session: SessionDescription | None = None) -> str:
    """
    The stream's effective direction, one of L{DIRECTIONS}.

    The media-level attribute wins over the session-level one, and the default is
    ``sendrecv`` (RFC 8866 §6.7). A disabled stream (port 0) is ``inactive``. An
    unspecified connection address (``c=0.0.0.0``, the RFC 2543 hold that RFC 3264
    §8.4 still asks answerers to understand) means the sender will not receive, so
    ``sendrecv`` becomes ``sendonly`` and ``recvonly`` becomes ``inactive``.
    """
    if media.port == 0:
        return "inactive"
    found = _direction_attribute(media.lines)
    if found is None and session is not None:
        found = _direction_attribute(session.lines)
    result = found or "sendrecv"
    connection = media.connections[0] if media.connections else None
    if connection is None and session is not None and session.connections:
        connection = session.connections[0]
    if connection is not None and connection.unspecified:
        result = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(result, result)
    return result


def _direction_attribute(lines: tuple[SdpLine, ...]) -> str | None:
    for name, value in _attributes(lines):
        if value is None and name in DIRECTIONS:
            return name
    return None


def is_hold(media: MediaDescription, session: SessionDescription | None = None) -> bool:
    """Whether the sender of this stream put it on hold: ``sendonly`` or ``inactive``."""
    return direction(media, session) in ("sendonly", "inactive")


# -- rewriting ------------------------------------------------------------------------


def rewrite(
    sdp: SessionDescription,
    address: str,
    ports: Mapping[int, int],
    rtcp_ports: Mapping[int, int] | None = None,
) -> SessionDescription:
    """
    Point ``sdp`` at ``address``: what the relay does before passing it on.

    Args:
        sdp: the description as received.
        address: the relay's IPv4 or IPv6 address; ``c=`` lines become
            ``IN IP4|IP6 <address>`` unless they hold an unspecified address (hold).
        ports: media index -> new port. A stream with a port that is not listed
            is disabled (port 0), since nothing would carry it any more; a stream
            that was already disabled stays so. A new port drops ``/<count>``.
        rtcp_ports: media index -> new ``a=rtcp`` port (default: port + 1); the
            ``a=rtcp`` address, when present, becomes ``address`` too.

    Raises:
        ValueError: ``address`` is not an IP literal, or a port is out of range.
    """
    addrtype = "IP6" if ip_address(address).version == 6 else "IP4"
    for port in [*ports.values(), *(rtcp_ports or {}).values()]:
        if not 0 < port <= 65535:
            raise ValueError(f"port {port} out of range")
    session_lines = tuple(_rewrite_c(line, addrtype, address) for line in sdp.lines)
    media = []
    for index, section in enumerate(sdp.media):
        if section.port == 0:
            media.append(section)
        elif index not in ports:
            media.append(_with_port(section, 0))
        else:
            rtcp = (rtcp_ports or {}).get(index, ports[index] + 1)
            media.append(_rewrite_media(section, addrtype, address, ports[index], rtcp))
    return SessionDescription(
        session_lines, tuple(media), _connections(session_lines), sdp.trailer
    )


def with_media_lines(
    sdp: SessionDescription, index: int, lines: tuple[SdpLine, ...]
) -> SessionDescription:
    """
    ``sdp`` with media section ``index`` made of ``lines`` (its ``m=`` line first).

    Raises:
        SdpError: the new section is malformed.
        IndexError: there is no media section ``index``.
    """
    media = list(sdp.media)
    media[index] = _build_media(lines)
    return attrs.evolve(sdp, media=tuple(media))


def _rewrite_c(line: SdpLine, addrtype: str, address: str) -> SdpLine:
    if line.kind != "c" or parse_connection(line.value).unspecified:
        return line
    return attrs.evolve(line, value=f"IN {addrtype} {address}")


# The rewritten sections below are built from a section already checked (parsed)
# with lines Warden writes itself, so they skip the parser's checks; a test holds
# that parsing their bytes gives the same value.


def _m_line_with_port(section: MediaDescription, port: int) -> SdpLine:
    first = section.lines[0]
    value = _M_PORT.sub(lambda m: f"{m.group(1)}{port}", first.value, count=1)
    return attrs.evolve(first, value=value)


def _with_port(section: MediaDescription, port: int) -> MediaDescription:
    lines = (_m_line_with_port(section, port), *section.lines[1:])
    return attrs.evolve(section, port=port, port_count=None, lines=lines)


def _rewrite_media(
    section: MediaDescription, addrtype: str, address: str, port: int, rtcp_port: int
) -> MediaDescription:
    lines = []
    for line in section.lines[1:]:
        if line.kind == "a" and line.value.lower().startswith("rtcp:"):
            _, connection = parse_rtcp_attribute(line.value[5:])
            value = f"rtcp:{rtcp_port}"
            if connection is not None:
                kept = connection.unspecified
                value += " " + (connection.value() if kept else f"IN {addrtype} {address}")
            line = attrs.evolve(line, value=value)
        lines.append(_rewrite_c(line, addrtype, address))
    rest = tuple(lines)
    return attrs.evolve(
        section,
        port=port,
        port_count=None,
        lines=(_m_line_with_port(section, port), *rest),
        connections=_connections(rest),
    )
