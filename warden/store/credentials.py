"""
Digest credentials: HA1 values (RFC 2617 §3.2.2.2, RFC 8760 §2) and passwords.

Passwords are never stored; the directory keeps ``H(username:realm:password)``
for every algorithm Warden offers, so the SIP digest code and ``wardenctl`` share
these functions.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import unicodedata
from collections.abc import Iterable

from warden.model import Extension

#: The digest algorithms Warden can verify, in its default offer order.
ALGORITHMS: tuple[str, ...] = ("MD5", "SHA-256")

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """
    Hex digest of ``username:realm:password`` (UTF-8) with ``algorithm``.

    Args:
        algorithm: ``MD5`` or ``SHA-256`` (case-insensitive).

    Raises:
        ValueError: the algorithm is not one of L{ALGORITHMS}.
    """
    try:
        hash_function = _HASHES[algorithm.upper()]
    except KeyError:
        raise ValueError(f"unknown digest algorithm {algorithm!r}") from None
    return hash_function(f"{username}:{realm}:{password}".encode()).hexdigest()


def parse_algorithms(text: str | Iterable[str]) -> tuple[str, ...]:
    """
    Normalise a list of algorithm names (``"md5,sha-256"`` or a sequence).

    Returns the canonical names in the order given.

    Raises:
        ValueError: an unknown or repeated name, or an empty list.
    """
    names = text.split(",") if isinstance(text, str) else list(text)
    result: list[str] = []
    for raw in names:
        name = raw.strip().upper()
        if name not in ALGORITHMS:
            raise ValueError(f"unknown digest algorithm {raw.strip()!r} (known: MD5, SHA-256)")
        if name in result:
            raise ValueError(f"digest algorithm {name} given twice")
        result.append(name)
    if not result:
        raise ValueError("no digest algorithm given")
    return tuple(result)


#: Why an extension may not list MD5 in FIPS mode (wardenctl, the admin API).
FIPS_MD5_REFUSED = "MD5 is not FIPS-approved; in FIPS mode ([security] fips) list SHA-256 only"


def generate_password(length: int = 20) -> str:
    """A random password of ASCII letters and digits, from the ``secrets`` module."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))


#: The longest display name accepted (characters).
DISPLAY_NAME_MAX = 128


def display_name_problem(name: str) -> str | None:
    """
    Why ``name`` cannot be an extension's display name, or None when it can.

    A display name goes into From and P-Asserted-Identity as an RFC 3261
    quoted-string (§25.1), escaped there; it may hold quotes, backslashes and
    any printable Unicode, but no control or format characters (line breaks
    cannot appear in a quoted-string at all, and bidirectional overrides make
    a caller ID read as something else) and at most L{DISPLAY_NAME_MAX}
    characters.
    """
    if len(name) > DISPLAY_NAME_MAX:
        return f"a display name has at most {DISPLAY_NAME_MAX} characters, got {len(name)}"
    for char in name:
        if unicodedata.category(char)[0] == "C" and char != " ":
            return (
                f"a display name must not contain control or format characters,"
                f" got U+{ord(char):04X} in {name!r}"
            )
    return None


def make_extension(
    number: str,
    name: str,
    realm: str,
    password: str,
    algorithms: Iterable[str] = (),
    enabled: bool = True,
    md5: bool = True,
) -> Extension:
    """
    Build an Extension with the HA1 values for ``password`` in ``realm``.

    Args:
        number: the extension number, also the digest user name.
        name: display name.
        realm: the digest realm.
        password: the SIP password (not kept).
        algorithms: algorithms offered to this extension; empty means the
            registrar's configured default.
        enabled: whether it may register.
        md5: keep an MD5 HA1 too; False in FIPS mode (``[security] fips``),
            where MD5 is not computed at all (with a FIPS provider active
            OpenSSL refuses it), so such an extension can answer SHA-256 only.
    """
    return Extension(
        number=number,
        name=name,
        realm=realm,
        ha1_md5=compute_ha1("MD5", number, realm, password) if md5 else "",
        ha1_sha256=compute_ha1("SHA-256", number, realm, password),
        algorithms=tuple(algorithms),
        enabled=enabled,
    )
