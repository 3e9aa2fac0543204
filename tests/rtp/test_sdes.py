"""Tests for SDES ``a=crypto`` lines (RFC 4568) in L{warden.rtp.sdes}."""

from __future__ import annotations

import base64

from twisted.trial.unittest import SynchronousTestCase

from warden.rtp import sdes
from warden.sip.sdp import parse_sdp
from warden.testing.rtpnet import sdp_body

KEY = bytes(range(30))
INLINE = base64.b64encode(KEY).decode()


class ParseCryptoTests(SynchronousTestCase):
    """Which ``a=crypto`` values Warden can use."""

    def test_both_suites(self) -> None:
        """The 80- and 32-bit tag suites with one inline key are read, key decoded."""
        for suite in sdes.SUITES:
            crypto = sdes.parse_crypto(f"7 {suite} inline:{INLINE}")
            self.assertEqual(crypto, sdes.Crypto(7, suite, KEY))

    def test_long_lifetime(self) -> None:
        """A lifetime of at least 2^31 packets is accepted (RFC 4568 §6.1)."""
        for lifetime in ("2^31", "2^48", str(2**40)):
            value = f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}|{lifetime}"
            self.assertIsNotNone(sdes.parse_crypto(value), lifetime)

    def test_unusable(self) -> None:
        """Lines Warden cannot honour are ignored, never half-used."""
        for value in (
            f"1 F8_128_HMAC_SHA1_80 inline:{INLINE}",  # unknown suite
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}|2^20",  # short lifetime
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}|2^31|1:4",  # MKI
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE};inline:{INLINE}",  # two keys
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE} UNENCRYPTED_SRTP",  # session param
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(KEY[:20]).decode()}",
            "1 AES_CM_128_HMAC_SHA1_80 inline:not*base64",
            f"1 AES_CM_128_HMAC_SHA1_80 uri:{INLINE}",
            f"\u0661 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}",  # Arabic-Indic digit
            f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}",  # tag over 9 digits
            "1 AES_CM_128_HMAC_SHA1_80",
            "",
        ):
            self.assertIsNone(sdes.parse_crypto(value), value)

    def test_round_trip_and_secret(self) -> None:
        """value() writes what parse_crypto reads; the key never shows in repr."""
        crypto = sdes.Crypto(3, "AES_CM_128_HMAC_SHA1_32", KEY)
        self.assertEqual(sdes.parse_crypto(crypto.value()), crypto)
        self.assertNotIn(INLINE, repr(crypto))
        self.assertNotIn(repr(KEY), repr(crypto))

    def test_choose_prefers_80(self) -> None:
        """The 80-bit tag suite wins over an earlier 32-bit one; None when nothing fits."""
        short = sdes.Crypto(1, "AES_CM_128_HMAC_SHA1_32", KEY)
        long = sdes.Crypto(2, "AES_CM_128_HMAC_SHA1_80", KEY)
        self.assertEqual(sdes.choose([short, long]), long)
        self.assertEqual(sdes.choose([short]), short)
        self.assertIsNone(sdes.choose([]))

    def test_new_keys_differ(self) -> None:
        """Fresh keys have the suites' length and are not repeated."""
        keys = {sdes.new_key() for _ in range(50)}
        self.assertEqual(len(keys), 50)
        self.assertEqual({len(k) for k in keys}, {sdes.KEY_LENGTH})


class ProfileTests(SynchronousTestCase):
    """Transport profiles and rewriting a media section's keys."""

    def test_profiles(self) -> None:
        """AVP and SAVP (and their F variants) map to each other; others stay."""
        self.assertEqual(sdes.secure_profile("RTP/AVP"), "RTP/SAVP")
        self.assertEqual(sdes.secure_profile("RTP/AVPF"), "RTP/SAVPF")
        self.assertEqual(sdes.plain_profile("RTP/SAVP"), "RTP/AVP")
        self.assertEqual(sdes.plain_profile("rtp/savpf"), "RTP/AVPF")
        self.assertEqual(sdes.plain_profile("UDP/TLS/RTP/SAVP"), "UDP/TLS/RTP/SAVP")
        self.assertTrue(sdes.is_secure("RTP/SAVP"))
        self.assertFalse(sdes.is_secure("UDP/TLS/RTP/SAVP"))

    def test_with_crypto(self) -> None:
        """The m= profile changes, old a=crypto lines go, new ones come last; rest kept."""
        text = sdp_body().decode().replace("RTP/AVP", "RTP/SAVP")
        text += f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}\r\na=sendrecv\r\n"
        sdp = parse_sdp(text.encode())
        ours = sdes.Crypto(9, "AES_CM_128_HMAC_SHA1_32", bytes(30))
        out = sdes.with_crypto(sdp, 0, "RTP/AVP", [ours]).to_bytes().decode()
        self.assertIn("m=audio 4000 RTP/AVP 0 8 101\r\n", out)
        self.assertNotIn(INLINE, out)
        self.assertTrue(out.endswith(f"a=sendrecv\r\na=crypto:{ours.value()}\r\n"), out)
        plain = sdes.with_crypto(sdp, 0, "RTP/AVP", []).to_bytes().decode()
        self.assertNotIn("crypto", plain)
        self.assertIn("a=rtpmap:101 telephone-event/8000\r\n", plain)

    def test_plain_unchanged(self) -> None:
        """Plain RTP staying plain: the description as it came, not a rebuilt copy."""
        sdp = parse_sdp(sdp_body())
        self.assertIs(sdes.with_crypto(sdp, 0, "RTP/AVP", []), sdp)

    def test_plain_changed(self) -> None:
        """Plain RTP is rebuilt when a line would change: m= spacing, last line's ending."""
        spaced = parse_sdp(sdp_body().replace(b"RTP/AVP ", b"RTP/AVP  "))
        out = sdes.with_crypto(spaced, 0, "RTP/AVP", []).to_bytes()
        self.assertIn(b"m=audio 4000 RTP/AVP 0 8 101\r\n", out)
        unterminated = parse_sdp(sdp_body().rstrip(b"\r\n"))
        out = sdes.with_crypto(unterminated, 0, "RTP/AVP", []).to_bytes()
        self.assertTrue(out.endswith(b"a=ptime:20\r\n"), out)

    def test_without_final_newline(self) -> None:
        """A body whose last line has no line ending still gets well-formed lines."""
        sdp = parse_sdp(sdp_body().rstrip(b"\r\n"))
        ours = sdes.Crypto(1, "AES_CM_128_HMAC_SHA1_80", bytes(30))
        out = sdes.with_crypto(sdp, 0, "RTP/SAVP", [ours]).to_bytes()
        self.assertTrue(out.endswith(b"a=ptime:20\r\na=crypto:" + ours.value().encode() + b"\r\n"))
        parse_sdp(out)
