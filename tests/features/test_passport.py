"""
SHAKEN PASSporTs (L{warden.features.passport}): TN normalisation, the
attestation decision, ES256 signing checked by an independent
implementation (PyJWT), and the strict parsing and checking of received
Identity headers with the RFC 8224 response and reason of each refusal.
"""

from __future__ import annotations

import base64
import json

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.trial.unittest import SynchronousTestCase

from warden.features.passport import (
    MAX_AGE,
    IdentityError,
    attestation,
    check_passport,
    decode_passport,
    identity_header,
    matches_owned,
    normalise_tn,
    parse_identity,
    sign_passport,
    verify_signature,
)

X5U = "https://certs.example.net/warden.pem"
IAT = 1_765_000_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(header: dict[str, object], claims: dict[str, object], signature: str = "AA") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{signature}"


HEADER = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U}
CLAIMS = {
    "attest": "A",
    "dest": {"tn": ["15552345678"]},
    "iat": IAT,
    "orig": {"tn": "15551230000"},
    "origid": "123e4567-e89b-12d3-a456-426655440000",
}


class NumbersTests(SynchronousTestCase):
    """Telephone numbers and attestation."""

    def test_normalise(self) -> None:
        """Separators, a leading + and URI parameters go; anything else is no TN."""
        cases = {
            "+1 (555) 123-0000": "15551230000",
            "1.555.123.0000": "15551230000",
            "+15551230000;npdi": "15551230000",
            "2000": "2000",
            "": None,
            "+": None,
            "1555123000a": None,
            "1234567890123456": None,
            "\uff11555": None,  # full-width digits are not ASCII
            "anonymous": None,
        }
        for text, expected in cases.items():
            self.assertEqual(normalise_tn(text), expected, text)

    def test_owned_patterns(self) -> None:
        """``x`` matches one digit; lengths must match."""
        self.assertTrue(matches_owned("15551230042", ["1555123xxxx"]))
        self.assertTrue(matches_owned("15551230042", ["19990000000", "1555123XXXX"]))
        self.assertFalse(matches_owned("15551240042", ["1555123xxxx"]))
        self.assertFalse(matches_owned("155512300421", ["1555123xxxx"]))
        self.assertFalse(matches_owned("15551230042", []))

    def test_attestation(self) -> None:
        """A: authenticated and owned; B: authenticated, not owned; C: not authenticated."""
        self.assertEqual(attestation(True, True), "A")
        self.assertEqual(attestation(True, False), "B")
        self.assertEqual(attestation(False, True), "C")
        self.assertEqual(attestation(False, False), "C")


class SigningTests(SynchronousTestCase):
    """Signing, checked independently."""

    def setUp(self) -> None:
        """A P-256 key."""
        self.key = ec.generate_private_key(ec.SECP256R1())

    def test_pyjwt_verifies(self) -> None:
        """PyJWT verifies the ES256 token with the public key and reads the SHAKEN claims."""
        token, passport = sign_passport(self.key, X5U, "B", "15551230000", ["15552345678"], IAT)
        self.assertEqual(
            jwt.get_unverified_header(token),
            {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U},
        )
        claims = jwt.decode(
            token, self.key.public_key(), algorithms=["ES256"], options={"verify_iat": False}
        )
        self.assertEqual(
            claims,
            {"attest": "B", "dest": {"tn": ["15552345678"]}, "iat": IAT,
             "orig": {"tn": "15551230000"}, "origid": passport.origid},
        )  # fmt: skip
        self.assertEqual(len(passport.origid), 36)

    def test_round_trip(self) -> None:
        """Our own verifier accepts the header and gets back what was signed."""
        token, passport = sign_passport(self.key, X5U, "A", "15551230000", ["15552345678"], IAT)
        value = identity_header(token, X5U)
        self.assertTrue(value.endswith(f";info=<{X5U}>;alg=ES256;ppt=shaken"))
        header = parse_identity(value)
        self.assertEqual(decode_passport(header), passport)
        verify_signature(header, self.key.public_key())

    def test_raw_signature(self) -> None:
        """The signature is the 64-byte JOSE ``r || s``, not DER."""
        token, _ = sign_passport(self.key, X5U, "A", "1", ["2"], IAT)
        signature = base64.urlsafe_b64decode(token.split(".")[2] + "==")
        self.assertEqual(len(signature), 64)

    def test_tampered(self) -> None:
        """A changed claim or another key fails with 438 (signature)."""
        token, _ = sign_passport(self.key, X5U, "A", "15551230000", ["15552345678"], IAT)
        head, _, signature = token.split(".")
        forged_claims = dict(CLAIMS, orig={"tn": "15559999999"})
        forged = f"{head}.{_b64(json.dumps(forged_claims).encode())}.{signature}"
        for candidate, key in (
            (forged, self.key.public_key()),
            (token, ec.generate_private_key(ec.SECP256R1()).public_key()),
        ):
            header = parse_identity(identity_header(candidate, X5U))
            error = self.assertRaises(IdentityError, verify_signature, header, key)
            self.assertEqual((error.status, error.reason), (438, "signature"))


