"""
TLS for the admin listener: a self-signed certificate generated on first start
(``cryptography``; its SHA-256 fingerprint is logged), TLS 1.2 or later with
Twisted's modern cipher list, and reloading of the certificate and key (SIGHUP)
without a restart: every new connection gets the context built last.

The certificate in use is exported as
``warden_tls_certificate_expiry_timestamp_seconds{listener}`` (its notAfter, Unix
seconds), set at start and after each successful reload, so an alert can warn
before it expires.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from prometheus_client import Gauge
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLContextFactory, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

#: How long a generated certificate is valid.
VALIDITY_DAYS = 825

CERTIFICATE_EXPIRY = Gauge(
    "warden_tls_certificate_expiry_timestamp_seconds",
    "When the certificate a TLS listener serves stops being valid (its notAfter), Unix time",
    ["listener"],
)


def generate_self_signed(
    cert_path: str, key_path: str, clock: IReactorTime, names: tuple[str, ...] = ()
) -> str:
    """
    Write a new EC P-256 key (mode 0600) and a self-signed certificate for
    ``localhost``, 127.0.0.1, ::1 and ``names``; return its SHA-256 fingerprint.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.fromtimestamp(clock.seconds(), datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Warden admin")])
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


def fingerprint(cert_pem: bytes) -> str:
    """The SHA-256 fingerprint of a PEM certificate, as ``AB:CD:...``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def build_context(cert_path: str, key_path: str) -> SSL.Context:
    """
    An OpenSSL context serving the certificate chain and key in these PEM files,
    TLS 1.2+ only, with Twisted's default (forward-secret, AEAD-first) ciphers.

    Raises:
        OSError: a file cannot be read.
        ValueError: the files are not a matching PEM certificate and key.
    """
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
    options = ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
        certificate=crypto.X509.from_cryptography(certs[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in certs[1:]],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    context: SSL.Context = options.getContext()
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

    def __init__(self, cert_path: str, key_path: str, listener: str = "admin") -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self._expiry = CERTIFICATE_EXPIRY.labels(listener)
        self._context = build_context(cert_path, key_path)
        self.fingerprint, self.not_after = self._read_certificate()
        self._expiry.set(self.not_after)

    def _read_certificate(self) -> tuple[str, float]:
        """The fingerprint and notAfter (Unix time) of the served certificate."""
        with open(self.cert_path, "rb") as f:
            pem = f.read()
        not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
        return fingerprint(pem), not_after

    def getContext(self) -> SSL.Context:  # noqa: N802
        """The context for a new connection."""
        return self._context

    def reload(self) -> bool:
        """
        Read the files again; keep the old context (and log why) if they are bad.
        Returns whether the new certificate is in use.
        """
        try:
            context = build_context(self.cert_path, self.key_path)
            self.fingerprint, self.not_after = self._read_certificate()
        except (OSError, ValueError, SSL.Error) as e:
            self.log.error(
                "Admin TLS certificate not reloaded, keeping the old one: {error}", error=str(e)
            )
            return False
        self._context = context
        self._expiry.set(self.not_after)
        self.log.info(
            "Admin TLS certificate reloaded; SHA-256 fingerprint {fingerprint}",
            fingerprint=self.fingerprint,
        )
        return True
