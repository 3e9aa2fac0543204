"""
Password and PIN hashes in FIPS mode (``[security] fips``, ADR 0029):
PBKDF2-HMAC-SHA256, scrypt hashes refused, the admin login and ``wardenctl``.
"""

from __future__ import annotations

import io

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.admin.apihelper import PASSWORD, START, ApiHarness
from warden import secrets
from warden.admin.auth import AuthSettings
from warden.config import parse_config_text
from warden.ctl.admin import run_admin
from warden.ctl.main import build_parser
from warden.model.admin import AdminAccount
from warden.secrets import PBKDF2_ITERATIONS, PasswordHasher
from warden.store.credentials import compute_ha1
from warden.testing.admin import MemoryAdminStore

#: Cheap hashes for tests that log in many times (the format carries the count).
FEW = 1000


class Pbkdf2Tests(SynchronousTestCase):
    """The hash format and its verification."""

    def test_format_and_round_trip(self) -> None:
        """``pbkdf2_sha256$600000$salt$hash``; salts differ; only the password verifies."""
        first = PasswordHasher(fips=True).hash("s3cret password")
        second = PasswordHasher(fips=True).hash("s3cret password")
        scheme, iterations, salt, key = first.split("$")
        self.assertEqual((scheme, int(iterations)), ("pbkdf2_sha256", PBKDF2_ITERATIONS))
        self.assertGreaterEqual(PBKDF2_ITERATIONS, 600_000)
        self.assertEqual((len(salt), len(key)), (32, 64))
        self.assertNotEqual(first, second)
        hasher = PasswordHasher(fips=True)
        self.assertTrue(hasher.verify("s3cret password", first))
        self.assertFalse(hasher.verify("s3cret passwore", first))

    def test_independent_implementation_agrees(self) -> None:
        """``cryptography``'s PBKDF2 (another OpenSSL) derives the same key."""
        stored = secrets.hash_password_pbkdf2("pässword", iterations=FEW)
        _, iterations, salt, key = stored.split("$")
        kdf = PBKDF2HMAC(hashes.SHA256(), 32, bytes.fromhex(salt), int(iterations))
        kdf.verify("pässword".encode(), bytes.fromhex(key))  # raises when they differ

    def test_scrypt_refused_in_fips_mode(self) -> None:
        """A scrypt hash made before does not verify in FIPS mode; outside it, it does."""
        old = secrets.hash_password("s3cret password", n=2**10)
        self.assertFalse(PasswordHasher(fips=True).usable(old))
        self.assertFalse(PasswordHasher(fips=True).verify("s3cret password", old))
        self.assertTrue(PasswordHasher().usable(old))
        self.assertTrue(PasswordHasher().verify("s3cret password", old))

    def test_pbkdf2_verifies_outside_fips_mode(self) -> None:
        """Leaving FIPS mode needs no reset: PBKDF2 hashes still verify."""
        stored = secrets.hash_password_pbkdf2("s3cret password", iterations=FEW)
        self.assertTrue(PasswordHasher().verify("s3cret password", stored))
        self.assertTrue(PasswordHasher().hash("x").startswith("scrypt$"))

    def test_malformed_never_verifies(self) -> None:
        """Non-ASCII digits, absurd counts, bad hex, missing fields: False, no exception."""
        key = "00" * 32
        for stored in (
            "", "pbkdf2_sha256$", f"pbkdf2_sha256$\uff11\uff10$00${key}",
            f"pbkdf2_sha256$0$00${key}", f"pbkdf2_sha256$99999999999$00${key}",
            f"pbkdf2_sha256$1000$zz${key}", "pbkdf2_sha256$1000$00",
            f"pbkdf2_sha256$-5$00${key}",
        ):  # fmt: skip
            self.assertFalse(PasswordHasher(fips=True).verify("x", stored), stored)

    def test_dummy_costs_the_same_and_never_matches(self) -> None:
        """The dummy hash (for unknown accounts) has the real hash's cost and verifies nothing."""
        dummy = PasswordHasher(fips=True).dummy()
        self.assertTrue(dummy.startswith(f"pbkdf2_sha256${PBKDF2_ITERATIONS}$"))
        self.assertFalse(PasswordHasher(fips=True).verify("", dummy))
        self.assertTrue(PasswordHasher().dummy().startswith("scrypt$16384$8$1$"))


