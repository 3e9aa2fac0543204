"""
Admin authentication: scrypt hashes, tokens, the login throttle, signed
sessions, and the whole MFA flow over the API with a fixed clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

import attrs
import pyotp
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.admin.apihelper import PASSWORD, START, ApiHarness
from warden import secrets
from warden.admin.auth import AdminAuth, AuthSettings, LoginThrottle, SessionSigner
from warden.errors import ApiError
from warden.model.admin import AdminAccount
from warden.testing.admin import MemoryAdminStore


class SecretsTests(SynchronousTestCase):
    """Password hashes and tokens."""

    def test_scrypt_round_trip(self) -> None:
        """A hash verifies its password only; salts differ per hash."""
        first = secrets.hash_password("s3cret password", n=2**10)
        second = secrets.hash_password("s3cret password", n=2**10)
        self.assertTrue(first.startswith("scrypt$1024$8$1$"))
        self.assertNotEqual(first, second)
        self.assertTrue(secrets.verify_password("s3cret password", first))
        self.assertFalse(secrets.verify_password("s3cret passwore", first))

    def test_malformed_hash(self) -> None:
        """A malformed stored hash never verifies (and does not raise)."""
        for stored in ("", "md5$x", "scrypt$a$b$c$d$e", "scrypt$1024$8$1$zz$00"):
            self.assertFalse(secrets.verify_password("x", stored))

    def test_token_shape(self) -> None:
        """A token splits back into its id and secret; other strings do not."""
        token_id, secret, full = secrets.new_token()
        self.assertEqual(secrets.split_token(full), (token_id, secret))
        for bad in ("", "wdn_", "wdn_short_x", "abc", f"wdn_{token_id}"):
            self.assertIsNone(secrets.split_token(bad))

    def test_recovery_codes(self) -> None:
        """Recovery codes are distinct and normalise from what people type."""
        codes = secrets.new_recovery_codes()
        self.assertEqual(len(set(codes)), 10)
        code = codes[0]
        self.assertEqual(secrets.normalise_recovery_code(code.upper().replace("-", " ")), code)


class ThrottleTests(SynchronousTestCase):
    """Exponential back-off after failed logins."""

    def test_backoff_doubles_and_caps(self) -> None:
        """From the limit on, the wait doubles per failure up to the maximum."""
        clock = Clock()
        throttle = LoginThrottle(clock, limit=3, base=1.0, maximum=8.0)
        throttle.failed("k")
        throttle.failed("k")
        self.assertEqual(throttle.retry_after("k"), 0.0)
        waits = []
        for _ in range(6):
            throttle.failed("k")
            waits.append(throttle.retry_after("k"))
        self.assertEqual(waits, [1.0, 2.0, 4.0, 8.0, 8.0, 8.0])
        clock.advance(7.9)
        self.assertAlmostEqual(throttle.retry_after("k"), 0.1)
        clock.advance(0.1)
        self.assertEqual(throttle.retry_after("k"), 0.0)

    def test_success_and_prune(self) -> None:
        """A success clears a key; quiet keys are pruned."""
        clock = Clock()
        throttle = LoginThrottle(clock, limit=1, base=1.0, maximum=10.0)
        throttle.failed("a")
        throttle.failed("b")
        throttle.succeeded("a")
        self.assertEqual(throttle.retry_after("a"), 0.0)
        clock.advance(20.0)
        throttle.prune()
        self.assertEqual(len(throttle), 1)
        clock.advance(0.1)
        throttle.prune()
        self.assertEqual(len(throttle), 0)


class SessionTests(SynchronousTestCase):
    """Signed session tokens."""

    def test_expiry_and_tampering(self) -> None:
        """A token is valid until it expires; a changed byte or key invalidates it."""
        clock = Clock()
        signer = SessionSigner(clock, b"k" * 32)
        token, expires = signer.issue("alice", frozenset(["read"]), 60.0)
        self.assertEqual(expires, 60.0)
        principal = signer.check(token)
        assert principal is not None
        self.assertEqual((principal.name, principal.scopes), ("alice", frozenset(["read"])))
        body = token.split(".")[1]
        forged = token.replace(body, body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1])
        self.assertIsNone(signer.check(forged))
        self.assertIsNone(SessionSigner(clock, b"x" * 32).check(token))
        clock.advance(59.9)
        self.assertIsNotNone(signer.check(token))
        clock.advance(0.1)
        self.assertIsNone(signer.check(token))


def _code(secret: str, at: float) -> str:
    return str(pyotp.TOTP(secret).at(at))


class LoginFlowTests(SynchronousTestCase):
    """Login, MFA enrolment and login with codes, over the API, on a fixed clock."""

    def setUp(self) -> None:
        self.h = ApiHarness(AuthSettings(fail_limit=3, backoff_seconds=2.0,
                                         backoff_max_seconds=60.0))  # fmt: skip
        self.h.add_account()

    def login(self, password: str = PASSWORD, source: str = "192.0.2.7", **extra: str):  # type: ignore[no-untyped-def]
        return self.h.request("POST", "/api/v1/auth/login",
                              {"username": "alice", "password": password, **extra},
                              source=source)  # fmt: skip

    def enrol(self) -> tuple[str, list[str]]:
        session = self.h.login()
        response = self.h.request("POST", "/api/v1/auth/mfa/enrol", {}, session)
        self.assertEqual(response.status, 200)
        uri = response.json()["otpauth_uri"]
        parsed = urlparse(uri)
        self.assertEqual((parsed.scheme, parsed.netloc), ("otpauth", "totp"))
        secret = parse_qs(parsed.query)["secret"][0]
        confirm = self.h.request(
            "POST",
            "/api/v1/auth/mfa/confirm",
            {"code": _code(secret, self.h.clock.seconds())},
            session,
        )
        self.assertEqual(confirm.status, 200)
        return secret, response.json()["recovery_codes"]

    def test_password_login(self) -> None:
        """The right password gives a session valid for session_seconds; a wrong one 401."""
        ok = self.login()
        self.assertEqual(ok.status, 200)
        self.assertEqual(ok.json()["expires_at"], START + 900.0)
        self.assertFalse(ok.json()["mfa_enabled"])
        bad = self.login("wrong password!")
        self.assertEqual((bad.status, bad.error_code), (401, "invalid_credentials"))
        unknown = self.h.request("POST", "/api/v1/auth/login",
                                 {"username": "mallory", "password": "x"})  # fmt: skip
        self.assertEqual((unknown.status, unknown.error_code), (401, "invalid_credentials"))

    def test_session_expires(self) -> None:
        """A session stops working when it expires."""
        session = self.h.login()
        self.assertEqual(self.h.request("GET", "/api/v1/status", token=session).status, 200)
        self.h.clock.advance(900.0)
        response = self.h.request("GET", "/api/v1/status", token=session)
        self.assertEqual((response.status, response.error_code), (401, "invalid_token"))

    def test_enrolment_then_login_needs_code(self) -> None:
        """After enrolment a login needs a current code, used once; drift of one step is ok."""
        secret, _ = self.enrol()
        self.h.clock.advance(60.0)
        self.assertEqual(self.login().error_code, "mfa_required")
        now = self.h.clock.seconds()
        self.assertEqual(self.login(code="000000" if _code(secret, now) != "000000"
                                    else "111111").error_code, "invalid_mfa_code")  # fmt: skip
        self.assertEqual(self.login(code=_code(secret, now - 30)).status, 200)
        # The same code (time step) again is refused: a code is used once.
        self.assertEqual(self.login(code=_code(secret, now - 30)).error_code, "invalid_mfa_code")
        self.assertEqual(self.login(code=_code(secret, now)).status, 200)
        self.assertEqual(self.login(code=_code(secret, now - 90)).error_code, "invalid_mfa_code")

    def test_recovery_code_once(self) -> None:
        """A recovery code replaces the TOTP code once."""
        _, codes = self.enrol()
        self.assertEqual(self.login(code=codes[3]).status, 200)
        self.assertEqual(self.login(code=codes[3]).error_code, "invalid_mfa_code")
        self.assertEqual(len(self.h.admin_store.accounts["alice"].recovery_hashes), 9)

    def test_enrol_twice_and_confirm_without_enrolment(self) -> None:
        """Enrolling an enrolled account is 409; confirming with nothing pending is 409."""
        session = self.h.login()
        response = self.h.request("POST", "/api/v1/auth/mfa/confirm", {"code": "123456"}, session)
        self.assertEqual((response.status, response.error_code), (409, "no_pending_enrolment"))
        secret, _ = self.enrol()
        self.h.clock.advance(30.0)
        session = self.h.login(code=_code(secret, self.h.clock.seconds()))
        again = self.h.request("POST", "/api/v1/auth/mfa/enrol", {}, session)
        self.assertEqual(again.status, 409)

    def test_wrong_confirmation_code(self) -> None:
        """A wrong code does not enable MFA."""
        session = self.h.login()
        self.h.request("POST", "/api/v1/auth/mfa/enrol", {}, session)
        response = self.h.request("POST", "/api/v1/auth/mfa/confirm", {"code": "abcdef"}, session)
        self.assertEqual(response.status, 400)
        self.assertFalse(self.h.admin_store.accounts["alice"].mfa_enabled)

    def test_mandatory_mfa(self) -> None:
        """With require_mfa, an unenrolled login may only enrol; afterwards all is open."""
        h = ApiHarness(AuthSettings(require_mfa=True))
        h.add_account()
        login = h.request("POST", "/api/v1/auth/login", {"username": "alice",
                                                          "password": PASSWORD})  # fmt: skip
        self.assertTrue(login.json()["mfa_enrolment_required"])
        session = login.json()["token"]
        blocked = h.request("GET", "/api/v1/status", token=session)
        self.assertEqual((blocked.status, blocked.error_code), (403, "forbidden"))
        uri = h.request("POST", "/api/v1/auth/mfa/enrol", {}, session).json()["otpauth_uri"]
        secret = parse_qs(urlparse(uri).query)["secret"][0]
        code = _code(secret, h.clock.seconds())
        self.assertEqual(h.request("POST", "/api/v1/auth/mfa/confirm", {"code": code},
                                   session).status, 200)  # fmt: skip
        h.clock.advance(30.0)
        full = h.login(code=_code(secret, h.clock.seconds()))
        self.assertEqual(h.request("GET", "/api/v1/status", token=full).status, 200)

    def test_lockout_per_account(self) -> None:
        """After fail_limit failures the account backs off, even from another address."""
        for _ in range(3):
            self.assertEqual(self.login("nope", source=f"192.0.2.{_ + 10}").status, 401)
        locked = self.login(source="198.51.100.1")
        self.assertEqual((locked.status, locked.error_code), (429, "too_many_attempts"))
        self.assertEqual(locked.headers["retry-after"], "2")
        self.h.clock.advance(2.0)
        self.assertEqual(self.login(source="198.51.100.1").status, 200)

    def test_lockout_per_address(self) -> None:
        """Failures from one address against many accounts block that address."""
        for name in ("bob", "carol", "dave"):
            self.h.request("POST", "/api/v1/auth/login", {"username": name, "password": "x"})
        blocked = self.login()
        self.assertEqual(blocked.status, 429)
        self.assertEqual(self.login(source="198.51.100.2").status, 200)

    def test_backoff_grows(self) -> None:
        """Each further failure doubles the wait."""
        for _ in range(3):
            self.login("nope")
        self.h.clock.advance(2.0)
        self.login("nope")
        self.assertEqual(self.login().headers["retry-after"], "4")

    def test_change_password(self) -> None:
        """The password changes only with the current one; short ones are refused."""
        session = self.h.login()
        wrong = self.h.request("POST", "/api/v1/auth/password", {
            "current_password": "nope", "new_password": "a much longer one"}, session)  # fmt: skip
        self.assertEqual(wrong.status, 403)
        short = self.h.request("POST", "/api/v1/auth/password", {
            "current_password": PASSWORD, "new_password": "short"}, session)  # fmt: skip
        self.assertEqual((short.status, short.error_code), (400, "weak_password"))
        ok = self.h.request(
            "POST",
            "/api/v1/auth/password",
            {"current_password": PASSWORD, "new_password": "a much longer one"},
            session,
        )
        self.assertEqual(ok.status, 204)
        self.assertEqual(self.login().status, 401)
        self.assertEqual(self.login("a much longer one").status, 200)


class _HeldRunner:
    """A run_blocking that holds every password check until released: concurrent logins."""

    def __init__(self) -> None:
        self.held: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.held.append((d, f, args))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for d, f, args in held:
            d.callback(f(*args))


class ConcurrentLoginTests(SynchronousTestCase):
    """Logins running at once: the back-off, one-time codes and the scrypt bound hold."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryAdminStore()
        self.runner = _HeldRunner()

    def auth(self, **settings: Any) -> AdminAuth:
        self.store.accounts["alice"] = AdminAccount(
            "alice", secrets.hash_password(PASSWORD, n=2**10), START,
            totp_secret=settings.pop("totp_secret", ""),
        )  # fmt: skip
        return AdminAuth(self.clock, self.store, AuthSettings(**settings), self.runner)

    def logins(
        self, auth: AdminAuth, count: int, password: str, code: str | None = None
    ) -> list[Deferred[Any]]:
        return [
            Deferred.fromCoroutine(auth.login("alice", password, code, "192.0.2.9"))
            for _ in range(count)
        ]

    def outcomes(self, results: list[Deferred[Any]]) -> list[Any]:
        found: list[Any] = []
        for d in results:
            d.addCallbacks(lambda _: found.append(200), lambda f: found.append(f.value.status))
        return found

    def test_concurrent_guesses_stop_at_the_limit(self) -> None:
        """Ten guesses at once: only fail_limit reach scrypt, the rest get 429 at once."""
        auth = self.auth(fail_limit=3, backoff_seconds=60.0, password_checks=64)
        found = self.outcomes(self.logins(auth, 10, "wrong password"))
        self.assertEqual(len(self.runner.held), 3)
        self.assertEqual(found, [429] * 7)
        self.runner.release()
        self.assertEqual(sorted(found), [401] * 3 + [429] * 7)

    def test_one_totp_code_one_session(self) -> None:
        """Three logins at once with the same valid code: exactly one session."""
        seed = pyotp.random_base32()
        auth = self.auth(totp_secret=seed)
        found = self.outcomes(self.logins(auth, 3, PASSWORD, _code(seed, START)))
        self.runner.release()
        self.assertEqual(sorted(found), [200, 401, 401])

    def test_password_checks_bounded(self) -> None:
        """Beyond password_checks at once a login gets 503 with Retry-After, then works."""
        auth = self.auth(password_checks=2)
        results = [
            Deferred.fromCoroutine(auth.login("alice", PASSWORD, None, f"192.0.2.{n}"))
            for n in range(4)
        ]
        self.assertEqual(len(self.runner.held), 2)
        for busy in results[2:]:
            error = self.failureResultOf(busy, ApiError).value
            self.assertEqual((error.status, dict(error.headers)), (503, {"Retry-After": "1"}))
        self.runner.release()
        self.assertEqual(auth.password_slots.busy, 0)
        again = Deferred.fromCoroutine(auth.login("alice", PASSWORD, None, "192.0.2.1"))
        self.runner.release()
        self.assertIn("token", self.successResultOf(again))

    def test_mfa_required_is_not_a_failure(self) -> None:
        """The right password without a code does not count towards the back-off."""
        auth = self.auth(totp_secret=pyotp.random_base32(), fail_limit=2)
        for _ in range(3):
            found = self.outcomes(self.logins(auth, 1, PASSWORD))
            self.runner.release()
            self.assertEqual(found, [401])
        self.assertEqual(auth.throttle.retry_after("account:alice"), 0.0)