class ParsingTests(SynchronousTestCase):
    """Malformed Identity headers are refused with a clear reason."""

    def refused(self, value: str) -> IdentityError:
        """Parse and decode ``value``: it must fail."""

        def parse() -> None:
            decode_passport(parse_identity(value))

        return self.assertRaises(IdentityError, parse)

    def test_malformed(self) -> None:
        """Each malformed header is a 438 naming what is wrong."""
        good = _token(HEADER, CLAIMS)
        cases = {
            "x" * 5000: "over 4096",
            f"{good};info=<{X5U}>\u00e9": "printable ASCII",
            f"{good};info=<{X5U}>\r\nX: y": "printable ASCII",
            f"a.b;info=<{X5U}>": "compact JWS",
            f"a.b.c.d;info=<{X5U}>": "compact JWS",
            f"a!.b.c;info=<{X5U}>": "compact JWS",
            f"{good.split('.')[0]}..AA;info=<{X5U}>": "compact-form",
            good: "no info",
            f"{good};info={X5U}": "no info",
            f"{good};info=<{X5U}>;info=<{X5U}>": "repeated",
            f"{good};info=<{X5U}>;a b": "bad Identity parameter",
            f"{_token(HEADER, CLAIMS).replace('.', '.!', 1)};info=<{X5U}>": "compact JWS",
            f"Zm9v.{_b64(b'{')}.AA;info=<{X5U}>": "not JSON",
            f"{_b64(b'[1]')}.{_b64(b'{}')}.AA;info=<{X5U}>": "not an object",
        }
        for value, words in cases.items():
            error = self.refused(value)
            self.assertEqual((error.status, error.phrase), (438, "Invalid Identity Header"))
            self.assertEqual(error.reason, "malformed", value[:80])
            self.assertIn(words, error.detail, value[:80])

    def test_bad_claims(self) -> None:
        """Claims a SHAKEN PASSporT cannot have are refused, each with its reason."""
        cases: list[tuple[dict[str, object], dict[str, object], str]] = [
            (dict(HEADER, x5u="https://other/"), CLAIMS, "differs from info"),
            (HEADER, dict(CLAIMS, attest="D"), "attest"),
            (HEADER, dict(CLAIMS, iat="now"), "iat"),
            (HEADER, dict(CLAIMS, iat=True), "iat"),
            (HEADER, {k: v for k, v in CLAIMS.items() if k != "origid"}, "origid"),
            (HEADER, dict(CLAIMS, dest={"tn": []}), "dest"),
            (HEADER, dict(CLAIMS, dest={"tn": ["1"] * 17}), "dest"),
            (HEADER, dict(CLAIMS, dest={"uri": ["sip:a@b"]}), "dest"),
            (HEADER, dict(CLAIMS, orig={"tn": "alice"}), "orig tn"),
            (HEADER, dict(CLAIMS, dest={"tn": [15552345678]}), "dest tn"),
        ]
        for header, claims, words in cases:
            error = self.refused(f"{_token(header, claims)};info=<{X5U}>")
            self.assertEqual((error.status, error.reason), (438, "malformed"), words)
            self.assertIn(words, error.detail)

    def test_repeated_json_key(self) -> None:
        """A claims object naming a key twice is refused (no last-one-wins ambiguity)."""
        claims = json.dumps(CLAIMS)[:-1] + ', "attest": "C"}'
        value = f"{_b64(json.dumps(HEADER).encode())}.{_b64(claims.encode())}.AA;info=<{X5U}>"
        self.assertIn("not JSON", self.refused(value).detail)

    def test_unsupported(self) -> None:
        """alg other than ES256: 437; ppt other than shaken: 438 (reason ppt)."""
        good = _token(HEADER, CLAIMS)
        error = self.refused(f"{good};info=<{X5U}>;alg=RS256")
        self.assertEqual((error.status, error.reason), (437, "unsupported_alg"))
        error = self.refused(f"{_token(dict(HEADER, alg='none'), CLAIMS)};info=<{X5U}>")
        self.assertEqual((error.status, error.reason), (437, "unsupported_alg"))
        error = self.refused(f"{good};info=<{X5U}>;ppt=div")
        self.assertEqual((error.status, error.reason), (438, "ppt"))
        error = self.refused(f"{_token(dict(HEADER, ppt='div'), CLAIMS)};info=<{X5U}>")
        self.assertEqual((error.status, error.reason), (438, "ppt"))

    def test_parameters(self) -> None:
        """Parameters may be absent (defaults), quoted (ppt) or in any case."""
        good = _token(HEADER, CLAIMS)
        header = parse_identity(f'{good} ; INFO=<{X5U}> ; ppt="shaken"')
        self.assertEqual((header.info, header.alg, header.ppt), (X5U, "ES256", "shaken"))


class CheckTests(SynchronousTestCase):
    """The PASSporT against the request and the time."""

    def setUp(self) -> None:
        """A decoded PASSporT."""
        token = _token(HEADER, CLAIMS)
        self.passport = decode_passport(parse_identity(f"{token};info=<{X5U}>"))

    def test_fresh(self) -> None:
        """``iat`` up to 60 s either side passes; one second more is 403 Stale Date."""
        for now in (IAT - MAX_AGE, IAT, IAT + MAX_AGE):
            check_passport(self.passport, now, "15551230000", ["15552345678"])
        for now in (IAT - MAX_AGE - 1, IAT + MAX_AGE + 1):
            error = self.assertRaises(
                IdentityError, check_passport, self.passport, now, "15551230000", ["15552345678"]
            )
            self.assertEqual(
                (error.status, error.phrase, error.reason), (403, "Stale Date", "stale")
            )

    def test_numbers(self) -> None:
        """orig must equal the caller; one of the called numbers must be a dest."""
        check_passport(self.passport, IAT, "15551230000", ["2000", "15552345678"])
        for orig, dest, reason in (
            ("15551239999", ["15552345678"], "orig_mismatch"),
            (None, ["15552345678"], "orig_mismatch"),
            ("15551230000", ["15552340000"], "dest_mismatch"),
            ("15551230000", [], "dest_mismatch"),
        ):
            error = self.assertRaises(
                IdentityError, check_passport, self.passport, IAT, orig, dest
            )
            self.assertEqual((error.status, error.reason), (438, reason))
