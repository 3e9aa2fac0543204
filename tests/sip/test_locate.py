"""
RFC 3263 server location (L{warden.sip.locate}) against a fake resolver:
SRV ordering by priority and weight (RFC 2782, seeded randomness), the
NAPTR -> SRV -> A/AAAA fallbacks, explicit ports, and hostile answers
(too many records, overlong names, port 0) bounded.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from twisted.internet.defer import fail, succeed
from twisted.names import dns, error
from twisted.trial.unittest import SynchronousTestCase

from warden.sip.locate import (
    MAX_RECORDS,
    MAX_TARGETS,
    MAX_TTL,
    MIN_TTL,
    Location,
    ServerLocator,
    Srv,
    Target,
    order_srv,
)

METHODS = {
    dns.NAPTR: "lookupNamingAuthorityPointer",
    dns.SRV: "lookupService",
    dns.A: "lookupAddress",
    dns.AAAA: "lookupIPV6Address",
}


class FakeResolver:
    """Answers from ``records`` (name -> RRHeaders); NXDOMAIN for the rest; logs queries."""

    def __init__(self, records: list[dns.RRHeader]) -> None:
        self.records = records
        self.asked: list[tuple[str, str]] = []
        for kind, method in METHODS.items():
            setattr(self, method, self._lookup(kind, method))

    def _lookup(self, kind: int, method: str) -> Any:
        def lookup(name: str, timeout: Any = None) -> Any:
            self.asked.append((method, name))
            found = [r for r in self.records if r.type == kind and str(r.name) == name]
            if not found:
                return fail(error.DNSNameError(name))
            return succeed((found, [], []))

        return lookup


def srv(name: str, priority: int, weight: int, port: int, target: str, ttl: int = 600) -> Any:
    """An SRV record (the target as raw bytes: hostile names included)."""
    record = dns.Record_SRV(priority, weight, port, target.encode("latin-1"), ttl=ttl)
    return dns.RRHeader(name, dns.SRV, ttl=ttl, payload=record)


def a(name: str, address: str, ttl: int = 600) -> Any:
    return dns.RRHeader(name, dns.A, ttl=ttl, payload=dns.Record_A(address, ttl=ttl))


def aaaa(name: str, address: str, ttl: int = 600) -> Any:
    return dns.RRHeader(name, dns.AAAA, ttl=ttl, payload=dns.Record_AAAA(address, ttl=ttl))


def naptr(name: str, order: int, service: bytes, replacement: str, flags: bytes = b"s") -> Any:
    record = dns.Record_NAPTR(order, 10, flags, service, b"", replacement, ttl=600)
    return dns.RRHeader(name, dns.NAPTR, ttl=600, payload=record)


class OrderTests(SynchronousTestCase):
    """RFC 2782 ordering."""

    def test_priority_first(self) -> None:
        """Lower priorities come first, whatever the weights."""
        records = [Srv(20, 100, 1, "c"), Srv(10, 0, 1, "a"), Srv(10, 0, 2, "b")]
        ordered = order_srv(records, random.Random(1))
        self.assertEqual([r.priority for r in ordered], [10, 10, 20])
        self.assertEqual(ordered[2].target, "c")

    def test_weights(self) -> None:
        """
        Within a priority, a record of weight 90 comes first about 9 times in
        10 against one of weight 10 (seeded: exact counts), and every order
        holds each record once.
        """
        rng = random.Random(3263)
        records = [Srv(10, 10, 1, "light"), Srv(10, 90, 1, "heavy")]
        firsts = Counter(order_srv(records, rng)[0].target for _ in range(1000))
        self.assertGreater(firsts["heavy"], 850)
        self.assertLess(firsts["heavy"], 950)
        self.assertEqual(sorted(r.target for r in order_srv(records, rng)), ["heavy", "light"])

    def test_deterministic(self) -> None:
        """The same seed gives the same order."""
        records = [Srv(10, w, 1, f"t{w}") for w in (1, 5, 10, 20, 50)]
        first = order_srv(records, random.Random(7))
        self.assertEqual(first, order_srv(records, random.Random(7)))

    def test_zero_weights(self) -> None:
        """Weight-0 records only: kept in their order (the choice of 0 in [0, 0])."""
        records = [Srv(10, 0, 1, "a"), Srv(10, 0, 2, "b"), Srv(10, 0, 3, "c")]
        self.assertEqual(order_srv(records, random.Random(0)), records)


class LocateTests(SynchronousTestCase):
    """From a host to its servers."""

    def locate(
        self, records: list[Any], host: str = "itsp.test", transport: str = "udp",
        port: int = 5060, given: bool = False,
    ) -> tuple[Location, FakeResolver]:  # fmt: skip
        resolver = FakeResolver(records)
        locator = ServerLocator(resolver, random.Random(1))
        found = self.successResultOf(_run(locator.locate(host, transport, port, given)))
        return found, resolver

    def test_ip_address(self) -> None:
        """An IP address is the server itself; DNS is not asked."""
        found, resolver = self.locate([], host="192.0.2.5")
        self.assertEqual(found.targets, (Target("192.0.2.5", 5060, "192.0.2.5"),))
        self.assertEqual(resolver.asked, [])

    def test_explicit_port(self) -> None:
        """A name with a port: A and AAAA only (RFC 3263 §4.2), no NAPTR or SRV."""
        records = [a("itsp.test", "192.0.2.7"), aaaa("itsp.test", "2001:db8::7"),
                   srv("_sip._udp.itsp.test", 10, 0, 5099, "x.itsp.test")]  # fmt: skip
        found, resolver = self.locate(records, port=5070, given=True)
        self.assertEqual(
            [(t.address, t.port) for t in found.targets],
            [("192.0.2.7", 5070), ("2001:db8::7", 5070)],
        )
        self.assertEqual({m for m, _ in resolver.asked}, {"lookupAddress", "lookupIPV6Address"})

    def test_srv(self) -> None:
        """SRV targets in priority order, each with its addresses and port."""
        records = [
            srv("_sip._udp.itsp.test", 20, 0, 5062, "b.itsp.test"),
            srv("_sip._udp.itsp.test", 10, 0, 5061, "a.itsp.test"),
            a("a.itsp.test", "192.0.2.1"), a("b.itsp.test", "192.0.2.2"),
        ]  # fmt: skip
        found, _ = self.locate(records)
        self.assertEqual(
            found.targets,
            (Target("192.0.2.1", 5061, "a.itsp.test"), Target("192.0.2.2", 5062, "b.itsp.test")),
        )

    def test_srv_of_transport(self) -> None:
        """TCP asks _sip._tcp, TLS _sips._tcp."""
        records = [srv("_sips._tcp.itsp.test", 10, 0, 5081, "t.itsp.test"),
                   srv("_sip._tcp.itsp.test", 10, 0, 5080, "c.itsp.test"),
                   a("t.itsp.test", "192.0.2.3"), a("c.itsp.test", "192.0.2.4")]  # fmt: skip
        tls, _ = self.locate(records, transport="tls", port=5061)
        tcp, _ = self.locate(records, transport="tcp")
        self.assertEqual([(t.address, t.port) for t in tls.targets], [("192.0.2.3", 5081)])
        self.assertEqual([(t.address, t.port) for t in tcp.targets], [("192.0.2.4", 5080)])

    def test_naptr(self) -> None:
        """A NAPTR record of the transport's service names the SRV records to use."""
        records = [
            naptr("itsp.test", 10, b"SIP+D2T", "_sip._tcp.other.test"),
            naptr("itsp.test", 20, b"SIP+D2U", "_sip._udp.pool.test"),
            naptr("itsp.test", 5, b"SIP+D2U", "_sip._udp.unused.test", flags=b"u"),
            srv("_sip._udp.pool.test", 10, 0, 5090, "p.pool.test"),
            srv("_sip._udp.itsp.test", 10, 0, 5060, "default.itsp.test"),
            a("p.pool.test", "192.0.2.9"),
        ]  # fmt: skip
        found, _ = self.locate(records)
        self.assertEqual([(t.address, t.port) for t in found.targets], [("192.0.2.9", 5090)])

    def test_naptr_of_other_transports_only(self) -> None:
        """NAPTR records for other services only: the transport's usual SRV name."""
        records = [naptr("itsp.test", 10, b"SIPS+D2T", "_sips._tcp.itsp.test"),
                   srv("_sip._udp.itsp.test", 10, 0, 5070, "u.itsp.test"),
                   a("u.itsp.test", "192.0.2.10")]  # fmt: skip
        found, _ = self.locate(records)
        self.assertEqual([(t.address, t.port) for t in found.targets], [("192.0.2.10", 5070)])

    def test_a_fallback(self) -> None:
        """No NAPTR, no SRV: the name's A records at the default port."""
        found, resolver = self.locate([a("itsp.test", "192.0.2.11")], transport="tls", port=5061)
        self.assertEqual(found.targets, (Target("192.0.2.11", 5061, "itsp.test"),))
        self.assertIn(("lookupService", "_sips._tcp.itsp.test"), resolver.asked)

    def test_nothing(self) -> None:
        """A name with no records at all: no server."""
        found, _ = self.locate([])
        self.assertEqual(found.targets, ())

    def test_ttl(self) -> None:
        """The smallest TTL of the records used, within MIN_TTL..MAX_TTL."""
        records = [srv("_sip._udp.itsp.test", 10, 0, 5061, "a.itsp.test", ttl=120),
                   a("a.itsp.test", "192.0.2.1", ttl=90)]  # fmt: skip
        self.assertEqual(self.locate(records)[0].ttl, 90)
        records = [a("itsp.test", "192.0.2.1", ttl=1)]
        self.assertEqual(self.locate(records)[0].ttl, MIN_TTL)
        records = [a("itsp.test", "192.0.2.1", ttl=86400)]
        self.assertEqual(self.locate(records)[0].ttl, MAX_TTL)

    def test_hostile_answers(self) -> None:
        """
        Hundreds of SRV records: only MAX_RECORDS are read and MAX_TARGETS
        servers come out; an overlong or garbled target and port 0 are skipped.
        """
        name = "_sip._udp.itsp.test"
        records = [srv(name, 1, 0, 0, "zero.itsp.test"),
                   srv(name, 1, 0, 5060, "x" * 70 + ".itsp.test"),
                   srv(name, 1, 0, 5060, "bad_\x01.itsp.test")]  # fmt: skip
        records += [srv(name, 10, 1, 6000 + i, f"h{i}.itsp.test") for i in range(300)]
        records += [a(f"h{i}.itsp.test", f"192.0.2.{i % 250 + 1}") for i in range(300)]
        records += [a("zero.itsp.test", "192.0.2.254")]
        found, resolver = self.locate(records)
        self.assertEqual(len(found.targets), MAX_TARGETS)
        self.assertTrue(all(6000 <= t.port < 6000 + MAX_RECORDS for t in found.targets))
        asked = [n for m, n in resolver.asked if m == "lookupAddress"]
        self.assertLessEqual(len(asked), MAX_TARGETS)

    def test_dns_errors(self) -> None:
        """A resolver that fails every query (timeouts, refusals) gives no server."""

        class Broken:
            def __getattr__(self, name: str) -> Any:
                return lambda *a, **k: fail(error.DNSServerError("refused"))

        locator = ServerLocator(Broken())
        found = self.successResultOf(_run(locator.locate("itsp.test", "udp", 5060, False)))
        self.assertEqual(found.targets, ())


def _run(coroutine: Any) -> Any:
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(coroutine)
