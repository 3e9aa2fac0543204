"""TLS contexts in FIPS mode (``TlsPolicy(fips=True)``, ADR 0029): real OpenSSL handshakes."""

from __future__ import annotations

from OpenSSL import SSL
from OpenSSL._util import lib as openssl_lib
from twisted.internet import ssl as twisted_ssl

from tests.test_tls import PairTestCase, handshake_with
from warden.features.e911_channels import trust_policy
from warden.tls import (
    FIPS_CIPHERS,
    FIPS_TLS13_SUITES,
    MOZILLA_INTERMEDIATE,
    ClientTlsPolicy,
    TlsPolicy,
    _client_context,
    build_context,
    cipher_names,
    client_tls_options,
    fips_cipher_problem,
)

APPROVED = set(FIPS_CIPHERS.split(":")) | set(FIPS_TLS13_SUITES.split(":"))


def client(version: int, ciphers: str = "", suites: str = "", groups: str = "") -> SSL.Context:
    """A client context speaking exactly ``version`` with these suites and groups."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(version)
    context.set_max_proto_version(version)
    if ciphers:
        context.set_cipher_list(ciphers.encode())
    if suites:
        context.set_tls13_ciphersuites(suites.encode())
    if groups:
        assert openssl_lib.SSL_CTX_set1_curves_list(context._context, groups.encode())
    return context


def handshake(server_context: SSL.Context, client_context: SSL.Context) -> str:
    """An in-memory handshake; the suite negotiated (SSL.Error when it fails)."""
    name = handshake_with(server_context, client_context).get_cipher_name()
    if name is None:
        raise SSL.Error("no handshake")
    return name


class FipsContextTests(PairTestCase):
    """A FIPS context offers and accepts approved suites and groups only."""

    def setUp(self) -> None:
        super().setUp()
        self.fips = build_context(self.cert, self.key, TlsPolicy(fips=True))
        self.default = build_context(self.cert, self.key, TlsPolicy(ciphers=MOZILLA_INTERMEDIATE))

    def test_cipher_list_has_only_approved_suites(self) -> None:
        """Every suite the server would negotiate, TLS 1.2 and 1.3, is approved."""
        offered = SSL.Connection(self.fips, None).get_cipher_list()
        self.assertTrue(offered)
        self.assertEqual(set(offered) - APPROVED, set())
        self.assertNotIn("TLS_CHACHA20_POLY1305_SHA256", offered)
        default = SSL.Connection(self.default, None).get_cipher_list()
        self.assertIn("TLS_CHACHA20_POLY1305_SHA256", default)

    def test_chacha20_client_fails(self) -> None:
        """A client offering only ChaCha20-Poly1305 (1.2 or 1.3) gets no handshake."""
        tls12 = client(SSL.TLS1_2_VERSION, ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")
        tls13 = client(SSL.TLS1_3_VERSION, suites="TLS_CHACHA20_POLY1305_SHA256")
        self.assertRaises(SSL.Error, handshake, self.fips, tls12)
        self.assertRaises(SSL.Error, handshake, self.fips, tls13)
        # The same clients connect outside FIPS mode: the test can fail.
        tls12 = client(SSL.TLS1_2_VERSION, ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")
        tls13 = client(SSL.TLS1_3_VERSION, suites="TLS_CHACHA20_POLY1305_SHA256")
        self.assertEqual(handshake(self.default, tls12), "ECDHE-ECDSA-CHACHA20-POLY1305")
        self.assertEqual(handshake(self.default, tls13), "TLS_CHACHA20_POLY1305_SHA256")

    def test_aes_gcm_clients_connect(self) -> None:
        """Ordinary clients negotiate an approved AES-GCM suite on 1.2 and 1.3."""
        self.assertIn(handshake(self.fips, client(SSL.TLS1_2_VERSION)), APPROVED)
        self.assertIn(handshake(self.fips, client(SSL.TLS1_3_VERSION)), APPROVED)

    def test_only_nist_groups(self) -> None:
        """X25519 alone is refused; P-384 works."""
        x25519 = client(SSL.TLS1_3_VERSION, groups="X25519")
        self.assertRaises(SSL.Error, handshake, self.fips, x25519)
        p384 = client(SSL.TLS1_3_VERSION, groups="P-384")
        self.assertIn(handshake(self.fips, p384), APPROVED)
        self.assertIn(
            handshake(self.default, client(SSL.TLS1_3_VERSION, groups="X25519")),
            APPROVED | {"TLS_CHACHA20_POLY1305_SHA256"},
        )

    def test_tls11_refused(self) -> None:
        """A FIPS server context refuses a TLS 1.1 client."""
        self.assertRaises(SSL.Error, handshake, self.fips, client(SSL.TLS1_1_VERSION))

    def test_non_approved_cipher_string_refused(self) -> None:
        """A policy naming non-approved suites builds no FIPS context."""
        with self.assertRaises(ValueError) as caught:
            build_context(self.cert, self.key, TlsPolicy(ciphers=MOZILLA_INTERMEDIATE, fips=True))
        self.assertIn("CHACHA20", str(caught.exception))
        build_context(self.cert, self.key, TlsPolicy(ciphers="ECDHE+AESGCM", fips=True))

    def test_cipher_names_expand_strings(self) -> None:
        """Cipher strings expand to suite names; the FIPS list has no problem, DHE is named."""
        self.assertEqual(cipher_names(FIPS_CIPHERS), FIPS_CIPHERS.split(":"))
        self.assertEqual(fips_cipher_problem(FIPS_CIPHERS), "")
        self.assertIn("DHE-RSA-AES128-GCM-SHA256", fips_cipher_problem(MOZILLA_INTERMEDIATE))


class FipsClientTests(PairTestCase):
    """Warden's outgoing TLS (x5u fetches, webhooks, SMTP) in FIPS mode."""

    def trust(self) -> object:
        with open(self.cert, "rb") as f:
            return twisted_ssl.Certificate.loadPEM(f.read())

    def client_context(self, fips: bool) -> SSL.Context:
        context = _client_context(client_tls_options("localhost", self.trust(), fips))
        # The generated certificate is no CA; verifying it is Twisted's business,
        # not what these tests are about.
        context.set_verify(SSL.VERIFY_NONE)
        return context

    def test_offers_approved_suites_only(self) -> None:
        """A FIPS client offers approved suites only; a plain one offers ChaCha20 too."""
        offered = SSL.Connection(self.client_context(True), None).get_cipher_list()
        self.assertEqual(set(offered) - APPROVED, set())
        plain = SSL.Connection(self.client_context(False), None).get_cipher_list()
        self.assertIn("TLS_CHACHA20_POLY1305_SHA256", plain)

    def test_chacha20_server_refused(self) -> None:
        """A server speaking only ChaCha20-Poly1305 gets no handshake from a FIPS client."""
        server = build_context(
            self.cert, self.key, TlsPolicy(ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")
        )
        server.set_tls13_ciphersuites(b"TLS_CHACHA20_POLY1305_SHA256")
        self.assertRaises(SSL.Error, handshake, server, self.client_context(True))
        server = build_context(
            self.cert, self.key, TlsPolicy(ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")
        )
        server.set_tls13_ciphersuites(b"TLS_CHACHA20_POLY1305_SHA256")
        self.assertEqual(
            handshake(server, self.client_context(False)), "TLS_CHACHA20_POLY1305_SHA256"
        )

    def test_handshake_with_an_approved_server(self) -> None:
        """An ordinary server: an AES-GCM suite is chosen."""
        server = build_context(self.cert, self.key)
        self.assertIn(handshake(server, self.client_context(True)), APPROVED)

    def test_policy_for_agents(self) -> None:
        """The HTTPS policy (webhooks) gives the same restricted options."""
        creator = ClientTlsPolicy(self.trust(), fips=True).creatorForNetloc(b"localhost", 443)
        offered = SSL.Connection(_client_context(creator), None).get_cipher_list()
        self.assertEqual(set(offered) - APPROVED, set())
        policy = trust_policy("", "emergency.notify_webhook_ca", fips=True)
        self.assertTrue(policy.fips)
