"""
SDES keys for SRTP in SDP (RFC 4568): reading, choosing and writing ``a=crypto``.

Pure: strings and value objects in and out, no I/O. Warden understands the two
crypto-suites every SDES phone offers, ``AES_CM_128_HMAC_SHA1_80`` and
``AES_CM_128_HMAC_SHA1_32`` (RFC 4568 §6.2), each with one inline master key
and salt (30 bytes, RFC 3711 §8.2). An ``a=crypto`` line Warden cannot use
(another suite, several keys or an MKI, session parameters such as
``UNENCRYPTED_SRTP``, a malformed key) is ignored as RFC 4568 §7.1.2 asks of
an answerer; an offer with none left cannot be accepted as SRTP.

Keys are secrets: L{Crypto}'s key is left out of its ``repr`` and nothing here
logs.
"""

from __future__ import annotations

import base64
import binascii
import secrets

import attrs

from warden.digits import parse_uint
from warden.sip import sdp as sdplib

#: The suites Warden accepts and offers, preferred first.
SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
#: Master key (16 bytes) and master salt (14 bytes) of both suites (RFC 4568 §6.2).
KEY_LENGTH = 30
#: The secure RTP profiles (RFC 3711 §12; SAVPF: RFC 5124) and their plain twins.
SECURE_PROFILES = {"RTP/SAVP": "RTP/AVP", "RTP/SAVPF": "RTP/AVPF"}
PLAIN_PROFILES = {plain: secure for secure, plain in SECURE_PROFILES.items()}
# RFC 4568 §9.1: tag = 1*9DIGIT.
_MAX_TAG = 999_999_999


@attrs.frozen
class Crypto:
    """
    One ``a=crypto`` line: ``<tag> <suite> inline:<base64 key||salt>``.

    Attributes:
        tag: the line's tag; the answer repeats the tag it accepts (RFC 4568 §5.1).
        suite: one of L{SUITES}.
        key: master key followed by master salt, L{KEY_LENGTH} bytes; the key
            the *sender of the SDP* encrypts with (RFC 4568 §6.1).
    """

    tag: int
    suite: str
    key: bytes = attrs.field(repr=False)

    def value(self) -> str:
        """The attribute value, without ``a=crypto:``."""
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode('ascii')}"


def new_key() -> bytes:
    """A fresh master key and salt from the operating system's generator."""
    return secrets.token_bytes(KEY_LENGTH)


def parse_crypto(value: str) -> Crypto | None:
    """
    The ``a=crypto`` value ``value`` (RFC 4568 §9.1), or None when Warden cannot
    use it: an unknown suite, more than one key, an MKI, a lifetime below 2^31
    packets, session parameters, a tag or key that is malformed.
    """
    fields = value.split()
    if len(fields) != 3:
        return None  # missing parts, or session parameters (RFC 4568 §6.3)
    tag_text, suite, params = fields
    tag = parse_uint(tag_text, _MAX_TAG, max_digits=9)
    if tag is None or suite not in SUITES or ";" in params:
        return None
    method, colon, info = params.partition(":")
    if method != "inline" or not colon:
        return None
    key_text, *extra = info.split("|")
    if len(extra) > 1 or (extra and not _long_lifetime(extra[0])):
        return None  # an MKI (RFC 4568 §6.1), or a lifetime Warden would outlive
    try:
        key = base64.b64decode(key_text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        return None
    if len(key) != KEY_LENGTH:
        return None
    return Crypto(tag, suite, key)


def _long_lifetime(text: str) -> bool:
    """Whether a key lifetime (``2^31`` or decimal) covers at least 2^31 packets."""
    if text.startswith("2^"):
        exponent = parse_uint(text[2:], 64, max_digits=2)
        return exponent is not None and exponent >= 31
    packets = parse_uint(text, 2**64, max_digits=20)
    return packets is not None and packets >= 2**31


def offered_cryptos(media: sdplib.MediaDescription) -> list[Crypto]:
    """The usable ``a=crypto`` lines of a media section, in the sender's order."""
    found = (parse_crypto(v) for v in media.attribute_values("crypto"))
    return [c for c in found if c is not None]


def choose(offered: list[Crypto]) -> Crypto | None:
    """The offered line Warden accepts: the most preferred suite, first of its kind."""
    for suite in SUITES:
        for crypto in offered:
            if crypto.suite == suite:
                return crypto
    return None


def is_secure(proto: str) -> bool:
    """Whether ``proto`` is SDES-keyed SRTP (``RTP/SAVP``, ``RTP/SAVPF``)."""
    return proto.upper() in SECURE_PROFILES


def is_plain(proto: str) -> bool:
    """Whether ``proto`` is plain RTP (``RTP/AVP``, ``RTP/AVPF``)."""
    return proto.upper() in PLAIN_PROFILES


def secure_profile(proto: str) -> str:
    """The SRTP profile matching ``proto`` (``RTP/AVP`` -> ``RTP/SAVP``); others unchanged."""
    upper = proto.upper()
    return PLAIN_PROFILES.get(upper, upper if upper in SECURE_PROFILES else proto)


def plain_profile(proto: str) -> str:
    """The plain RTP profile matching ``proto`` (``RTP/SAVP`` -> ``RTP/AVP``); others unchanged."""
    upper = proto.upper()
    return SECURE_PROFILES.get(upper, upper if upper in PLAIN_PROFILES else proto)


def with_crypto(
    sdp: sdplib.SessionDescription, index: int, proto: str, cryptos: list[Crypto]
) -> sdplib.SessionDescription:
    """
    ``sdp`` with media ``index`` using transport ``proto``, its ``a=crypto``
    lines replaced by ``cryptos`` (written after the section's other lines).
    """
    section = sdp.media[index]
    first = section.lines[0]
    fields = first.value.split()
    if (
        not cryptos
        and fields[2] == proto
        and " ".join(fields) == first.value
        and all(map(_kept_as_is, section.lines))
    ):
        # Plain RTP staying plain (most calls): what follows would rebuild the same section.
        return sdp
    fields[2] = proto
    eol = first.eol or "\r\n"
    kept = [
        attrs.evolve(line, eol=line.eol or eol)
        for line in section.lines[1:]
        if not (line.kind == "a" and line.value.lower().startswith("crypto:"))
    ]
    added = [sdplib.SdpLine("a", f"crypto:{c.value()}", eol) for c in cryptos]
    lines = (attrs.evolve(first, value=" ".join(fields), eol=eol), *kept, *added)
    return sdplib.with_media_lines(sdp, index, lines)


def _kept_as_is(line: sdplib.SdpLine) -> bool:
    """Whether L{with_crypto} writes ``line`` back unchanged: not ``a=crypto``, with an eol."""
    return bool(line.eol) and not (line.kind == "a" and line.value.lower().startswith("crypto:"))
