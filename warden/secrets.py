"""
Admin secrets: scrypt password hashes (stdlib ``hashlib.scrypt``, a random salt
per account), API tokens and MFA recovery codes.

The admin API (L{warden.admin.auth}) and the second factors (L{warden.features})
both use them, so they sit below both: a feature plugin never imports the admin
API (ADR 0014).

A password hash is ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``, so the cost can
be raised later without breaking stored hashes. Tokens and recovery codes are
random (``secrets``) and high-entropy, so a plain SHA-256 of them is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

#: scrypt cost: n=2**14, r=8, p=1 (16 MiB, the commonly recommended interactive setting).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
#: The prefix of every API token: ``wdn_<id>_<secret>``.
TOKEN_PREFIX = "wdn_"
MIN_PASSWORD_LENGTH = 12


def hash_password(password: str, n: int = SCRYPT_N) -> str:
    """The scrypt hash string of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=_KEY_BYTES
    )


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare); False if malformed."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(key)
        actual = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


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
