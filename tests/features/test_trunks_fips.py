"""
Trunks in FIPS mode (``[security] fips``, ADR 0029): the provider's challenges
are answered with SHA-256 only; an MD5-only provider fails over (calls) or
fails (registration), with the reason said.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.features.test_trunks import BACKUP, ITSP, PASSWORD, TrunkCallTestCase, metric
from tests.sip.test_registration import PROVIDER, FakeTransactions
from warden.features.trunk_config import parse_routes, parse_trunks
from warden.features.trunks import TrunkService
from warden.sip.auth import (
    FIPS_ALGORITHMS,
    challenge,
    digest_hex,
    expected_response,
    parse_credentials,
    pick_challenge,
)
from warden.sip.message import Request, Response, make_response
from warden.sip.registration import Registration, RegistrationSettings, RegistrationState

MD5 = challenge("itsp.example", "n0nce", "MD5")
SHA256 = challenge("itsp.example", "n0nce2", "SHA-256")


class PickTests(SynchronousTestCase):
    def test_pick(self) -> None:
        """Without a restriction the first; in FIPS mode the first SHA-256 one, or None."""
        self.assertEqual(pick_challenge([MD5, SHA256], None), MD5)
        self.assertEqual(pick_challenge([MD5, SHA256], FIPS_ALGORITHMS), SHA256)
        self.assertIsNone(pick_challenge([MD5], FIPS_ALGORITHMS))
        no_algorithm = 'Digest realm="x", nonce="y", qop="auth"'  # MD5 (RFC 7616 §3.3)
        self.assertIsNone(pick_challenge([no_algorithm, "Digest ,,,="], FIPS_ALGORITHMS))


class FipsTrunkCallTests(TrunkCallTestCase):
    """The trunk service built with FIPS mode on."""

    def configure(self, inbound: object = None) -> None:
        trunks = parse_trunks([
            {"name": "itsp", "host": ITSP[0], "username": "acct", "password_env": "X"},
            {"name": "backup", "host": BACKUP[0], "port": BACKUP[1], "register": False},
        ])  # fmt: skip
        routes = parse_routes(
            {"outbound": [{"pattern": "_9NXXNXXXXXX", "strip": 1, "trunks": ["itsp", "backup"]}]}
        )
        self.plugin.service = TrunkService(
            self.stack.clock, self.stack.sip, self.stack.directory, trunks,
            {"itsp": PASSWORD}, routes, fips=True,
        )  # fmt: skip

    def challenged(self, invite: Request, *values: str) -> Response:
        headers = [("Proxy-Authenticate", v) for v in values]
        return make_response(invite, 407, to_tag="t407", headers=headers)

    def test_md5_challenge_fails_over(self) -> None:
        """An MD5-only 407: no answer to it, the next trunk gets the call, logged and counted."""
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        before = metric("warden_trunk_failures_total", trunk="itsp", reason="call_auth")
        invite = self.dial("95552345678")
        sent = self.stack.deliver(self.challenged(invite, MD5), ITSP)
        self.assertEqual([m for m, a in sent if tuple(a) == ITSP and isinstance(m, Request)
                          and m.method == "INVITE"], [])  # fmt: skip
        second = [m for m, a in sent if tuple(a) == BACKUP and isinstance(m, Request)]
        self.assertEqual([m.method for m in second], ["INVITE"])
        after = metric("warden_trunk_failures_total", trunk="itsp", reason="call_auth")
        self.assertEqual(after - before, 1)
        texts = [formatEvent(e) for e in events]
        self.assertTrue([t for t in texts if "Trunk itsp" in t and "FIPS mode refuses MD5" in t])

    def test_sha256_challenge_answered(self) -> None:
        """MD5 and SHA-256 offered: the SHA-256 one is answered, correctly."""
        invite = self.dial("95552345678")
        sent = self.stack.deliver(self.challenged(invite, MD5, SHA256), ITSP)
        again = [
            m
            for m, a in sent
            if tuple(a) == ITSP and isinstance(m, Request) and m.method == "INVITE"
        ]
        self.assertEqual(len(again), 1)
        creds = parse_credentials(again[0].get("Proxy-Authorization") or "")
        assert creds is not None
        self.assertEqual((creds.algorithm, creds.nonce), ("SHA-256", "n0nce2"))
        ha1 = digest_hex("SHA-256", f"acct:itsp.example:{PASSWORD}")
        self.assertEqual(creds.response, expected_response(creds, ha1, "INVITE"))


class FipsRegistrationTests(SynchronousTestCase):
    """A trunk registration that answers SHA-256 only."""

    def setUp(self) -> None:
        self.txns = FakeTransactions()
        settings = RegistrationSettings(
            PROVIDER, "itsp.example", "acct", "pw", expires=600, algorithms=FIPS_ALGORITHMS
        )
        self.reg = Registration(Clock(), self.txns, lambda flow: "192.0.2.1:5060", settings)
        self.reg.start()

    def answer(self, *values: str) -> None:
        request, _, user = self.txns.sent[-1]
        headers = [("WWW-Authenticate", v) for v in values]
        user.response_received(None, make_response(request, 401, headers=headers))

    def test_md5_registrar_fails_with_reason(self) -> None:
        """A registrar offering only MD5 is not answered: the registration fails, saying why."""
        self.answer(MD5)
        self.assertEqual(len(self.txns.sent), 1)  # not answered
        self.assertEqual(self.reg.state, RegistrationState.FAILED)
        self.assertIn("FIPS mode refuses MD5", self.reg.last_error)
        self.assertIn("SHA-256", self.reg.last_error)

    def test_sha256_answered(self) -> None:
        """Offered MD5 and SHA-256, the registration answers the SHA-256 challenge correctly."""
        self.answer(MD5, SHA256)
        request, _, _ = self.txns.sent[-1]
        creds = parse_credentials(request.get("Authorization") or "")
        assert creds is not None
        self.assertEqual(creds.algorithm, "SHA-256")
        ha1 = digest_hex("SHA-256", "acct:itsp.example:pw")
        self.assertEqual(creds.response, expected_response(creds, ha1, "REGISTER"))