class CredentialGenerationTests(SynchronousTestCase):
    """Sessions and tokens end with a password change, MFA enrolment, expiry, their owner."""

    def setUp(self) -> None:
        self.h = ApiHarness(AuthSettings(token_seconds=3600.0))
        self.h.add_account()

    def status(self, token: str) -> int:
        return self.h.request("GET", "/api/v1/status", token=token).status

    def change_password(self, session: str) -> None:
        body = {"current_password": PASSWORD, "new_password": "a much longer one"}
        response = self.h.request("POST", "/api/v1/auth/password", body, session)
        self.assertEqual(response.status, 204)

    def test_password_change_ends_sessions_and_tokens(self) -> None:
        """After a password change every earlier session and token of the account is 401."""
        token = self.h.token("read")
        first, second = self.h.login(), self.h.login()
        self.assertEqual([self.status(t) for t in (token, first, second)], [200] * 3)
        self.change_password(first)
        self.assertEqual([self.status(t) for t in (token, first, second)], [401] * 3)
        fresh = self.h.login(password="a much longer one")
        self.assertEqual(self.status(fresh), 200)

    def test_mfa_enrolment_ends_sessions(self) -> None:
        """Confirming MFA ends the account's sessions (a login now needs a code)."""
        other = self.h.login()
        session = self.h.login()
        uri = self.h.request("POST", "/api/v1/auth/mfa/enrol", {}, session).json()["otpauth_uri"]
        seed = parse_qs(urlparse(uri).query)["secret"][0]
        code = {"code": _code(seed, self.h.clock.seconds())}
        confirm = self.h.request("POST", "/api/v1/auth/mfa/confirm", code, session)
        self.assertEqual(confirm.status, 200)
        self.assertEqual((self.status(other), self.status(session)), (401, 401))

    def test_token_expires(self) -> None:
        """A token works until token_seconds after it was made, then 401."""
        token = self.h.token("read")
        listed = self.h.request("GET", "/api/v1/tokens", token=self.h.login()).json()["items"]
        self.assertEqual(listed[0]["expires_at"], START + 3600.0)
        self.h.clock.advance(3599.0)
        self.assertEqual(self.status(token), 200)
        self.h.clock.advance(1.0)
        self.assertEqual(self.status(token), 401)

    def test_default_token_lifetime(self) -> None:
        """By default a token lasts 90 days."""
        h = ApiHarness()
        token = h.token("read")
        h.clock.advance(90 * 86400.0 - 1)
        self.assertEqual(h.request("GET", "/api/v1/status", token=token).status, 200)
        h.clock.advance(1.0)
        self.assertEqual(h.request("GET", "/api/v1/status", token=token).status, 401)

    def test_removed_or_disabled_owner(self) -> None:
        """Tokens and sessions of a disabled or removed owner stop; disabled cannot log in."""
        token, session = self.h.token("read"), self.h.login()
        alice = self.h.admin_store.accounts["alice"]
        self.h.admin_store.accounts["alice"] = attrs.evolve(alice, disabled=True)
        self.h.clock.advance(10.0)  # what another node or wardenctl changed is seen within 10 s
        self.assertEqual((self.status(token), self.status(session)), (401, 401))
        login = self.h.request("POST", "/api/v1/auth/login",
                               {"username": "alice", "password": PASSWORD})  # fmt: skip
        self.assertEqual(login.status, 401)
        self.h.admin_store.accounts["alice"] = alice
        self.h.clock.advance(10.0)
        self.assertEqual(self.status(token), 200)
        del self.h.admin_store.accounts["alice"]
        self.h.clock.advance(10.0)
        self.assertEqual((self.status(token), self.status(session)), (401, 401))