class FipsLoginTests(SynchronousTestCase):
    """The admin API's login and password change in FIPS mode."""

    def setUp(self) -> None:
        self.h = ApiHarness(AuthSettings(fips=True), fips=True)
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def add(self, name: str, stored: str) -> None:
        self.h.admin_store.accounts[name] = AdminAccount(name, stored, START)

    def login(self, name: str, password: str = PASSWORD) -> int:
        response = self.h.request(
            "POST", "/api/v1/auth/login", {"username": name, "password": password}
        )
        return response.status

    def test_pbkdf2_account_logs_in(self) -> None:
        """An account with a PBKDF2 hash logs in with its password, not with another."""
        self.add("alice", secrets.hash_password_pbkdf2(PASSWORD, iterations=FEW))
        self.assertEqual(self.login("alice"), 200)
        self.assertEqual(self.login("alice", "wrong password!"), 401)

    def test_scrypt_account_refused_with_a_clear_log(self) -> None:
        """The right password on a scrypt hash: 401, and a warning naming the fix."""
        self.add("bob", secrets.hash_password(PASSWORD, n=2**10))
        self.assertEqual(self.login("bob"), 401)
        texts = [formatEvent(e) for e in self.events]
        [line] = [t for t in texts if "cannot log in" in t]
        self.assertIn("scrypt", line)
        self.assertIn("wardenctl admin reset-password bob", line)
        self.assertNotIn(PASSWORD, " ".join(texts))

    def test_password_change_stores_pbkdf2(self) -> None:
        """A changed password is stored as PBKDF2 with the full iteration count."""
        self.add("alice", secrets.hash_password_pbkdf2(PASSWORD, iterations=FEW))
        auth = self.h.auth
        d = auth.change_password("alice", PASSWORD, "a brand new password")
        self.successResultOf(d)  # type: ignore[arg-type]
        stored = self.h.admin_store.accounts["alice"].password_hash
        self.assertTrue(stored.startswith(f"pbkdf2_sha256${PBKDF2_ITERATIONS}$"))

    def test_status_says_fips(self) -> None:
        """``/api/v1/status`` reports FIPS mode on and whether a FIPS provider is active."""
        self.add("alice", secrets.hash_password_pbkdf2(PASSWORD, iterations=FEW))
        token = self.h.login()
        status = self.h.request("GET", "/api/v1/status", token=token).json()
        self.assertEqual(status["fips"], {"mode": True, "provider_active": False})

    def test_md5_algorithms_refused(self) -> None:
        """An extension asking for MD5 digest is refused with 400 naming the reason."""
        self.add("alice", secrets.hash_password_pbkdf2(PASSWORD, iterations=FEW))
        token = self.h.login()
        body = {"number": "1001", "algorithms": ["MD5"]}
        response = self.h.request("POST", "/api/v1/extensions", body, token)
        self.assertEqual(response.status, 400, response.body)
        self.assertIn(b"MD5 is not FIPS-approved", response.body)

    def test_extensions_get_no_md5_ha1(self) -> None:
        """Extensions made or given a password through the API keep no MD5 HA1."""
        self.add("alice", secrets.hash_password_pbkdf2(PASSWORD, iterations=FEW))
        token = self.h.login()
        response = self.h.request("POST", "/api/v1/extensions", {"number": "1001"}, token)
        self.assertEqual(response.status, 201, response.body)
        reset = self.h.request("POST", "/api/v1/extensions/1001/password", {}, token)
        self.assertEqual(reset.status, 200, reset.body)
        stored = self.successResultOf(self.h.directory.get_extension("1001"))
        self.assertEqual(stored.ha1_md5, "")
        password = reset.json()["password"]
        self.assertEqual(stored.ha1_sha256, compute_ha1("SHA-256", "1001", "t.example", password))


class FipsCtlTests(SynchronousTestCase):
    """``wardenctl admin add`` and ``reset-password`` with ``[security] fips = true``."""

    def setUp(self) -> None:
        self.store = MemoryAdminStore()

    def run_command(self, config: str, *argv: str) -> tuple[int, str, str]:
        args = build_parser().parse_args(list(argv))
        out, err = io.StringIO(), io.StringIO()
        code = self.successResultOf(
            run_admin(args, parse_config_text(config), Clock(), out, err, self.store)
        )
        return code, out.getvalue(), err.getvalue()

    def test_add_hashes_with_pbkdf2(self) -> None:
        """``admin add`` stores a PBKDF2 hash that verifies the printed password."""
        code, out, _ = self.run_command("[security]\nfips = true\n", "admin", "add", "alice")
        self.assertEqual(code, 0)
        password = out.split("one-time password: ")[1].split()[0]
        stored = self.store.accounts["alice"].password_hash
        self.assertTrue(stored.startswith("pbkdf2_sha256$"))
        self.assertTrue(PasswordHasher(fips=True).verify(password, stored))

    def test_reset_password_replaces_a_scrypt_hash(self) -> None:
        """The printed password verifies in FIPS mode; the generation moves (sessions end)."""
        self.store.accounts["bob"] = AdminAccount("bob", secrets.hash_password("x", n=2**10), 0)
        code, out, _ = self.run_command(
            "[security]\nfips = true\n", "admin", "reset-password", "bob"
        )
        self.assertEqual(code, 0)
        password = out.split("one-time password: ")[1].split()[0]
        account = self.store.accounts["bob"]
        self.assertTrue(PasswordHasher(fips=True).verify(password, account.password_hash))
        self.assertEqual(account.generation, 1)
        code, _, err = self.run_command("", "admin", "reset-password", "nobody")
        self.assertEqual(code, 1)
        self.assertIn("no admin account nobody", err)

    def test_without_fips_scrypt(self) -> None:
        """Without FIPS mode ``admin add`` stores scrypt, as before."""
        self.run_command("", "admin", "add", "carol")
        self.assertTrue(self.store.accounts["carol"].password_hash.startswith("scrypt$"))
