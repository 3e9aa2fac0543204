"""
TLS contexts shared by Warden's TLS listeners (the admin API and SIP over TLS):
a self-signed certificate generated on first start (``cryptography``; its
SHA-256 fingerprint is logged), a minimum protocol version and cipher list
(L{TlsPolicy}), optional verification of peers' certificates against a CA
bundle, and reloading of the certificate and key (SIGHUP, L{install_sighup})
without a restart: every new connection gets the context built last, and
established connections keep theirs.

The certificate in use is exported as
``warden_tls_certificate_expiry_timestamp_seconds{listener}`` (its notAfter, Unix
seconds), set at start and after each successful reload, so an alert can warn
before it expires.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
from collections.abc import Callable
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from prometheus_client import Gauge
from twisted.internet import ssl
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLContextFactory,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

#: How long a generated certificate is valid.
VALIDITY_DAYS = 825

#: Mozilla's "intermediate" TLS 1.2 cipher list (server-side-tls guidelines 5.7);
#: TLS 1.3 suites are OpenSSL's defaults, all of them forward-secret AEAD.
MOZILLA_INTERMEDIATE = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)

#: The TLS 1.2 suites FIPS mode allows (``[security] fips``; NIST SP 800-52r2
#: §3.3.1): ECDHE key exchange, AES-GCM, SHA-256/384. No ChaCha20-Poly1305, no
#: finite-field DHE, no CBC.
FIPS_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
)
#: The TLS 1.3 suites FIPS mode allows (AES-GCM only: TLS_CHACHA20_POLY1305_SHA256
#: is not approved).
FIPS_TLS13_SUITES = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"
#: The key-exchange groups FIPS mode allows (NIST curves; no X25519).
FIPS_GROUPS = "P-256:P-384"
_FIPS_CIPHER_NAMES = frozenset(FIPS_CIPHERS.split(":"))

#: ``min_version`` values and the protocol versions they name.
TLS_VERSIONS = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


@attrs.frozen
class TlsPolicy:
    """
    How a listener negotiates TLS.

    Attributes:
        min_version: the oldest protocol version accepted ("1.2" or "1.3").
        ciphers: an OpenSSL cipher string for TLS 1.2 ("" for Twisted's default).
        ca: a PEM bundle; when set, peers must present a certificate it signed.
        fips: FIPS mode (``[security] fips``): only L{FIPS_CIPHERS} (the default
            when ``ciphers`` is ""), L{FIPS_TLS13_SUITES} and L{FIPS_GROUPS}.
    """

    min_version: str = "1.2"
    ciphers: str = ""
    ca: str = ""
    fips: bool = False


CERTIFICATE_EXPIRY = Gauge(
    "warden_tls_certificate_expiry_timestamp_seconds",
    "When the certificate a TLS listener serves stops being valid (its notAfter), Unix time",
    ["listener"],
)


def generate_self_signed(
    cert_path: str,
    key_path: str,
    clock: IReactorTime,
    names: tuple[str, ...] = (),
    common_name: str = "Warden admin",
) -> str:
    """
    Write a new EC P-256 key (mode 0600) and a self-signed certificate for
    ``localhost``, 127.0.0.1, ::1 and ``names``; return its SHA-256 fingerprint.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.fromtimestamp(clock.seconds(), datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for text in ("127.0.0.1", "::1", *names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            alt.append(x509.DNSName(text))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return fingerprint(cert.public_bytes(serialization.Encoding.PEM))


@attrs.frozen
class CertificatePair:
    """
    The certificate and key files a listener serves.

    Attributes:
        cert_path, key_path: the PEM files.
        generated: the SHA-256 fingerprint when the pair was generated just now,
            else "" (configured, or generated on an earlier start).
    """

    cert_path: str
    key_path: str
    generated: str = ""


def certificate_pair(
    certificate: str,
    private_key: str,
    generated_paths: tuple[str, str],
    clock: IReactorTime,
    names: tuple[str, ...] = (),
    common_name: str = "Warden admin",
) -> CertificatePair:
    """
    The configured ``certificate``/``private_key``; when they are "", the pair
    at ``generated_paths``, generated now (for ``names``) if either file is missing.
    """
    if certificate:
        return CertificatePair(certificate, private_key)
    cert, key = generated_paths
    if os.path.exists(cert) and os.path.exists(key):
        return CertificatePair(cert, key)
    fp = generate_self_signed(cert, key, clock, names, common_name)
    return CertificatePair(cert, key, fp)


def fingerprint(cert_pem: bytes) -> str:
    """The SHA-256 fingerprint of a PEM certificate, as ``AB:CD:...``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _read_ca(path: str) -> list[crypto.X509]:
    """The certificates of the PEM bundle at ``path`` (ValueError when it has none)."""
    with open(path, "rb") as f:
        pem = f.read()
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise ValueError(f"{path}: not a PEM certificate bundle: {e}") from None
    return [crypto.X509.from_cryptography(c) for c in certs]


def check_ciphers(ciphers: str) -> None:
    """Raise ValueError unless OpenSSL's cipher string ``ciphers`` selects a cipher."""
    try:
        SSL.Context(SSL.TLS_METHOD).set_cipher_list(ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        raise ValueError(f"the cipher string {ciphers!r} selects no cipher") from None


def cipher_names(ciphers: str) -> list[str]:
    """
    The TLS 1.2 (and older) suites OpenSSL's cipher string ``ciphers`` selects,
    by OpenSSL name (TLS 1.3 suites are configured apart and left out).

    Raises:
        ValueError: the string selects no cipher.
    """
    check_ciphers(ciphers)
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_cipher_list(ciphers.encode("ascii"))
    names = SSL.Connection(context, None).get_cipher_list()
    return [n for n in names if not n.startswith("TLS_")]


def fips_cipher_problem(ciphers: str) -> str:
    """
    Why ``ciphers`` is not allowed in FIPS mode ("" when every suite it selects
    is in L{FIPS_CIPHERS}).
    """
    try:
        names = cipher_names(ciphers)
    except ValueError as e:
        return str(e)
    refused = [n for n in names if n not in _FIPS_CIPHER_NAMES]
    if not refused:
        return ""
    more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
    return (
        f"selects suites that are not FIPS-approved: {', '.join(refused[:5])}{more}"
        f" (allowed: {FIPS_CIPHERS})"
    )


def _restrict_to_fips(context: SSL.Context) -> None:
    """TLS 1.3 AES-GCM suites and the NIST groups only (L{FIPS_TLS13_SUITES}, L{FIPS_GROUPS})."""
    from OpenSSL._util import lib as _openssl

    context.set_tls13_ciphersuites(FIPS_TLS13_SUITES.encode("ascii"))
    if not _openssl.SSL_CTX_set1_curves_list(context._context, FIPS_GROUPS.encode("ascii")):
        raise ValueError(f"OpenSSL refuses the groups {FIPS_GROUPS}")


def client_tls_options(
    hostname: str, trust_root: Any = None, fips: bool = False
) -> IOpenSSLClientConnectionCreator:
    """
    Twisted's ``optionsForClientTLS`` for Warden's outgoing TLS (x5u fetches,
    webhooks, SMTP STARTTLS): the server's certificate verified against
    ``trust_root`` (None: the system's CAs) and the host name; with ``fips``
    TLS 1.2+ with the FIPS suites and groups only (as L{build_context}).
    """
    extra: dict[str, Any] = {}
    if fips:
        extra.update(
            raiseMinimumTo=TLS_VERSIONS["1.2"],
            acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(FIPS_CIPHERS),  # type: ignore[no-untyped-call]
        )
    options = ssl.optionsForClientTLS(
        hostname, trustRoot=trust_root, extraCertificateOptions=extra
    )
    if fips:
        _restrict_to_fips(_client_context(options))
    return options


def _client_context(options: IOpenSSLClientConnectionCreator) -> SSL.Context:
    """
    The context every connection of ``options`` (Twisted's ClientTLSOptions) is
    made from: its ``_ctx`` before Twisted 25, else the cached context of the
    CertificateOptions whose ``_makeTLSConnection`` it calls.
    """
    found: Any = options
    context = getattr(found, "_ctx", None)
    if context is None:
        context = found._createConnection.__self__.getContext()
    if not isinstance(context, SSL.Context):
        raise TypeError("cannot reach the OpenSSL context of Twisted's client TLS options")
    return context


@implementer(IPolicyForHTTPS)
class ClientTlsPolicy:
    """
    Twisted's ``BrowserLikePolicyForHTTPS`` (certificates verified against
    ``trust_root`` or the system's CAs, and the host name), restricted to the
    FIPS suites and groups with ``fips``.
    """

    def __init__(self, trust_root: Any = None, fips: bool = False) -> None:
        self.trust_root = trust_root
        self.fips = fips

    def creatorForNetloc(  # noqa: N802 (Twisted's name)
        self, hostname: bytes, port: int
    ) -> IOpenSSLClientConnectionCreator:
        """The TLS options connecting to ``hostname`` (Twisted's name)."""
        return client_tls_options(hostname.decode("idna"), self.trust_root, self.fips)


def build_context(cert_path: str, key_path: str, policy: TlsPolicy | None = None) -> SSL.Context:
    """
    An OpenSSL context serving the certificate chain and key in these PEM files,
    with ``policy``'s minimum version, ciphers and peer verification (default:
    TLS 1.2+ with Twisted's forward-secret, AEAD-first ciphers, no peer
    certificates asked for); in FIPS mode only approved suites and groups.

    Raises:
        OSError: a file cannot be read.
        ValueError: the files are not a matching PEM certificate and key, or
            the cipher string selects no cipher (or, in FIPS mode, one not approved).
    """
    policy = policy or TlsPolicy()
    with open(cert_path, "rb") as f:
        cert_pem = f.read()
    with open(key_path, "rb") as f:
        key_pem = f.read()
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as e:
        raise ValueError(f"{cert_path} / {key_path}: not a PEM certificate and key: {e}") from None
    if certs[0].public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError(f"{key_path} is not the key of the certificate in {cert_path}")
    extra: dict[str, Any] = {}
    ciphers = policy.ciphers or (FIPS_CIPHERS if policy.fips else "")
    if policy.fips:
        problem = fips_cipher_problem(ciphers)
        if problem:
            raise ValueError(f"FIPS mode: the cipher string {ciphers!r} {problem}")
    if ciphers:
        check_ciphers(ciphers)
        extra["acceptableCiphers"] = ssl.AcceptableCiphers.fromOpenSSLCipherString(ciphers)  # type: ignore[no-untyped-call]
    if policy.ca:
        extra.update(verify=True, caCerts=_read_ca(policy.ca), requireCertificate=True)
    options = ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
        certificate=crypto.X509.from_cryptography(certs[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in certs[1:]],
        raiseMinimumTo=TLS_VERSIONS[policy.min_version],
        **extra,
    )
    context: SSL.Context = options.getContext()
    if policy.fips:
        _restrict_to_fips(context)
    return context


@implementer(IOpenSSLContextFactory)
class ReloadableContextFactory:
    """
    An OpenSSL context factory whose certificate can be replaced while serving.

    Args:
        cert_path, key_path: PEM files, read now and on each L{reload}.
        listener: the ``listener`` label of the expiry metric.
    """

    log = Logger()

    def __init__(
        self,
        cert_path: str,
        key_path: str,
        listener: str = "admin",
        policy: TlsPolicy | None = None,
    ) -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self.listener = listener
        self.policy = policy
        self._expiry = CERTIFICATE_EXPIRY.labels(listener)
        self._context = build_context(cert_path, key_path, policy)
        self.fingerprint, self.not_after = self._read_certificate()
        self._expiry.set(self.not_after)

    def _read_certificate(self) -> tuple[str, float]:
        """The fingerprint and notAfter (Unix time) of the served certificate."""
        with open(self.cert_path, "rb") as f:
            pem = f.read()
        not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
        return fingerprint(pem), not_after

    def getContext(self) -> SSL.Context:
        """The context for a new connection."""
        return self._context

    def reload(self) -> bool:
        """
        Read the files again; keep the old context (and log why) if they are bad.
        Returns whether the new certificate is in use.
        """
        try:
            context = build_context(self.cert_path, self.key_path, self.policy)
            self.fingerprint, self.not_after = self._read_certificate()
        except (OSError, ValueError, SSL.Error) as e:
            self.log.error(
                "TLS certificate of the {listener} listener not reloaded, keeping the old"
                " one: {error}",
                listener=self.listener,
                error=str(e),
            )
            return False
        self._context = context
        self._expiry.set(self.not_after)
        self.log.info(
            "TLS certificate of the {listener} listener reloaded; SHA-256 fingerprint"
            " {fingerprint}",
            listener=self.listener,
            fingerprint=self.fingerprint,
        )
        return True


def install_sighup(reactor: Any) -> Callable[[Callable[[], None]], None]:
    """
    A signal installer: SIGHUP runs each installed callback in the reactor
    thread. Installing keeps the handler installed before (another listener's
    reload), so every TLS listener reloads on the same signal.
    """

    def install(callback: Callable[[], None]) -> None:
        previous = signal.getsignal(signal.SIGHUP)

        def handler(signum: int, frame: Any) -> None:
            reactor.callFromThread(callback)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGHUP, handler)

    return install
