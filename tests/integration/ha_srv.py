"""
Phones that find Warden through DNS SRV (RFC 3263, RFC 2782), measured on the
loopback: an authoritative DNS server for ``pbx.test`` (L{start_dns}, twisted.names
on a free UDP port) publishes ``_sip._udp.pbx.test`` with two Warden nodes at
priorities 10 and 20, both sharing the throwaway Redis; a phone (L{SrvPhone})
resolves the SRV records through that server, orders the targets, and on a
timeout tries the next one (RFC 3263 §4.3).

L{srv_failover} registers every 0.1 s, SIGKILLs the priority-10 node, and
reports how long until a REGISTER succeeded on the other one and how many
REGISTERs failed on every target. Used by L{tests.integration.test_dns_srv}
and ``bench.ha``.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.names import authority, client, dns, server

from tests.integration.clients import LOCALHOST, SipUdpClient, pause, real_reactor
from tests.integration.harness import WardenProcess, provision, user_password
from warden.testing import servers

ZONE = "pbx.test"
SERVICE = f"_sip._udp.{ZONE}"


class _Zone(authority.FileAuthority):
    """An authority whose records are given, not read from a file."""

    def __init__(self, records: dict[bytes, list[Any]]) -> None:
        self._given = records
        super().__init__("")

    def loadFile(self, filename: str) -> None:  # noqa: N802 (twisted's name)
        self.soa = (
            ZONE.encode(),
            dns.Record_SOA(mname=b"ns." + ZONE.encode(), rname=b"admin." + ZONE.encode()),
        )
        self.records = {name.lower(): list(rrs) for name, rrs in self._given.items()}
        self.records.setdefault(ZONE.encode(), []).append(self.soa[1])


def start_dns(targets: list[tuple[int, str, int]], address: str = LOCALHOST) -> tuple[Any, int]:
    """
    Serve ``pbx.test`` on a free UDP port of the loopback: one SRV record of
    ``_sip._udp.pbx.test`` per ``(priority, host label, port)`` (weight 10, TTL
    300), and an A record ``address`` (127.0.0.1) for each ``<label>.pbx.test``.

    Returns:
        the listening port object (``stopListening`` to stop) and its port number.
    """
    records: dict[bytes, list[Any]] = {SERVICE.encode(): []}
    for priority, label, port in targets:
        name = f"{label}.{ZONE}".encode()
        records[SERVICE.encode()].append(dns.Record_SRV(priority, 10, port, name, ttl=300))
        records[name] = [dns.Record_A(address, ttl=300)]
    factory = server.DNSServerFactory(authorities=[_Zone(records)])
    listening = real_reactor().listenUDP(0, dns.DNSDatagramProtocol(factory), LOCALHOST)
    return listening, listening.getHost().port


class SrvPhone:
    """
    A phone that registers to ``sip:pbx.test`` as RFC 3263 says: SRV lookup of
    ``_sip._udp.pbx.test`` at the given DNS server, targets ordered by priority
    (RFC 2782), each target's A record; a request that gets no answer within
    ``target_timeout`` s goes to the next target (§4.3). Like most phones, it
    then skips a target that timed out for ``hold_down`` s.
    """

    def __init__(self, dns_port: int, target_timeout: float = 2.0, hold_down: float = 30.0):
        self._resolver = client.Resolver(servers=[(LOCALHOST, dns_port)], reactor=real_reactor())
        self.target_timeout = target_timeout
        self.hold_down = hold_down
        self._clients: dict[tuple[str, int], SipUdpClient] = {}
        self._down: dict[tuple[str, int], float] = {}

    async def targets(self) -> list[tuple[str, int]]:
        """The SRV targets' addresses, lowest priority value first."""
        answers, _, _ = await self._resolver.lookupService(SERVICE, timeout=(1, 2))
        srv = sorted(
            (rr.payload for rr in answers if rr.type == dns.SRV),
            key=lambda p: (p.priority, -p.weight),
        )
        found = []
        for record in srv:
            host = record.target.name.decode()
            address = await self._resolver.getHostByName(host, timeout=(1, 2))
            found.append((address, record.port))
        return found

    async def register(self, number: str) -> tuple[str, tuple[str, int] | None]:
        """REGISTER ``number``; returns the final status (or ``"timeout"``) and the target."""
        now = time.monotonic()
        candidates = await self.targets()
        usable = [t for t in candidates if self._down.get(t, 0.0) <= now] or candidates
        for target in usable:
            phone = self._clients.get(target)
            if phone is None:
                phone = self._clients[target] = await SipUdpClient.open(target)
            contact = f"<sip:{number}@{LOCALHOST}:{phone.local_port}>"
            try:
                response = await phone.register(
                    number, user_password(number), contact=contact, timeout=self.target_timeout
                )
            except Exception:
                self._down[target] = time.monotonic() + self.hold_down
                continue
            return str(response.status), target
        return "timeout", None

    async def close(self) -> None:
        """Close the SIP sockets (the resolver closes its socket after each query)."""
        for phone in self._clients.values():
            await phone.close()


