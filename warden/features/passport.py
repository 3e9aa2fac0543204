"""
SHAKEN PASSporTs (RFC 8225, RFC 8588, ATIS-1000074) in SIP ``Identity``
headers (RFC 8224): telephone-number normalisation, the attestation level,
signing with ES256 and the strict parsing and checking of a received header.

Pure: no reactor, no network. Time comes in as ``now`` (seconds since the
epoch). Every refusal is an L{IdentityError} carrying the RFC 8224 response
(status and reason phrase), a bounded ``reason`` label for metrics, and a
human ``detail`` for logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

__all__ = [
    "MAX_AGE",
    "IdentityError",
    "IdentityHeader",
    "Passport",
    "attestation",
    "check_passport",
    "decode_passport",
    "identity_header",
    "matches_owned",
    "normalise_tn",
    "parse_identity",
    "sign_passport",
    "verify_signature",
]

#: Seconds a PASSporT's ``iat`` may differ from now (RFC 8224 §6.2.1, ATIS-1000074).
MAX_AGE = 60
#: Longest Identity header value accepted (a SHAKEN one is about 500 bytes).
MAX_HEADER = 4096
_MAX_TNS = 16
_TN_SEPARATORS = str.maketrans("", "", "-.() ")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_PARAM = re.compile(r"^([A-Za-z0-9_.!%*+`'~-]+)(?:=(.*))?$")

# RFC 8224 §6.2.2 responses.
INVALID = (438, "Invalid Identity Header")
BAD_INFO = (436, "Bad Identity Info")
UNSUPPORTED = (437, "Unsupported Credential")
STALE = (403, "Stale Date")


class IdentityError(Exception):
    """
    An Identity header that does not verify.

    Args:
        response: ``(status, reason phrase)`` a rejecting policy answers with.
        reason: a metric label from a fixed set (``signature``, ``stale``...).
        detail: what is wrong, for the log (never secret).
    """

    def __init__(self, response: tuple[int, str], reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.phrase = response
        self.reason = reason
        self.detail = detail


def normalise_tn(text: str) -> str | None:
    """
    A telephone number as SHAKEN compares it (RFC 8224 §8.3): the user part
    without URI parameters, visual separators or a leading ``+``; None unless
    1-15 ASCII digits remain.
    """
    number = text.split(";", 1)[0].translate(_TN_SEPARATORS)
    number = number.removeprefix("+")
    if not (0 < len(number) <= 15 and number.isascii() and number.isdigit()):
        return None
    return number


def matches_owned(number: str, patterns: Sequence[str]) -> bool:
    """Whether the normalised ``number`` matches a ``tn_owned`` pattern (``x``: any digit)."""
    for pattern in patterns:
        if len(pattern) == len(number) and all(
            p in "xX" or p == n for p, n in zip(pattern, number, strict=True)
        ):
            return True
    return False


def attestation(authenticated: bool, number_owned: bool) -> str:
    """
    The attestation level (ATIS-1000074 §5.2.3): A for an authenticated caller
    using a number this PBX owns, B for an authenticated caller using another
    number, C for a caller Warden did not authenticate (a call from outside).
    """
    if not authenticated:
        return "C"
    return "A" if number_owned else "B"


@attrs.frozen
class Passport:
    """
    A SHAKEN PASSporT's contents.

    Attributes:
        x5u: the certificate URL (header).
        attest: ``A``, ``B`` or ``C``.
        orig: the calling TN (normalised).
        dest: the called TNs (normalised).
        iat: issued at, whole seconds since the epoch.
        origid: the origination identifier (a UUID).
    """

    x5u: str
    attest: str
    orig: str
    dest: tuple[str, ...]
    iat: int
    origid: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise IdentityError(INVALID, "malformed", "a token part is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise IdentityError(INVALID, "malformed", "a token part is not base64url") from None


def _canonical(value: dict[str, Any]) -> bytes:
    """JSON with keys sorted and no white space (RFC 8225 §9)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("ascii")


def sign_passport(
    key: ec.EllipticCurvePrivateKey,
    x5u: str,
    attest: str,
    orig: str,
    dest: Sequence[str],
    iat: int,
    origid: str | None = None,
) -> tuple[str, Passport]:
    """
    The compact JWS (``header.claims.signature``) of a SHAKEN PASSporT signed
    with ES256 (RFC 7518 §3.4: the raw 64-byte ``r || s``), and what it holds.
    """
    passport = Passport(x5u, attest, orig, tuple(dest), int(iat), origid or str(uuid.uuid4()))
    header = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": x5u}
    claims = {
        "attest": attest,
        "dest": {"tn": list(passport.dest)},
        "iat": passport.iat,
        "orig": {"tn": orig},
        "origid": passport.origid,
    }
    signing_input = f"{_b64(_canonical(header))}.{_b64(_canonical(claims))}"
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}", passport


def identity_header(token: str, x5u: str) -> str:
    """The ``Identity`` header value (RFC 8224 §4.1, RFC 8588 §6)."""
    return f"{token};info=<{x5u}>;alg=ES256;ppt=shaken"


@attrs.frozen
class IdentityHeader:
    """A parsed ``Identity`` header: the compact JWS and its parameters."""

    token: str
    info: str
    alg: str
    ppt: str


