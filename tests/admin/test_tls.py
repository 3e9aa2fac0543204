"""
The admin listener's certificate expiry metric
(``warden_tls_certificate_expiry_timestamp_seconds{listener="admin"}``): set from
the served certificate's notAfter at start, moved by a successful reload, kept
by a failed one.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warden.admin.tls import VALIDITY_DAYS, ReloadableContextFactory, generate_self_signed

EXPIRY = "warden_tls_certificate_expiry_timestamp_seconds"
DAY = 86400.0
#: notAfter of a certificate generated at Clock time 0 (second resolution).
FIRST_NOT_AFTER = VALIDITY_DAYS * DAY


def expiry(listener: str) -> float | None:
    """The exported expiry of ``listener``'s certificate."""
    return REGISTRY.get_sample_value(EXPIRY, {"listener": listener})


class CertificateExpiryMetricTests(SynchronousTestCase):
    """The gauge follows the certificate actually served."""

    def setUp(self) -> None:
        """A certificate and key generated at Unix time 0."""
        directory = self.mktemp()
        os.mkdir(directory)
        self.cert = os.path.join(directory, "cert.pem")
        self.key = os.path.join(directory, "key.pem")
        generate_self_signed(self.cert, self.key, Clock())

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
