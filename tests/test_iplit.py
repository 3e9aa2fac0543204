"""Tests for L{warden.iplit}."""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from warden.iplit import CACHED, ip_literal


class IpLiteralTests(SynchronousTestCase):
    def setUp(self) -> None:
        ip_literal.cache_clear()
        self.addCleanup(ip_literal.cache_clear)

    def test_addresses(self) -> None:
        """IPv4 and IPv6 literals are the ipaddress objects for them."""
        self.assertEqual(ip_literal("192.0.2.1"), ipaddress.IPv4Address("192.0.2.1"))
        self.assertEqual(ip_literal("2001:db8::1"), ipaddress.IPv6Address("2001:db8::1"))

    def test_not_addresses(self) -> None:
        """Names, bracketed, padded, non-ASCII digits and empty text are not literals."""
        for text in ("pbx.example.com", "[2001:db8::1]", " 192.0.2.1", "١٩٢.0.2.1", "", "1.2.3"):
            self.assertIsNone(ip_literal(text), text)

    def test_answers_shared(self) -> None:
        """The same text gives the same object: parsed once."""
        self.assertIs(ip_literal("198.51.100.7"), ip_literal("198.51.100.7"))
        self.assertEqual(ip_literal.cache_info().hits, 1)

    def test_bounded(self) -> None:
        """However many different texts come, at most CACHED are remembered."""
        for n in range(CACHED + 500):
            ip_literal(f"host-{n}")
        self.assertEqual(ip_literal.cache_info().currsize, CACHED)
