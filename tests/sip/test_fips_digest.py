"""Digest authentication in FIPS mode (``[security] fips``, ADR 0029): SHA-256 only."""

from __future__ import annotations

from prometheus_client import REGISTRY
from twisted.logger import Logger, formatEvent

from tests.sip.test_registrar import FLOW, REALM, RegistrarTestCase, register
from warden.errors import SipError
from warden.sip.auth import AuthThrottle, answer_challenge, challenge
from warden.sip.authenticator import Authenticator
from warden.sip.flow import Flow
from warden.sip.message import Request
from warden.sip.parser import parse_datagram
from warden.sip.registrar import ExpiryPolicy, Registrar
from warden.store.credentials import make_extension


def refused_count() -> float:
    """``warden_sip_auth_fips_refused_total`` now."""
    return REGISTRY.get_sample_value("warden_sip_auth_fips_refused_total") or 0.0


class FipsDigestTests(RegistrarTestCase):
    """A registrar whose authenticator runs in FIPS mode."""

    def setUp(self) -> None:
        super().setUp()
        self.directory.add_extension(
            make_extension("1004", "Old phone", REALM, "secret1004", algorithms=("MD5",))
        )
        # A low extension limit: a refused MD5 answer must not count as a guess.
        self.throttle = AuthThrottle(
            self.clock, limit=2, window=60, block_seconds=300, extension_limit=1
        )
        self.auth = Authenticator(
            self.clock, self.directory, self.nonces, self.throttle, REALM,
            ("MD5", "SHA-256"), fips=True,
        )  # fmt: skip
        self.registrar = Registrar(
            self.clock, self.auth, self.location, ExpiryPolicy(60, 3600, 7200),
            lambda host: host == REALM, "node-a",
        )  # fmt: skip

    def bindings(self) -> list[object]:
        """Every binding stored."""
        return list(self.successResultOf(self.location.all_bindings(self.clock.seconds())))

    def md5_answer(self, user: str = "1001", drop_algorithm: bool = False) -> str:
        """Correct MD5 credentials for a nonce this server issued to FLOW."""
        value = challenge(REALM, self.nonces.issue(FLOW.host), "MD5")
        authz = answer_challenge(value, user, f"secret{user}", "REGISTER", "sip:pbx.test")
        self.assertIn(", algorithm=MD5", authz)
        return authz.replace(", algorithm=MD5", "") if drop_algorithm else authz

    def test_challenge_offers_sha256_only(self) -> None:
        """Even with MD5 configured beside it, the challenge offers SHA-256 alone."""
        values = self.challenge().get_all("WWW-Authenticate")
        self.assertEqual(len(values), 1)
        self.assertIn("algorithm=SHA-256", values[0])
        self.assertNotIn("MD5", values[0])

    def test_extension_listing_md5_only_gets_sha256(self) -> None:
        """An extension limited to MD5 is offered SHA-256 in FIPS mode, and registers with it."""
        values = self.challenge(user="1004").get_all("WWW-Authenticate")
        self.assertEqual([v.split("algorithm=")[1][:7] for v in values], ["SHA-256"])
        self.assertEqual(self.authed(user="1004").status, 200)

    def test_sha256_registers(self) -> None:
        """Correct SHA-256 credentials register the contact."""
        self.assertEqual(self.authed().status, 200)
        self.assertEqual(len(self.bindings()), 1)

    def assert_refused(self, authz: str) -> None:
        before = refused_count()
        response = self.handle(register(authorization=authz, cseq=2))
        self.assertEqual(response.status, 401)
        values = response.get_all("WWW-Authenticate")
        self.assertEqual(len(values), 1)
        self.assertIn("algorithm=SHA-256", values[0])
        self.assertEqual(refused_count(), before + 1)
        self.assertEqual(self.bindings(), [])
        self.assertFalse(self.throttle.is_blocked(FLOW.host, "1001"))

    def test_md5_credentials_refused(self) -> None:
        """
        Correct MD5 credentials (for a valid nonce) are refused: 401 with a fresh
        SHA-256 challenge, counted as FIPS refusals, never as a guess.
        """
        self.assert_refused(self.md5_answer())
        self.assert_refused(self.md5_answer())

    def test_no_algorithm_means_md5_refused(self) -> None:
        """Credentials without ``algorithm`` are MD5 (RFC 7616 §3.4) and refused."""
        self.assert_refused(self.md5_answer(drop_algorithm=True))

    def test_refusal_logged_once_a_minute(self) -> None:
        """The warning names the setting and is rate-limited."""
        events: list[dict[str, object]] = []
        self.auth.log = Logger(observer=events.append)
        self.handle(register(authorization=self.md5_answer(), cseq=2))
        self.handle(register(authorization=self.md5_answer(), cseq=3))
        texts = [formatEvent(e) for e in events if "FIPS" in formatEvent(e)]
        self.assertEqual(len(texts), 1)
        self.assertIn("[security] fips", texts[0])
        self.clock.advance(61)
        self.handle(register(authorization=self.md5_answer(), cseq=4))
        self.assertEqual(len([e for e in events if "FIPS" in formatEvent(e)]), 2)

    def test_invite_challenge_sha256_only(self) -> None:
        """The 407 to an INVITE offers SHA-256 alone too."""
        data = register().to_bytes()
        data = data.replace(b"REGISTER sip:pbx.test", b"INVITE sip:1002@pbx.test")
        request = parse_datagram(data.replace(b"1 REGISTER", b"1 INVITE"))
        assert isinstance(request, Request)
        d = self.auth.authenticate(request, Flow("udp", "192.0.2.10", 5062), proxy=True)
        error = self.failureResultOf(d, SipError).value
        assert isinstance(error, SipError)
        self.assertEqual(error.status, 407)
        values = [v for n, v in error.headers if n == "Proxy-Authenticate"]
        self.assertEqual(len(values), 1)
        self.assertIn("algorithm=SHA-256", values[0])

    def test_without_fips_md5_still_works(self) -> None:
        """Outside FIPS mode the same MD5 answer registers (the default is unchanged)."""
        self.auth.fips = False
        response = self.handle(register(authorization=self.md5_answer(), cseq=2))
        self.assertEqual(response.status, 200)