def parse_identity(value: str) -> IdentityHeader:
    """
    Parse an ``Identity`` header value strictly: printable ASCII, at most
    L{MAX_HEADER} characters, a three-part token, ``info=<https URI>`` once,
    ``alg`` and ``ppt`` at most once each (RFC 8224 §4.1).

    Raises:
        IdentityError: 438 for a malformed header, 437 for an ``alg`` other
            than ES256, 438 for a ``ppt`` other than ``shaken``.
    """
    if len(value) > MAX_HEADER:
        raise IdentityError(INVALID, "malformed", f"Identity header over {MAX_HEADER} characters")
    if not (value.isascii() and value.isprintable()):
        raise IdentityError(INVALID, "malformed", "Identity header is not printable ASCII")
    token, *params = (p.strip() for p in value.split(";"))
    parts = token.split(".")
    if len(parts) != 3 or not all(_B64URL.match(p) for p in parts):
        raise IdentityError(INVALID, "malformed", "the token is not a compact JWS")
    if not parts[1]:
        raise IdentityError(
            INVALID, "malformed", "compact-form PASSporT (no claims) is not supported"
        )
    seen: dict[str, str] = {}
    for param in params:
        match = _PARAM.match(param)
        if match is None:
            raise IdentityError(INVALID, "malformed", f"bad Identity parameter {param[:40]!r}")
        name = match.group(1).lower()
        if name in seen:
            raise IdentityError(INVALID, "malformed", f"Identity parameter {name!r} repeated")
        seen[name] = match.group(2) or ""
    info = seen.get("info", "")
    if not (info.startswith("<") and info.endswith(">") and len(info) > 2):
        raise IdentityError(INVALID, "malformed", "Identity header has no info=<URI>")
    alg, ppt = seen.get("alg", "ES256"), seen.get("ppt", "shaken").strip('"')
    if alg != "ES256":
        raise IdentityError(UNSUPPORTED, "unsupported_alg", f"alg {alg[:20]!r} is not ES256")
    if ppt != "shaken":
        raise IdentityError(INVALID, "ppt", f"ppt {ppt[:20]!r} is not shaken")
    return IdentityHeader(token, info[1:-1], alg, ppt)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("repeated key")
        return dict(pairs)

    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=no_repeats)
    except (UnicodeDecodeError, ValueError):
        raise IdentityError(INVALID, "malformed", f"the PASSporT {what} is not JSON") from None
    if not isinstance(value, dict):
        raise IdentityError(INVALID, "malformed", f"the PASSporT {what} is not an object")
    return value


def _tn_of(value: object, what: str) -> str:
    tn = normalise_tn(value) if isinstance(value, str) else None
    if tn is None:
        raise IdentityError(INVALID, "malformed", f"{what} is not a telephone number")
    return tn


def decode_passport(header: IdentityHeader) -> Passport:
    """
    The PASSporT of a parsed header, without checking its signature.

    Raises:
        IdentityError: 438 for a header or claims a SHAKEN PASSporT cannot
            have, or an ``x5u`` other than the header's ``info``; 437 for an
            ``alg`` other than ES256.
    """
    head_b64, claims_b64, _ = header.token.split(".")
    head = _json_object(_unb64(head_b64), "header")
    claims = _json_object(_unb64(claims_b64), "claims")
    if head.get("alg") != "ES256":
        raise IdentityError(UNSUPPORTED, "unsupported_alg", "the PASSporT alg is not ES256")
    if head.get("ppt") != "shaken" or head.get("typ", "passport") != "passport":
        raise IdentityError(INVALID, "ppt", "the PASSporT is not of type passport/shaken")
    if head.get("x5u") != header.info:
        raise IdentityError(INVALID, "malformed", "the PASSporT x5u differs from info")
    attest, origid, iat = claims.get("attest"), claims.get("origid"), claims.get("iat")
    if attest not in ("A", "B", "C"):
        raise IdentityError(INVALID, "malformed", "attest is not A, B or C")
    if not isinstance(origid, str) or not 0 < len(origid) <= 64:
        raise IdentityError(INVALID, "malformed", "origid is missing")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise IdentityError(INVALID, "malformed", "iat is not an integer")
    orig, dest = claims.get("orig"), claims.get("dest")
    if not isinstance(orig, dict) or not isinstance(dest, dict):
        raise IdentityError(INVALID, "malformed", "orig or dest is missing")
    tns = dest.get("tn")
    if not isinstance(tns, list) or not 0 < len(tns) <= _MAX_TNS:
        raise IdentityError(INVALID, "malformed", "dest has no tn list")
    dest_tns = tuple(_tn_of(t, "a dest tn") for t in tns)
    return Passport(header.info, attest, _tn_of(orig.get("tn"), "orig tn"), dest_tns, iat, origid)


def verify_signature(header: IdentityHeader, key: ec.EllipticCurvePublicKey) -> None:
    """
    Check the ES256 signature of the header's token with ``key``.

    Raises:
        IdentityError: 438 when it does not verify.
    """
    signing_input, _, signature_b64 = header.token.rpartition(".")
    signature = _unb64(signature_b64)
    if len(signature) != 64:
        raise IdentityError(INVALID, "signature", "the ES256 signature is not 64 bytes")
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        key.verify(der, signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise IdentityError(INVALID, "signature", "the signature does not verify") from None


def check_passport(passport: Passport, now: float, orig: str | None, dest: Sequence[str]) -> None:
    """
    Check a PASSporT against the request: ``iat`` within L{MAX_AGE} seconds of
    ``now``, ``orig`` (the normalised P-Asserted-Identity or From user) equal
    to its orig TN, and one of ``dest`` (the normalised Request-URI and To
    users) among its dest TNs.

    Raises:
        IdentityError: 403 Stale Date, or 438 for a TN mismatch.
    """
    if abs(now - passport.iat) > MAX_AGE:
        raise IdentityError(STALE, "stale", f"iat is {now - passport.iat:.0f} s from now")
    if orig is None or orig != passport.orig:
        raise IdentityError(INVALID, "orig_mismatch", "orig tn differs from the caller")
    if not any(d in passport.dest for d in dest):
        raise IdentityError(INVALID, "dest_mismatch", "dest tn differs from the called number")
