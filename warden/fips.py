"""
FIPS mode's start-up report (``[security] fips``, ADR 0029, docs/FIPS.md).

Warden's cryptography runs in two OpenSSL libraries, and each is asked, not
assumed, whether it runs FIPS-validated code:

- ``hashlib`` (digest hashes, PBKDF2, HMAC of nonces) uses the system's
  ``libcrypto`` that Python's ``_hashlib`` is linked against. It is asked with
  ``EVP_default_properties_is_fips_enabled`` (``_hashlib.get_fips_mode()``) and,
  through ``ctypes`` on the same loaded library, ``OSSL_PROVIDER_available(NULL,
  "fips")``: FIPS properties without a loaded FIPS provider make every hash
  fail, so both must hold.
- TLS (Twisted through pyOpenSSL) and certificates use the OpenSSL that the
  ``cryptography`` package is built with (often its own static copy). It is
  asked with ``cryptography``'s ``is_fips_enabled()``, which calls the same
  OpenSSL function in that library.

L{report} logs one line with both answers and sets ``warden_fips_mode`` and
``warden_fips_provider_active``. FIPS mode with no active provider still starts:
Warden then restricts itself to approved algorithms, but its cryptography is not
validated, which the log says loudly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ssl

import attrs
from prometheus_client import Gauge
from twisted.logger import Logger

__all__ = ["CryptoLibrary", "FipsStatus", "fips_status", "report"]

FIPS_MODE = Gauge(
    "warden_fips_mode", "1 when [security] fips = true restricts Warden's algorithms"
)
FIPS_PROVIDER_ACTIVE = Gauge(
    "warden_fips_provider_active",
    "1 when every OpenSSL Warden uses (hashlib's and TLS's) runs with a FIPS provider",
)

_log = Logger()


@attrs.frozen
class CryptoLibrary:
    """
    What one OpenSSL library said about itself.

    Attributes:
        role: what Warden uses it for (``hashlib``, ``tls``).
        version: its version text (``OpenSSL 3.0.19 27 Jan 2026``); "" if unknown.
        fips_properties: whether its default properties ask for ``fips=yes``
            (``EVP_default_properties_is_fips_enabled``).
        fips_provider: whether a FIPS provider is loaded in it; None when it
            was not asked (``cryptography``'s OpenSSL without FIPS properties).
    """

    role: str
    version: str
    fips_properties: bool
    fips_provider: bool | None

    @property
    def fips_active(self) -> bool:
        """FIPS properties on and a FIPS provider loaded."""
        return self.fips_properties and self.fips_provider is True

    def describe(self) -> str:
        """``hashlib: OpenSSL 3.0.19 ..., FIPS properties no, FIPS provider not loaded``."""
        provider = {True: "loaded", False: "not loaded", None: "not asked"}[self.fips_provider]
        return (
            f"{self.role}: {self.version or 'unknown OpenSSL'}, FIPS properties"
            f" {'yes' if self.fips_properties else 'no'}, FIPS provider {provider}"
        )


@attrs.frozen
class FipsStatus:
    """The answers of every OpenSSL library Warden uses."""

    libraries: tuple[CryptoLibrary, ...]

    @property
    def provider_active(self) -> bool:
        """Whether every library runs with a FIPS provider."""
        return bool(self.libraries) and all(lib.fips_active for lib in self.libraries)


def _loaded_libcrypto(version_number: int) -> ctypes.CDLL | None:
    """
    The ``libcrypto`` already loaded in this process whose version is
    ``version_number`` (the one ``_hashlib`` and ``_ssl`` use); None if not found.
    """
    candidates: list[str] = []
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(" ")[-1]
                if "/libcrypto.so" in path and path not in candidates:
                    candidates.append(path)
    except OSError:
        pass
    found = ctypes.util.find_library("crypto")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            lib.OpenSSL_version_num.restype = ctypes.c_ulong
            if lib.OpenSSL_version_num() == version_number:
                return lib
        except (OSError, AttributeError):
            continue
    return None


def hashlib_library() -> CryptoLibrary:
    """What the OpenSSL behind ``hashlib`` says (ValueError from OpenSSL: not in FIPS mode)."""
    try:
        import _hashlib
    except ImportError:  # a Python built without OpenSSL: its own MD5/SHA code
        return CryptoLibrary("hashlib", "Python's built-in hashes", False, False)
    try:
        properties = bool(_hashlib.get_fips_mode())
    except ValueError:
        properties = False
    provider: bool | None = None
    lib = _loaded_libcrypto(ssl.OPENSSL_VERSION_NUMBER)
    if lib is not None:
        try:
            available = lib.OSSL_PROVIDER_available
        except AttributeError:  # OpenSSL 1.1: FIPS_mode() is the whole answer
            provider = properties
        else:
            available.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            available.restype = ctypes.c_int
            # A provider merely named "fips" is not enough: with FIPS properties
            # on, SHA-256 must also be served by it.
            provider = bool(available(None, b"fips")) and (not properties or _sha256_works())
    return CryptoLibrary("hashlib", ssl.OPENSSL_VERSION, properties, provider)


def _sha256_works() -> bool:
    import hashlib

    try:
        hashlib.sha256(b"warden").digest()
    except ValueError:  # "[digital envelope routines] unsupported"
        return False
    return True


def tls_library() -> CryptoLibrary:
    """
    What the OpenSSL of ``cryptography`` (pyOpenSSL, Twisted's TLS) says. It
    has no call telling whether a FIPS provider is loaded; with FIPS properties
    on, a SHA-256 succeeds only when one (a provider answering ``fips=yes``
    fetches) is, so that is asked instead.
    """
    from cryptography.exceptions import InternalError, UnsupportedAlgorithm
    from cryptography.hazmat.bindings._rust import openssl as rust_openssl
    from cryptography.hazmat.primitives import hashes

    properties = bool(rust_openssl.is_fips_enabled())
    provider: bool | None = None
    if properties:
        try:
            digest = hashes.Hash(hashes.SHA256())
            digest.update(b"warden")
            digest.finalize()
            provider = True
        except (UnsupportedAlgorithm, InternalError, ValueError):
            provider = False
    return CryptoLibrary("tls", rust_openssl.openssl_version_text(), properties, provider)


def fips_status() -> FipsStatus:
    """Ask both libraries now."""
    return FipsStatus((hashlib_library(), tls_library()))


def report(fips: bool, status: FipsStatus | None = None) -> FipsStatus:
    """
    Log the one start-up line about FIPS and set the two gauges. With ``fips``
    and no active provider the line is a warning saying the cryptography is
    not validated.
    """
    status = status if status is not None else fips_status()
    FIPS_MODE.set(1 if fips else 0)
    FIPS_PROVIDER_ACTIVE.set(1 if status.provider_active else 0)
    details = "; ".join(lib.describe() for lib in status.libraries)
    if fips and not status.provider_active:
        _log.warn(
            "FIPS mode on, FIPS provider active: no ({details}). Warden uses"
            " FIPS-approved algorithms only, but the OpenSSL in use runs no FIPS"
            " provider, so this is NOT validated cryptography (docs/FIPS.md)",
            details=details,
        )
    else:
        _log.info(
            "FIPS mode {mode}, FIPS provider active: {active} ({details})",
            mode="on" if fips else "off",
            active="yes" if status.provider_active else "no",
            details=details,
        )
    return status
