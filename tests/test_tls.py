"""
Shared TLS contexts (L{warden.tls}): the policy (minimum version, ciphers, peer
verification), SIGHUP reaching every listener, and the certificate expiry metric
(``warden_tls_certificate_expiry_timestamp_seconds{listener="admin"}``): set from
the served certificate's notAfter at start, moved by a successful reload, kept
by a failed one.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from OpenSSL import SSL
from prometheus_client import REGISTRY
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warden.tls import (
    MOZILLA_INTERMEDIATE,
    VALIDITY_DAYS,
    ReloadableContextFactory,
    TlsPolicy,
    build_context,
    check_ciphers,
    generate_self_signed,
    install_sighup,
)

EXPIRY = "warden_tls_certificate_expiry_timestamp_seconds"
DAY = 86400.0
#: notAfter of a certificate generated at Clock time 0 (second resolution).
FIRST_NOT_AFTER = VALIDITY_DAYS * DAY


def expiry(listener: str) -> float | None:
    """The exported expiry of ``listener``'s certificate."""
    return REGISTRY.get_sample_value(EXPIRY, {"listener": listener})


class PairTestCase(SynchronousTestCase):
    """Tests with a certificate and key generated at Unix time 0."""

    def setUp(self) -> None:
        """A certificate and key generated at Unix time 0."""
        directory = self.mktemp()
        os.mkdir(directory)
        self.cert = os.path.join(directory, "cert.pem")
        self.key = os.path.join(directory, "key.pem")
        generate_self_signed(self.cert, self.key, Clock())


class CertificateExpiryMetricTests(PairTestCase):
    """The gauge follows the certificate actually served."""

    def test_set_at_start(self) -> None:
        """Loading the certificate exports its notAfter under the listener's label."""
        factory = ReloadableContextFactory(self.cert, self.key, listener="test-start")
        self.assertEqual(factory.not_after, FIRST_NOT_AFTER)
        self.assertEqual(expiry("test-start"), FIRST_NOT_AFTER)

    def test_default_listener_is_admin(self) -> None:
        """The admin listener's factory is labelled ``admin``."""
        ReloadableContextFactory(self.cert, self.key)
        self.assertEqual(expiry("admin"), FIRST_NOT_AFTER)

    def test_reload_moves_it(self) -> None:
        """A renewed certificate, reloaded, exports its own later notAfter."""
        factory = ReloadableContextFactory(self.cert, self.key, listener="test-reload")
        later = Clock()
        later.advance(30 * DAY)
        generate_self_signed(self.cert, self.key, later)
        self.assertTrue(factory.reload())
        self.assertEqual(expiry("test-reload"), FIRST_NOT_AFTER + 30 * DAY)

    def test_failed_reload_keeps_it(self) -> None:
        """A broken pair is not served, so the old certificate's expiry stays exported."""
        factory = ReloadableContextFactory(self.cert, self.key, listener="test-broken")
        later = Clock()
        later.advance(30 * DAY)
        generate_self_signed(self.cert, os.path.join(os.path.dirname(self.key), "other"), later)
        self.assertFalse(factory.reload())
        self.assertEqual(expiry("test-broken"), FIRST_NOT_AFTER)
        self.assertEqual(factory.not_after, FIRST_NOT_AFTER)


def handshake(server_context: SSL.Context, client_max: int) -> str:
    """
    A TLS handshake in memory between ``server_context`` and a client speaking
    at most version ``client_max``; the negotiated version's name.
    """
    client_context = SSL.Context(SSL.TLS_METHOD)
    client_context.set_max_proto_version(client_max)
    return str(handshake_with(server_context, client_context).get_protocol_version_name())


def handshake_with(server_context: SSL.Context, client_context: SSL.Context) -> SSL.Connection:
    """A TLS handshake in memory between the two contexts; the server's connection."""
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except SSL.WantReadError:
                pass
        for source, sink in ((client, server), (server, client)):
            try:
                sink.bio_write(source.bio_read(65536))
            except SSL.WantReadError:
                pass
    return server


class PolicyTests(PairTestCase):
    """L{TlsPolicy} shapes the context."""

    def test_minimum_version(self) -> None:
        """``min_version = "1.3"`` refuses TLS 1.2; the default accepts it."""
        strict = build_context(self.cert, self.key, TlsPolicy(min_version="1.3"))
        default = build_context(self.cert, self.key)
        self.assertEqual(handshake(default, SSL.TLS1_2_VERSION), "TLSv1.2")
        self.assertEqual(handshake(strict, SSL.TLS1_3_VERSION), "TLSv1.3")
        self.assertRaises(SSL.Error, handshake, strict, SSL.TLS1_2_VERSION)

    def test_ciphers_that_select_nothing(self) -> None:
        """A cipher string OpenSSL matches to no cipher is refused with its text."""
        with self.assertRaises(ValueError) as caught:
            build_context(self.cert, self.key, TlsPolicy(ciphers="NOTACIPHER"))
        self.assertIn("NOTACIPHER", str(caught.exception))
        check_ciphers(MOZILLA_INTERMEDIATE)

    def test_ca_requires_peer_certificates(self) -> None:
        """With ``ca`` the context demands a peer certificate and verifies it."""
        context = build_context(self.cert, self.key, TlsPolicy(ca=self.cert))
        mode = context.get_verify_mode()
        self.assertTrue(mode & SSL.VERIFY_PEER)
        self.assertTrue(mode & SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
        self.assertFalse(build_context(self.cert, self.key).get_verify_mode() & SSL.VERIFY_PEER)

    def test_ca_that_is_not_pem(self) -> None:
        """A ``ca`` file without certificates is refused, naming the file."""
        with self.assertRaises(ValueError) as caught:
            build_context(self.cert, self.key, TlsPolicy(ca=self.key))
        self.assertIn(self.key, str(caught.exception))


class SighupTests(SynchronousTestCase):
    """L{install_sighup} lets every TLS listener reload on one SIGHUP."""

    def test_both_callbacks_run(self) -> None:
        """
        Two installed callbacks (the admin API's and SIP's) both run, in the
        reactor thread, when SIGHUP arrives; the handler before them is restored
        after the test.
        """
        original = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, original)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        reactor = FakeThreadReactor()
        calls: list[str] = []
        install = install_sighup(reactor)
        install(lambda: calls.append("admin"))
        install(lambda: calls.append("sip"))
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)
        self.assertEqual(calls, [])
        reactor.run_pending()
        self.assertEqual(sorted(calls), ["admin", "sip"])


class FakeThreadReactor:
    """Records ``callFromThread`` calls and runs them on demand."""

    def __init__(self) -> None:
        self.pending: list[Any] = []

    def callFromThread(self, f: Any, *args: Any) -> None:
        """Queue ``f``."""
        self.pending.append((f, args))

    def run_pending(self) -> None:
        """Run what was queued."""
        pending, self.pending = self.pending, []
        for f, args in pending:
            f(*args)
