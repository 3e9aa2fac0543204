"""
STIR/SHAKEN end to end: a real ``twistd warden`` with ``[stirshaken]``
between SIPp phones and a SIPp ITSP (as in test_trunks.py).

- Signing: an extension's call to the trunk arrives at the ITSP with an
  Identity header that PyJWT (an independent implementation) verifies with
  the public key of the key ``wardenctl stir keygen`` made, with the right
  SHAKEN claims (attestation A), and the call record has the attestation.
- Verification: the ITSP calls a DID with Identity headers made by the test
  (PyJWT, a test CA and leaf), the certificate served by a local HTTPS
  server (allow-listed: it is on 127.0.0.1); the extension's phone sees
  ``verstat=TN-Validation-Passed`` for a valid one, ``TN-Validation-Failed``
  for a tampered signature, a stale ``iat``, a wrong dest, an untrusted
  certificate, an x5u that never answers, an oversized certificate, an x5u
  on a loopback address not allow-listed and a plain-http x5u; the call
  records agree. Under ``failure_policy = "reject"`` the ITSP gets 438, 403,
  437 and 436 as RFC 8224 says.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from twisted.internet import ssl
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from tests.features.stir_pki import Issued, make_ca, make_leaf, make_server
from tests.integration.clients import real_reactor
from tests.integration.harness import WardenProcess, poll, provision, wardenctl
from tests.integration.sipp_traces import read_sipp_messages
from tests.integration.test_trunks import (
    CALLER_ID,
    DIALLED,
    ITSP_HOST,
    OUTSIDE_CALLER,
    TrunkHarness,
    trunks_toml,
)

DID, EXTENSION = "15551230001", "2001"
CERT_URL = "https://certs.example.net/warden.pem"


def _toml_list(values: list[str]) -> str:
    return json.dumps(values)


class StirShakenTests(TrunkHarness):
    """Signing towards a SIPp ITSP and verification of its calls."""

    async def test_signed_outbound_call(self) -> None:
        """
        The INVITE at the ITSP carries an Identity header PyJWT verifies with
        the key's public key: ES256, ppt shaken, x5u, attest A for an owned
        caller ID, orig and dest, a fresh iat and a UUID origid.
        """
        itsp, port, itsp_dir = self.itsp(ITSP_HOST, "itsp_uas.xml", 1)
        key_dir = self.workdir()
        key_path = key_dir / "stir-key.pem"
        (key_dir / "none.toml").write_text("")
        made = await wardenctl(key_dir / "none.toml", "stir", "keygen", "--out", str(key_path))
        self.assertEqual(made.code, 0, made.stderr)
        self.assertEqual(key_path.stat().st_mode & 0o777, 0o600)
        toml = trunks_toml(
            [{"name": "itsp", "host": ITSP_HOST, "port": port, "register": False,
              "username": "acct", "password_file": "@PASSWORD_FILE@",
              "from_number": CALLER_ID}],
            [{"pattern": "_9NXXNXXXXXX", "strip": 1, "prefix": "1", "trunks": ["itsp"]}],
            [],
        )  # fmt: skip
        toml += (
            f'\n[stirshaken]\nprivate_key = "{key_path}"\ncertificate_url = "{CERT_URL}"\n'
            'tn_owned = ["1555123xxxx"]\n'
        )
        warden = await self.warden_with(toml)
        users = await provision(warden.config_path, 2, first=2000)
        before = int(time.time())
        await self.dial(warden, users, DIALLED)
        await self.sipp_finished(itsp, itsp_dir)
        invites = [m for m in read_sipp_messages(itsp_dir).split("\n\n") if "INVITE sip:" in m]
        identities = re.findall(r"^Identity: (.*)$", invites[-1], re.MULTILINE)
        self.assertEqual(len(identities), 1, invites[-1])
        token, _, params = identities[0].strip().partition(";")
        self.assertEqual(params, f"info=<{CERT_URL}>;alg=ES256;ppt=shaken")
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        header = jwt.get_unverified_header(token)
        self.assertEqual(header, {"alg": "ES256", "ppt": "shaken", "typ": "passport",
                                  "x5u": CERT_URL})  # fmt: skip
        claims = jwt.decode(token, key.public_key(), algorithms=["ES256"])  # type: ignore[arg-type]
        self.assertEqual(
            (claims["attest"], claims["orig"], claims["dest"]),
            ("A", {"tn": CALLER_ID}, {"tn": ["15552345678"]}),
        )
        self.assertLessEqual(abs(claims["iat"] - before), 30)
        self.assertEqual(str(uuid.UUID(claims["origid"])), claims["origid"])
        self.assertNotIn("PRIVATE KEY", warden.log_text())
        records = await self.records(warden)
        self.assertEqual([(r["stir_attest"], r["stir_verstat"]) for r in records], [("A", "")])

    async def records(self, warden: WardenProcess) -> list[dict[str, Any]]:
        """The call records, oldest first (``wardenctl cdr list --json``)."""
        listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
        self.assertEqual(listed.code, 0, listed.stderr)
        records: list[dict[str, Any]] = json.loads(listed.stdout)
        return sorted(records, key=lambda r: r["started_at"])

    # -- verification ---------------------------------------------------------------

    def pki(self) -> None:
        """The STI-CA, a leaf, a rogue leaf, and HTTPS and silent servers for x5u."""
        self.ca, self.leaf = make_ca(), None
        self.leaf = make_leaf(self.ca)
        self.rogue = make_leaf(make_ca("Rogue CA"))
        web_ca = make_ca("Web CA")
        server = make_server(web_ca)
        root = Resource()
        root.putChild(b"leaf.pem", Data(self.leaf.pem, "application/pem-certificate-chain"))
        root.putChild(b"rogue.pem", Data(self.rogue.pem, "application/pem-certificate-chain"))
        big = self.leaf.pem * 64  # over the default max_cert_bytes (16384)
        root.putChild(b"big.pem", Data(big, "application/pem-certificate-chain"))
        reactor = real_reactor()
        tls = ssl.PrivateCertificate.loadPEM(server.key_pem + server.pem).options()
        https = reactor.listenSSL(0, Site(root), tls, interface="127.0.0.1")
        self.addCleanup(https.stopListening)
        silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        self.https = f"https://127.0.0.1:{https.getHost().port}/"
        self.silent = f"https://127.0.0.1:{silent.getHost().port}/"
        files = self.workdir()
        (files / "anchors.pem").write_bytes(self.ca.pem)
        (files / "web-ca.pem").write_bytes(web_ca.pem)
        self.files = files

    def stir_toml(self, policy: str) -> str:
        """``[[trunks]]`` (the ITSP, not registering), the DID, and verification."""
        toml = trunks_toml(
            [{"name": "itsp", "host": ITSP_HOST, "register": False}],
            [],
            [{"did": DID, "to": EXTENSION}],
        )
        allow = _toml_list([self.https, self.silent])
        return toml + (
            f'\n[stirshaken]\nverify_inbound = true\ntrust_anchors = "{self.files}/anchors.pem"\n'
            f'fetch_ca = "{self.files}/web-ca.pem"\nx5u_allow = {allow}\n'
            f'failure_policy = "{policy}"\n'
        )

    def token(self, issued: Issued, x5u: str, **change: Any) -> str:
        """A SHAKEN PASSporT signed by PyJWT with ``issued``'s key; ``change`` edits claims."""
        claims: dict[str, Any] = {
            "attest": "A", "dest": {"tn": [DID]}, "iat": int(time.time()),
            "orig": {"tn": OUTSIDE_CALLER}, "origid": str(uuid.uuid4()),
        }  # fmt: skip
        claims.update(change)
        headers = {"ppt": "shaken", "typ": "passport", "x5u": x5u}
        return jwt.encode(claims, issued.key, algorithm="ES256", headers=headers)  # type: ignore[arg-type]

    def cases(self) -> list[tuple[str, str, str]]:
        """(name, token, x5u) of the valid call and each failing one."""
        assert self.leaf is not None
        leaf_url, rogue_url = self.https + "leaf.pem", self.https + "rogue.pem"
        big_url = self.https + "big.pem"
        # Loopback, but not the allow-listed address: refused before any connection.
        internal_url = self.https.replace("127.0.0.1", "127.0.0.2") + "leaf.pem"
        plain_url = self.https.replace("https:", "http:") + "leaf.pem"
        valid = self.token(self.leaf, leaf_url)
        head, claims, signature = valid.split(".")
        flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
        return [
            ("valid", valid, leaf_url),
            ("tampered", f"{head}.{claims}.{flipped}", leaf_url),
            ("stale", self.token(self.leaf, leaf_url, iat=int(time.time()) - 120), leaf_url),
            (
                "wrong dest",
                self.token(self.leaf, leaf_url, dest={"tn": ["15550000000"]}),
                leaf_url,
            ),
            ("untrusted", self.token(self.rogue, rogue_url), rogue_url),
            (
                "unreachable",
                self.token(self.leaf, self.silent + "leaf.pem"),
                self.silent + "leaf.pem",
            ),
            ("oversized", self.token(self.leaf, big_url), big_url),
            ("internal", self.token(self.leaf, internal_url), internal_url),
            ("not https", self.token(self.leaf, plain_url), plain_url),
        ]

    async def test_verification_marks(self) -> None:
        """The callee sees Passed for the valid header and Failed for each bad one; CDRs agree."""
        self.pki()
        warden = await self.warden_with(self.stir_toml("mark"))
        users = await provision(warden.config_path, 2, first=2000)
        cases = self.cases()
        phone, phone_dir = await self.phone(warden, users, EXTENSION, calls=len(cases))
        for name, token, x5u in cases:
            started = time.monotonic()
            await self.itsp_call(warden, DID, (token, x5u), "itsp_identity_uac.xml")
            if name == "unreachable":  # waited for fetch_timeout, never longer
                self.assertLess(time.monotonic() - started, 10)
        self.assertTrue(await poll(lambda: not phone.running, 30), phone.output())
        invites = [m for m in read_sipp_messages(phone_dir).split("\n\n") if "INVITE sip:" in m]
        verstats = [re.findall(r"^P-Asserted-Identity: .*verstat=([A-Za-z-]+)@", m, re.M)
                    for m in invites]  # fmt: skip
        expected = [["TN-Validation-Passed"]] + [["TN-Validation-Failed"]] * (len(cases) - 1)
        self.assertEqual(verstats, expected, "\n\n".join(invites)[-3000:])
        records = await self.records(warden)
        self.assertEqual(
            [(r["stir_verstat"], r["stir_attest"]) for r in records],
            [("TN-Validation-Passed", "A")] + [("TN-Validation-Failed", "")] * (len(cases) - 1),
        )
        log = warden.log_text()
        self.assertIn("STIR/SHAKEN verification failed (signature)", log)
        for reason in ("x5u_timeout", "x5u_too_large", "x5u_refused", "cert_untrusted"):
            self.assertIn(f"STIR/SHAKEN verification failed ({reason})", log)

    async def test_verification_rejects(self) -> None:
        """Under the reject policy each failure is answered as RFC 8224 says."""
        self.pki()
        warden = await self.warden_with(self.stir_toml("reject"))
        expected = {"tampered": "438 Invalid Identity Header", "stale": "403 Stale Date",
                    "wrong dest": "438 Invalid Identity Header",
                    "untrusted": "437 Unsupported Credential",
                    "unreachable": "436 Bad Identity Info",
                    "oversized": "436 Bad Identity Info", "internal": "436 Bad Identity Info",
                    "not https": "436 Bad Identity Info"}  # fmt: skip
        for name, token, x5u in self.cases()[1:]:
            run_dir = await self.itsp_call(warden, DID, (token, x5u), "itsp_identity_uac.xml")
            finals = [
                line.strip() for line in read_sipp_messages(run_dir).splitlines()
                if re.match(r"SIP/2\.0 [4-6]", line.strip())
            ]  # fmt: skip
            self.assertEqual(finals[-1:], [f"SIP/2.0 {expected[name]}"], name)
