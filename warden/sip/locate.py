"""
Locating a SIP server from a host name (RFC 3263 §4), for requests Warden
sends as a client (a trunk's provider, ADR 0034).

- An IP address is the server, at the given or the transport's default port.
- A name with an explicit port: its A and AAAA records (§4.2), no SRV.
- A name without a port: NAPTR records of the name (§4.1) whose service is
  the transport's (``SIP+D2U``, ``SIP+D2T``, ``SIPS+D2T``) and whose flag is
  ``s`` name the SRV records; without such a record, ``_sip._udp``,
  ``_sip._tcp`` or ``_sips._tcp`` of the name. SRV records are ordered by
  priority and, within a priority, by weighted random choice (RFC 2782,
  L{order_srv}); each target's A and AAAA records follow. Without SRV
  records: the name's A and AAAA records at the default port.

DNS answers are hostile input: only so many records of each answer are read
(L{MAX_RECORDS}), names longer than a DNS name or not host names are
skipped, a port 0 is skipped, and at most L{MAX_TARGETS} servers come out.
A TTL (the smallest of the records used) is returned with the servers, kept
within L{MIN_TTL}..L{MAX_TTL}, so the caller knows when to look again.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.names import client, dns, hosts, resolve

__all__ = [
    "DEFAULT_PORTS",
    "MAX_RECORDS",
    "MAX_TARGETS",
    "Location",
    "ServerLocator",
    "Srv",
    "Target",
    "make_resolver",
    "order_srv",
]

#: The port of each transport when none is given (RFC 3261 §19.1.2).
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
#: The NAPTR service of each transport (RFC 3263 §4.1).
NAPTR_SERVICES = {"udp": b"SIP+D2U", "tcp": b"SIP+D2T", "tls": b"SIPS+D2T"}
#: The SRV prefix of each transport (RFC 3263 §4.1).
SRV_PREFIXES = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}
#: Records read from one answer.
MAX_RECORDS = 16
#: Addresses taken from one name's A/AAAA records.
MAX_ADDRESSES = 4
#: Servers returned at most.
MAX_TARGETS = 8
#: The shortest and longest time (seconds) before looking again.
MIN_TTL = 30.0
MAX_TTL = 300.0
#: Seconds a query is retried over (twisted.names timeouts: 1 s, then 3 s).
QUERY_TIMEOUT = (1, 3)
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


@attrs.frozen
class Srv:
    """One SRV record (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


@attrs.frozen
class Target:
    """
    One server to send to.

    Attributes:
        address: its IP address.
        port: its port.
        name: the name it was found under (the SRV target, or the host).
    """

    address: str
    port: int
    name: str

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@attrs.frozen
class Location:
    """The servers of a host, in the order to try them, and when to look again."""

    targets: tuple[Target, ...]
    ttl: float


def make_resolver(reactor: Any, servers: Sequence[tuple[str, int]] = ()) -> Any:
    """
    A twisted.names resolver: ``/etc/hosts`` first, then the DNS servers
    ``servers`` (``(address, port)``), or when there are none those of
    ``/etc/resolv.conf``; each query retried over L{QUERY_TIMEOUT}.
    """
    where: dict[str, Any] = (
        {"servers": list(servers)} if servers else {"resolv": "/etc/resolv.conf"}
    )
    dns_client = client.Resolver(  # type: ignore[no-untyped-call]
        timeout=QUERY_TIMEOUT, reactor=reactor, **where
    )
    local = hosts.Resolver()  # type: ignore[no-untyped-call]
    return resolve.ResolverChain([local, dns_client])  # type: ignore[no-untyped-call]


def order_srv(records: Sequence[Srv], rng: random.Random) -> list[Srv]:
    """
    ``records`` in the order to try them (RFC 2782): lowest priority first;
    within a priority, repeatedly a weighted random choice among those left
    (a record of weight 0 has a small chance, put first as the RFC says).
    """
    ordered: list[Srv] = []
    for priority in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running, chosen = 0, len(group) - 1
            for i, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    chosen = i
                    break
            ordered.append(group.pop(chosen))
    return ordered


def _host_name(name: str) -> bool:
    """Whether ``name`` (no trailing dot) is a usable host name (length and labels)."""
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def _name(value: Any) -> str:
    """A DNS name of a record as text, lower case, without the trailing dot ("" if unusable)."""
    try:
        text = bytes(value.name).decode("ascii").rstrip(".").lower()
    except (AttributeError, UnicodeDecodeError):
        return ""
    return text if _host_name(text) else ""


class ServerLocator:
    """
    Finds the servers of a SIP host (RFC 3263).

    Args:
        resolver: a twisted.names IResolver (``lookupNamingAuthorityPointer``,
            ``lookupService``, ``lookupAddress``, ``lookupIPV6Address``).
        rng: the weighted SRV choice's randomness.
        naptr: whether NAPTR records are asked for first.
    """

    def __init__(self, resolver: Any, rng: random.Random | None = None, naptr: bool = True):
        self.resolver = resolver
        self.rng = rng or random.Random()
        self.naptr = naptr

    async def locate(self, host: str, transport: str, port: int, port_given: bool) -> Location:
        """
        The servers of ``host`` for ``transport``; ``port`` is used for an IP
        address, a name with ``port_given``, and A/AAAA fallbacks.
        No server (nothing found, or every answer unusable) is an empty
        L{Location}.
        """
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return Location((Target(host, port, host),), MAX_TTL)
        if port_given:
            return await self._addresses(host, port, MAX_TTL)
        ttls: list[float] = []
        service = await self._service_name(host, transport, ttls)
        records = await self._srv(service, ttls)
        if not records:
            return await self._addresses(host, port, min(ttls, default=MAX_TTL))
        targets: list[Target] = []
        for record in order_srv(records, self.rng):
            if len(targets) >= MAX_TARGETS:
                break
            found = await self._addresses(record.target, record.port, MAX_TTL)
            targets.extend(found.targets)
            ttls.append(found.ttl)
        return Location(tuple(targets[:MAX_TARGETS]), _bounded(min(ttls, default=MAX_TTL)))

    async def _query(self, method: str, name: str) -> list[Any]:
        """The answer records of one lookup ([] when it fails), at most L{MAX_RECORDS}."""
        try:
            answers, _, _ = await getattr(self.resolver, method)(name, timeout=QUERY_TIMEOUT)
        except Exception:  # DNS at an I/O boundary: NXDOMAIN, timeouts, refusals
            return []
        return list(answers[:MAX_RECORDS]) if isinstance(answers, list | tuple) else []

    async def _service_name(self, host: str, transport: str, ttls: list[float]) -> str:
        """The SRV name for ``transport``: from a NAPTR record, else the usual prefix."""
        default = f"{SRV_PREFIXES[transport]}.{host}"
        if not self.naptr:
            return default
        wanted = NAPTR_SERVICES[transport]
        chosen: list[tuple[int, int, str, float]] = []
        for rr in await self._query("lookupNamingAuthorityPointer", host):
            record = rr.payload
            if rr.type != dns.NAPTR or not isinstance(record, dns.Record_NAPTR):
                continue
            service = _text(record.service).upper()
            flags = _text(record.flags).lower()
            replacement = _name(record.replacement)
            if service == wanted and flags == b"s" and replacement:
                chosen.append((record.order, record.preference, replacement, float(rr.ttl)))
        if not chosen:
            return default
        _, _, replacement, ttl = min(chosen)
        ttls.append(ttl)
        return replacement

    async def _srv(self, name: str, ttls: list[float]) -> list[Srv]:
        records = []
        for rr in await self._query("lookupService", name):
            record = rr.payload
            if rr.type != dns.SRV or not isinstance(record, dns.Record_SRV):
                continue
            target = _name(record.target)
            if not target or not 0 < record.port <= 65535:
                continue  # "." (no service), a garbled name, port 0
            records.append(Srv(record.priority, record.weight, record.port, target))
            ttls.append(float(rr.ttl))
        return records

    async def _addresses(self, name: str, port: int, ttl: float) -> Location:
        """A and AAAA records of ``name`` (at most L{MAX_ADDRESSES}) at ``port``."""
        if not _host_name(name):
            return Location((), _bounded(ttl))
        results = await DeferredList(
            [
                Deferred.fromCoroutine(self._query("lookupAddress", name)),
                Deferred.fromCoroutine(self._query("lookupIPV6Address", name)),
            ]
        )
        targets: list[Target] = []
        ttls = [ttl]
        for _, answers in results:
            for rr in answers or ():
                if rr.type not in (dns.A, dns.AAAA):
                    continue
                address = getattr(rr.payload, "dottedQuad", None)
                text = address() if address is not None else _ipv6(rr.payload)
                if text and len(targets) < MAX_ADDRESSES:
                    targets.append(Target(text, port, name))
                    ttls.append(float(rr.ttl))
        return Location(tuple(targets), _bounded(min(ttls)))


def _text(value: Any) -> bytes:
    """The bytes of a character string of a record (b"" when unusable)."""
    data = getattr(value, "string", value)
    return data if isinstance(data, bytes) else b""


def _ipv6(record: Any) -> str:
    try:
        return str(ipaddress.IPv6Address(bytes(record.address)))
    except (AttributeError, ValueError, TypeError):
        return ""


def _bounded(ttl: float) -> float:
    return min(MAX_TTL, max(MIN_TTL, ttl))