async def srv_failover(
    workdir: Path, duration_after: float = 8.0, interval: float = 0.1
) -> dict[str, Any]:
    """
    Two Warden nodes sharing Redis, published as SRV targets (node a priority
    10, node b 20); a L{SrvPhone} registers every ``interval`` s; node a gets
    SIGKILL 2 s in, and the phone goes on for ``duration_after`` s.

    Returns a dict: ``before`` (targets the phone used before the kill, all
    a), ``registered_before``, ``failover_s`` (kill to the 200 of the first
    REGISTER through node b), ``slowest_s`` (the longest REGISTER after the
    kill), ``failed`` and ``attempted`` (REGISTERs after the kill that
    failed on every target / all of them), and ``after`` (targets used after
    the kill).
    """
    redis = servers.redis()
    cluster = uuid.uuid4().hex
    nodes: dict[str, WardenProcess] = {}
    dns_port_object = None
    phone: SrvPhone | None = None
    try:
        for label in ("a", "b"):
            node = WardenProcess(
                workdir / label,
                settings={
                    "state": {"url": redis.url},
                    "cluster": {"name": cluster, "node_id": label},
                    "server": {"node_id": ""},
                },
            )
            nodes[label] = node
            await node.start()
            users = await provision(node.config_path, 1)
        number = users.numbers[0]
        by_port = {nodes[label].port: label for label in nodes}
        dns_port_object, dns_port = start_dns(
            [(10, "node-a", nodes["a"].port), (20, "node-b", nodes["b"].port)]
        )
        phone = SrvPhone(dns_port)
        before: list[tuple[str, str]] = []
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            status, target = await phone.register(number)
            before.append((status, by_port.get(target[1], "?") if target else "-"))
            await pause(interval)
        killed = time.monotonic()
        os.kill(nodes["a"].pid, signal.SIGKILL)
        results: list[tuple[float, float, str, str]] = []
        while time.monotonic() - killed < duration_after:
            begin = time.monotonic()
            status, target = await phone.register(number)
            label = by_port.get(target[1], "?") if target else "-"
            results.append((begin - killed, time.monotonic() - killed, status, label))
            await pause(interval)
        first_b = next((end for _, end, s, t in results if s == "200" and t == "b"), None)
        return {
            "registered_before": bool(before) and all(s == "200" for s, _ in before),
            "before": sorted({t for _, t in before}),
            "failover_s": first_b,
            "slowest_s": max(end - begin for begin, end, _, _ in results),
            "attempted": len(results),
            "failed": sum(1 for _, _, s, _ in results if s != "200"),
            "after": sorted({t for _, _, _, t in results}),
            "target_timeout_s": phone.target_timeout,
            "load": os.getloadavg()[0],
        }
    finally:
        if phone is not None:
            await phone.close()
        if dns_port_object is not None:
            await Deferred.fromCoroutine(_stop(dns_port_object))
        for node in nodes.values():
            await node.cleanup()


async def _stop(port: Any) -> None:
    result = port.stopListening()
    if isinstance(result, Deferred):
        await result
