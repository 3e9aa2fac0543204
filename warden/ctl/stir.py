"""
``wardenctl stir keygen`` and ``wardenctl stir csr``: the STIR/SHAKEN signing
key and its certificate signing request (ADR 0028)::

    wardenctl stir keygen --out key.pem [--force]
    wardenctl stir csr --key key.pem --subject "CN=SHAKEN 1234,O=Example,C=US"
                       [--spc 1234] [--tn 15551230000 ...] [--out csr.pem]

``keygen`` writes a new EC P-256 key (PKCS #8 PEM, unencrypted, file mode
0600) and refuses to replace a file unless ``--force``. ``csr`` prints (or
writes) a PKCS #10 request signed with the key; with ``--spc`` or ``--tn`` it
asks for the TNAuthList extension (RFC 8226, OID 1.3.6.1.5.5.7.1.26): the
Service Provider Code entry (``spc``, what ATIS-1000080 SHAKEN certificates
carry) and one telephone-number entry (``one``) per ``--tn``. The STI-CA
decides what the certificate finally holds.

Exit status: 0 done, 1 failed (the message says why), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from warden.errors import ConfigError
from warden.features.stirshaken import load_private_key

__all__ = ["TN_AUTH_LIST", "add_commands", "run", "tn_auth_list"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: id-pe-TNAuthList (RFC 8226 §9).
TN_AUTH_LIST = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.26")
_NAME_KEYS = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
}
_SPC = re.compile(r"^[0-9A-Za-z]{1,10}$")
_TN = re.compile(r"^[0-9#*]{1,15}$")


def add_commands(areas: Any) -> None:
    """Add ``stir keygen`` and ``stir csr`` to wardenctl's sub-parsers."""
    stir = areas.add_parser("stir", help="STIR/SHAKEN signing key and CSR")
    commands = stir.add_subparsers(dest="command", required=True, metavar="COMMAND")
    keygen = commands.add_parser("keygen", help="write a new EC P-256 signing key (mode 0600)")
    keygen.add_argument("--out", required=True, metavar="FILE")
    keygen.add_argument("--force", action="store_true", help="replace an existing file")
    keygen.set_defaults(stir=_keygen)
    csr = commands.add_parser("csr", help="make a certificate signing request for the key")
    csr.add_argument("--key", required=True, metavar="FILE", help="the signing key (PEM)")
    csr.add_argument(
        "--subject", required=True, help='the subject, e.g. "CN=SHAKEN 1234,O=Example,C=US"'
    )
    csr.add_argument("--spc", help="Service Provider Code for TNAuthList (e.g. 1234)")
    csr.add_argument(
        "--tn", action="append", default=[], help="a telephone number for TNAuthList (repeatable)"
    )
    csr.add_argument("--out", metavar="FILE", help="write the CSR here (default: print it)")
    csr.set_defaults(stir=_csr)


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the parsed ``stir`` command; return the exit status."""
    try:
        code: int = args.stir(args, out)
    except _Usage as e:
        print(f"wardenctl: {e}", file=err)
        return EXIT_USAGE
    except (ConfigError, OSError) as e:
        print(f"wardenctl: {e}", file=err)
        return EXIT_FAILED
    return code


class _Usage(Exception):
    pass


def _keygen(args: argparse.Namespace, out: TextIO) -> int:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
    fd = os.open(args.out, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(pem)
    print(f"wrote an EC P-256 key to {args.out} (mode 0600)", file=out)
    return EXIT_OK


def parse_subject(text: str) -> x509.Name:
    """A ``CN=...,O=...,C=US`` subject; raises L{_Usage} for a bad one."""
    attributes = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        oid = _NAME_KEYS.get(key.strip().upper())
        value = value.strip()
        if not sep or oid is None or not value or not value.isprintable():
            known = ", ".join(_NAME_KEYS)
            raise _Usage(f"--subject: bad part {part.strip()!r} (use KEY=value, KEY in {known})")
        if oid == NameOID.COUNTRY_NAME and not (len(value) == 2 and value.isalpha()):
            raise _Usage("--subject: C must be a two-letter country code")
        attributes.append(x509.NameAttribute(oid, value))
    return x509.Name(attributes)


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        length = bytes([size])
    else:
        raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def tn_auth_list(spc: str | None, tns: list[str]) -> bytes:
    """
    The DER of a TNAuthList (RFC 8226 §9, explicit tags): ``spc [0]`` then
    ``one [2]`` per number, each an IA5String.
    """
    entries = b""
    if spc:
        entries += _der(0xA0, _der(0x16, spc.encode("ascii")))
    for tn in tns:
        entries += _der(0xA2, _der(0x16, tn.encode("ascii")))
    return _der(0x30, entries)


def _csr(args: argparse.Namespace, out: TextIO) -> int:
    subject = parse_subject(args.subject)
    if args.spc is not None and not _SPC.match(args.spc):
        raise _Usage("--spc must be 1-10 letters or digits")
    tns = [tn.removeprefix("+") for tn in args.tn]
    for tn in tns:
        if not _TN.match(tn):
            raise _Usage(f"--tn {tn!r}: must be 1-15 digits")
    key = load_private_key(args.key)
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if args.spc or tns:
        extension = x509.UnrecognizedExtension(TN_AUTH_LIST, tn_auth_list(args.spc, tns))
        builder = builder.add_extension(extension, critical=False)
    pem = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    if args.out:
        with open(args.out, "w", encoding="ascii") as f:
            f.write(pem)
        print(f"wrote the CSR to {args.out}", file=out)
    else:
        out.write(pem)
    return EXIT_OK
