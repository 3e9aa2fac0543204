"""
A throw-away STI PKI for STIR/SHAKEN tests: a CA, an optional intermediate
and SHAKEN leaf certificates (EC P-256, no SAN, as ATIS-1000080 issues
them), made fresh with ``cryptography`` in each test.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

DAY = datetime.timedelta(days=1)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@attrs.frozen
class Issued:
    """A key and its certificate."""

    key: PrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        """The certificate as PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The key as unencrypted PKCS #8 PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _now(at: float | None) -> datetime.datetime:
    if at is None:
        return datetime.datetime.now(datetime.UTC)
    return datetime.datetime.fromtimestamp(at, datetime.UTC)


def make_ca(
    name: str = "Test STI-CA", issuer: Issued | None = None, at: float | None = None
) -> Issued:
    """A CA certificate (self-signed, or signed by ``issuer``: an intermediate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now(at)
    signer = issuer.key if issuer is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer.cert.subject if issuer is not None else _name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.cert.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    return Issued(key, builder.sign(signer, hashes.SHA256()))  # type: ignore[arg-type]


def make_leaf(
    issuer: Issued,
    key: PrivateKey | None = None,
    at: float | None = None,
    valid_days: Sequence[int] = (-1, 30),
) -> Issued:
    """A SHAKEN leaf certificate issued by ``issuer`` (EC P-256 unless ``key``)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = _now(at)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("SHAKEN 1234"))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + valid_days[0] * DAY)
        .not_valid_after(now + valid_days[1] * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.cert.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Issued(key, cert)


def make_server(issuer: Issued, address: str = "127.0.0.1") -> Issued:
    """A TLS server certificate for ``address`` (an IP address or a DNS name) by ``issuer``."""
    import ipaddress

    alt: x509.GeneralName
    try:
        alt = x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        alt = x509.DNSName(address)

    key = ec.generate_private_key(ec.SECP256R1())
    now = _now(None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(address))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + 30 * DAY)
        .add_extension(
            x509.SubjectAlternativeName([alt]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(issuer.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Issued(key, cert)
