"""
Admin secrets: password hashes (scrypt, or PBKDF2-HMAC-SHA256 in FIPS mode;
stdlib ``hashlib``, a random salt per account), API tokens and MFA recovery codes.

The admin API (L{warden.admin.auth}) and the second factors (L{warden.features})
both use them, so they sit below both: a feature plugin never imports the admin
API (ADR 0014).

A password hash is ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``, or in FIPS mode
(``[security] fips``, ADR 0029) ``pbkdf2_sha256$<iterations>$<salt hex>$<hash
hex>``, so the cost can be raised later without breaking stored hashes. scrypt
is not FIPS-approved: in FIPS mode a scrypt hash is never computed, so it does
not verify (L{PasswordHasher}); the password must be set again. Tokens and recovery codes are
random (``secrets``) and high-entropy, so a plain SHA-256 of them is stored.

Passwords Warden itself presents (a trunk's, an SMTP server's) are never
written in the configuration: L{read_password} reads one from the environment
variable or the file the configuration names.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets

import attrs

from warden.errors import ConfigError

#: scrypt cost: n=2**14, r=8, p=1 (16 MiB, the commonly recommended interactive setting).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
#: PBKDF2-HMAC-SHA256 iterations of new hashes in FIPS mode (OWASP 2023: 600,000).
PBKDF2_ITERATIONS = 600_000
#: Stored hashes with more iterations than this are refused (a tampered row
#: must not stall a thread for minutes).
_PBKDF2_MAX_ITERATIONS = 10_000_000
SCRYPT_SCHEME = "scrypt"
PBKDF2_SCHEME = "pbkdf2_sha256"
_SALT_BYTES = 16
_KEY_BYTES = 32
#: The prefix of every API token: ``wdn_<id>_<secret>``.
TOKEN_PREFIX = "wdn_"
MIN_PASSWORD_LENGTH = 12
#: An environment variable name a configuration may give (``password_env``).
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
#: The longest password file read.
MAX_PASSWORD_BYTES = 4096


def read_password(env: str, file: str, env_key: str, file_key: str) -> str:
    """
    A password from the environment variable ``env`` or the first line of
    ``file`` (read now); "" when neither is given.

    Args:
        env_key, file_key: the configuration keys that named them
            (``trunks[0].password_env``), for errors.

    Raises:
        ConfigError: the variable is unset or the file unreadable or empty.
    """
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise ConfigError(env_key, f"the environment variable {env} is not set")
        return value
    if not file:
        return ""
    try:
        with open(file, "rb") as f:
            data = f.read(MAX_PASSWORD_BYTES + 1)
    except OSError as e:
        raise ConfigError(file_key, f"cannot read {file}: {e.strerror}") from None
    if len(data) > MAX_PASSWORD_BYTES:
        raise ConfigError(file_key, "longer than a password can be")
    try:
        value = data.decode("utf-8").splitlines()[0] if data.strip() else ""
    except UnicodeDecodeError:
        raise ConfigError(file_key, "not UTF-8 text") from None
    if not value:
        raise ConfigError(file_key, f"{file} is empty")
    return value


def hash_password(password: str, n: int = SCRYPT_N) -> str:
    """The scrypt hash string of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=_KEY_BYTES
    )


def hash_password_pbkdf2(password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The PBKDF2-HMAC-SHA256 hash string of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _pbkdf2(password, salt, iterations)
    return f"{PBKDF2_SCHEME}${iterations}${salt.hex()}${key.hex()}"


def _pbkdf2(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(
        "sha256", password.encode("utf-8"), salt, iterations, dklen=_KEY_BYTES
    )


def hash_scheme(stored: str) -> str:
    """The scheme of a stored hash (``scrypt``, ``pbkdf2_sha256``), "" when unknown."""
    scheme = stored.split("$", 1)[0]
    return scheme if scheme in (SCRYPT_SCHEME, PBKDF2_SCHEME) else ""


def _digits(text: str, limit: int) -> int:
    """An ASCII decimal 1..limit (ValueError otherwise: ``int`` takes other digits)."""
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= limit:
        raise ValueError(text)
    return int(text)


def verify_password(password: str, stored: str, scrypt_allowed: bool = True) -> bool:
    """
    Whether ``password`` matches ``stored`` (constant-time compare); False if
    malformed, and for a scrypt hash unless ``scrypt_allowed``.
    """
    try:
        scheme, *fields = stored.split("$")
        if scheme == PBKDF2_SCHEME:
            iterations, salt, key = fields
            expected = bytes.fromhex(key)
            actual = _pbkdf2(
                password, bytes.fromhex(salt), _digits(iterations, _PBKDF2_MAX_ITERATIONS)
            )
        elif scheme == SCRYPT_SCHEME and scrypt_allowed:
            n, r, p, salt, key = fields
            expected = bytes.fromhex(key)
            actual = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


@attrs.frozen
class PasswordHasher:
    """
    Hashes and verifies admin passwords and voicemail PINs the way the
    configuration says: scrypt by default; in FIPS mode (``fips``)
    PBKDF2-HMAC-SHA256, and scrypt hashes made before do not verify (no
    non-approved algorithm runs; the password must be set again). Outside FIPS
    mode both kinds verify, so leaving FIPS mode needs no reset.
    """

    fips: bool = False

    def hash(self, password: str) -> str:
        """A new hash string of ``password``."""
        return hash_password_pbkdf2(password) if self.fips else hash_password(password)

    def verify(self, password: str, stored: str) -> bool:
        """Whether ``password`` matches ``stored`` (False for scrypt in FIPS mode)."""
        return verify_password(password, stored, scrypt_allowed=not self.fips)

    def usable(self, stored: str) -> bool:
        """Whether ``stored`` can be verified here (not a scrypt hash in FIPS mode)."""
        scheme = hash_scheme(stored)
        return scheme == PBKDF2_SCHEME or (scheme == SCRYPT_SCHEME and not self.fips)

    def dummy(self) -> str:
        """
        A hash no password matches that costs as much to verify as a real one
        (for unknown accounts, so they take as long to refuse).
        """
        salt, key = secrets.token_hex(_SALT_BYTES), secrets.token_hex(_KEY_BYTES)
        if self.fips:
            return f"{PBKDF2_SCHEME}${PBKDF2_ITERATIONS}${salt}${key}"
        return f"{SCRYPT_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt}${key}"


def generate_admin_password() -> str:
    """A random one-time password for a new admin account (about 120 bits)."""
    return secrets.token_urlsafe(15)


def sha256_hex(text: str) -> str:
    """The SHA-256 of ``text`` (UTF-8), in hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str, str]:
    """
    A new API token: ``(token_id, secret, token)``, where ``token`` is what the
    client sends (``wdn_<token_id>_<secret>``) and only ``sha256_hex(secret)`` is kept.
    """
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, secret, f"{TOKEN_PREFIX}{token_id}_{secret}"


def split_token(token: str) -> tuple[str, str] | None:
    """``(token_id, secret)`` of a token in the ``wdn_`` form, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or len(token_id) != 16 or not secret:
        return None
    return token_id, secret


def new_recovery_codes(count: int = 10) -> list[str]:
    """``count`` one-time MFA recovery codes like ``7f3a-9c2e-41d0``."""
    codes = []
    for _ in range(count):
        raw = secrets.token_hex(6)
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
    return codes


def normalise_recovery_code(code: str) -> str:
    """A recovery code as typed (any case, with or without dashes), canonical."""
    raw = code.strip().lower().replace("-", "").replace(" ", "")
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}" if len(raw) == 12 else raw
