"""
A Warden cluster on a private network, for the high-availability tests and
``bench.ha``: nodes in network namespaces (L{tests.integration.netns}) sharing a
throwaway PostgreSQL and Redis that run in the LAN namespace, with keepalived
(active-passive, a VRRP virtual IP) or Kamailio's dispatcher (active-active) in
front of them.

The configuration files come from ``deploy/``: ``deploy/keepalived/keepalived.conf``
and ``deploy/kamailio/kamailio.cfg`` are what an operator installs, with their
example addresses replaced by the test network's (L{render_keepalived},
L{KamailioProcess}). Every process is started under ``ip netns exec`` and
stopped by L{HaSite.close} (or with its namespace).

Timing goes through L{monotonic} (``CLOCK_MONOTONIC``, the same clock in every
process of the machine), so a kill and the first REGISTER that succeeds after
it are compared on one clock.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from twisted.internet import defer

from tests.integration.clients import SipUdpClient, pause, poll
from tests.integration.harness import (
    REPO_ROOT,
    TWISTD,
    ProcessResult,
    Users,
    WardenFailed,
    WardenProcess,
    provision,
    run_process,
    spawn,
)
from tests.integration.netns import LAN_ADDRESS, SUBNET, Lan
from warden.testing import servers

DEPLOY = REPO_ROOT / "deploy"
KEEPALIVED_CONF = DEPLOY / "keepalived" / "keepalived.conf"
CHECK_WARDEN = DEPLOY / "keepalived" / "check-warden"
KAMAILIO_CFG = DEPLOY / "kamailio" / "kamailio.cfg"
VIP = f"{SUBNET}.100"
SIP_PORT = 5060
ADMIN_PORT = 8443
ROLE = "warden_ha"
ROLE_PASSWORD = "ha-secret"

# The example values in deploy/keepalived/keepalived.conf that a node replaces.
_KEEPALIVED_EXAMPLE = {
    "ens192": "eth0",
    "10.0.0.100/24": f"{VIP}/24",
    "priority 150": "priority {priority}",
    "router_id warden_a": "router_id warden_{label}",
}


def monotonic() -> float:
    """Seconds on the machine-wide monotonic clock."""
    return time.monotonic()


def require_tools(testcase: Any, *names: str) -> None:
    """Every binary in ``names`` (Debian package of the same name) must exist."""
    from tests.integration.harness import require_binary

    for name in names:
        require_binary(testcase, name, name)


class NamespacedNode(WardenProcess):
    """
    ``twistd -n warden`` in a host's namespace, listening for SIP on
    ``interface`` (its own address, or the virtual IP it may take over).
    """

    def __init__(
        self,
        workdir: Path,
        lan: Lan,
        label: str,
        interface: str,
        settings: dict[str, dict[str, object]],
    ) -> None:
        self.lan = lan
        self.label = label
        self.host = lan.hosts[label]
        self.interface = interface
        merged = {name: dict(table) for name, table in settings.items()}
        merged.setdefault("sip", {}).update({"interface": interface, "port": SIP_PORT})
        merged.setdefault("cluster", {}).update({"node_id": label, "address": self.host})
        merged.setdefault("server", {}).update(
            {"node_id": "", "domains": sorted({VIP, LAN_ADDRESS, self.host, interface})}
        )
        merged.setdefault("admin", {})["listen"] = f"tcp:{ADMIN_PORT}:interface=127.0.0.1"
        super().__init__(workdir, port=SIP_PORT, settings=merged)

    @property
    def address(self) -> tuple[str, int]:
        """Where this node's SIP listeners are."""
        return (self.interface, SIP_PORT)

    def command(self) -> list[str]:
        """twistd under ``ip netns exec``."""
        return [*self.lan.prefix(self.label), *super().command()]

    async def start(self, timeout: float = 30.0) -> None:
        """
        Start Warden and wait until its ``/readyz`` answers 200 (asked with the
        keepalived check, ``deploy/keepalived/check-warden``, in its namespace:
        a passive node's SIP address is not reachable until it takes it over).

        Raises:
            WardenFailed: it exited, or was not ready within ``timeout`` seconds.
        """
        assert not self.running, "already running"
        self._child, self._process = spawn(self.command(), self.workdir)
        check = [*self.lan.prefix(self.label), str(CHECK_WARDEN)]
        deadline = monotonic() + timeout
        while monotonic() < deadline:
            if not self.running:
                raise WardenFailed(self._describe("exited during start-up"))
            if (await run_process(check, self.workdir, 5.0)).code == 0:
                return
            await pause(0.2)
        await self.kill()
        raise WardenFailed(self._describe(f"was not ready within {timeout:g}s"))


class Daemon:
    """A helper daemon (keepalived, Kamailio) running in a namespace until stopped."""

    def __init__(self, command: Sequence[str], workdir: Path, cwd: Path | None = None) -> None:
        self.workdir = workdir
        self._child, self._process = spawn(command, cwd or workdir)

    @property
    def running(self) -> bool:
        return self._child.running

    def output(self) -> str:
        out, err = self._child.output()
        return out + err

    async def stop(self) -> None:
        """
        SIGTERM, SIGKILL if it lingers; returns once it has exited, its output
        kept in ``output.log`` of its directory.
        """
        if self.running:
            self._process.signalProcess("TERM")
            if not await poll(lambda: not self.running, 10.0):
                self._process.signalProcess("KILL")
                await self._child.ended
        (self.workdir / "output.log").write_text(self.output())


def render_keepalived(label: str, priority: int, check: Path) -> str:
    """``deploy/keepalived/keepalived.conf`` for node ``label`` on the test network."""
    text = KEEPALIVED_CONF.read_text()
    for example, value in _KEEPALIVED_EXAMPLE.items():
        assert example in text, f"{KEEPALIVED_CONF} no longer has {example!r}"
        text = text.replace(example, value.format(priority=priority, label=label))
    return text.replace("/usr/local/lib/warden/check-warden", str(check))


class HaSite:
    """
    The LAN, its shared PostgreSQL and Redis, and the Warden nodes on it.

    Use: ``site = HaSite(workdir)``; ``site.create(["a", "b"])`` (synchronous:
    namespaces, servers, database); then the async starters; ``await
    site.close()`` at the end, whatever happened.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.lan = Lan()
        self.nodes: dict[str, NamespacedNode] = {}
        self.daemons: list[Daemon] = []
        self.cluster = self.lan.name.replace("-", "_")
        self.postgres: servers.PostgreSQLServer | None = None
        self.redis: servers.RedisServer | None = None
        self.store: dict[str, object] = {}
        self.cleanups: list[Callable[[], object]] = []

    def create(self, labels: Sequence[str], shared_servers: bool = True) -> None:
        """
        Namespaces for the LAN and each host; with ``shared_servers``, the
        throwaway PostgreSQL and Redis on the LAN for the nodes to share.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.lan.create()
        for number, label in enumerate(labels, start=11):
            self.lan.add_host(label, number)
        if not shared_servers:
            return
        prefix = self.lan.prefix("lan")
        self.postgres = servers.PostgreSQLServer(LAN_ADDRESS, prefix, f"{SUBNET}.0/24")
        self.postgres.start()
        self.redis = servers.RedisServer(LAN_ADDRESS, prefix)
        self.redis.start()
        self.postgres.create_database("warden")
        self.postgres.create_role(ROLE, ROLE_PASSWORD, database="warden")
        password_file = self.workdir / "store-password"
        password_file.write_text(ROLE_PASSWORD + "\n")
        password_file.chmod(0o600)
        self.store = {
            "url": f"postgresql://{ROLE}@{LAN_ADDRESS}:{self.postgres.port}/warden",
            "password_file": str(password_file),
        }

    def node_settings(self, media: int) -> dict[str, dict[str, object]]:
        """Settings shared by the nodes: store, state, cluster name, media ports."""
        assert self.redis is not None
        return {
            "store": dict(self.store),
            "state": {"url": self.redis.url, "timeout": 1.0, "heartbeat_interval": 1.0},
            "cluster": {"name": self.cluster},
            "media": {"port_min": media, "port_max": media + 999},
        }

    async def start_node(self, label: str, interface: str = "") -> NamespacedNode:
        """Warden node ``label`` listening on ``interface`` (default: its own address)."""
        workdir = self.workdir / f"node-{label}"
        node = NamespacedNode(
            workdir,
            self.lan,
            label,
            interface or self.lan.hosts[label],
            self.node_settings(20000),
        )
        self.nodes[label] = node
        await node.start(timeout=30.0)
        return node

    async def provision(self, count: int, first: int = 2000) -> Users:
        """``count`` extensions from ``first`` in the shared database."""
        any_node = next(iter(self.nodes.values()))
        return await provision(any_node.config_path, count, first, prefix=self.lan.prefix("lan"))

    def start_daemon(
        self, label: str, command: Sequence[str], name: str, cwd: Path | None = None
    ) -> Daemon:
        """
        Run ``command`` in ``label``'s namespace, with a directory of its own
        for its output (and its working directory unless ``cwd`` says otherwise).
        """
        workdir = self.workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        daemon = Daemon([*self.lan.prefix(label), *command], workdir, cwd)
        self.daemons.append(daemon)
        return daemon

    def start_keepalived(self, label: str, priority: int) -> Daemon:
        """keepalived on node ``label``, tracking its Warden through ``/readyz``."""
        workdir = self.workdir / f"keepalived-{label}"
        workdir.mkdir(parents=True, exist_ok=True)
        check = workdir / "check-warden"
        check.write_text(CHECK_WARDEN.read_text())
        check.chmod(0o755)
        conf = workdir / "keepalived.conf"
        conf.write_text(render_keepalived(label, priority, check))
        keepalived = shutil.which("keepalived") or "keepalived"
        command = [
            keepalived, "--dont-fork", "--log-console", "--vrrp",
            f"--use-file={conf}", f"--pid={workdir / 'keepalived.pid'}",
            f"--vrrp_pid={workdir / 'vrrp.pid'}", f"--checkers_pid={workdir / 'checkers.pid'}",
        ]  # fmt: skip
        return self.start_daemon(label, command, f"keepalived-{label}")

    def holder(self) -> str | None:
        """The node holding the virtual IP right now, if any."""
        for label in self.nodes:
            if VIP in self.lan.addresses(label):
                return label
        return None

    async def phone(self, server: tuple[str, int]) -> SipUdpClient:
        """A UDP SIP client in the LAN namespace sending to ``server``."""
        with self.lan.inside("lan"):
            return await SipUdpClient.open(server, LAN_ADDRESS)

    async def start_kamailio(self) -> Daemon:
        """
        Kamailio (``deploy/kamailio/kamailio.cfg``) on the LAN address, port 5060,
        dispatching to every node; returns once an OPTIONS through it is
        answered by a node.
        """
        workdir = self.workdir / "kamailio"
        workdir.mkdir(parents=True, exist_ok=True)
        destinations = workdir / "dispatcher.list"
        destinations.write_text(
            "".join(f"1 sip:{self.lan.hosts[label]}:{SIP_PORT} 0 0\n" for label in self.nodes)
        )
        kamailio = shutil.which("kamailio") or "kamailio"
        command = [
            kamailio, "-DD", "-E", "-f", str(KAMAILIO_CFG),
            "-A", f"LISTEN=udp:{LAN_ADDRESS}:{SIP_PORT}",
            "-A", f'DISPATCHER_LIST="{destinations}"',
            "-Y", str(workdir), "-P", str(workdir / "kamailio.pid"), "-w", str(workdir),
        ]  # fmt: skip
        daemon = self.start_daemon("lan", command, "kamailio")
        phone = await self.phone((LAN_ADDRESS, SIP_PORT))
        try:
            for _ in range(100):
                if not daemon.running:
                    raise RuntimeError(f"kamailio exited:\n{daemon.output()}")
                try:
                    if (await phone.options(timeout=0.5, retransmit=False)).status == 200:
                        return daemon
                except defer.TimeoutError:
                    pass
                await pause(0.1)
        finally:
            await phone.close()
        raise RuntimeError(f"no answer through kamailio:\n{daemon.output()}")

    async def close(self) -> None:
        """Stop everything started, then remove the servers and namespaces."""
        try:
            for node in self.nodes.values():
                await node.cleanup()
            for daemon in self.daemons:
                await daemon.stop()
        finally:
            for server in (self.postgres, self.redis):
                if server is not None:
                    server.destroy()
            self.lan.destroy()
            for cleanup in self.cleanups:
                cleanup()


class Attempt(NamedTuple):
    """One REGISTER of a probe: when it started (L{monotonic}), its latency or None."""

    started: float
    latency: float | None


async def register_once(phone: SipUdpClient, user: str, password: str, timeout: float) -> Attempt:
    """One REGISTER of ``user`` (digest-authenticated) from ``phone``, timed."""
    contact = f"<sip:{user}@{LAN_ADDRESS}:{phone.local_port}>"
    started = monotonic()
    try:
        response = await phone.register(user, password, contact, expires=300, timeout=timeout)
    except defer.TimeoutError:
        return Attempt(started, None)
    return Attempt(started, monotonic() - started if response.status == 200 else None)


async def register_probe(
    phone: SipUdpClient,
    user: str,
    password: str,
    until: float,
    interval: float = 0.1,
    attempt_timeout: float = 8.0,
    stop_at_success: bool = False,
) -> list[Attempt]:
    """
    Start a REGISTER of ``user`` every ``interval`` seconds (each its own
    transaction, given up after ``attempt_timeout``) until ``until``
    (L{monotonic}), or until one succeeds with ``stop_at_success``; the
    attempts in the order they started.
    """
    attempts: list[Attempt] = []

    async def attempt() -> None:
        attempts.append(await register_once(phone, user, password, attempt_timeout))

    pending: list[defer.Deferred[None]] = []
    while monotonic() < until:
        if stop_at_success and any(a.latency is not None for a in attempts):
            break
        pending.append(defer.Deferred.fromCoroutine(attempt()))
        await pause(interval)
    await defer.DeferredList(pending, consumeErrors=True)
    return sorted(attempts)


def first_answer(attempts: Sequence[Attempt]) -> float | None:
    """When the first successful attempt was answered (L{monotonic}), if any."""
    answered = [a.started + a.latency for a in attempts if a.latency is not None]
    return min(answered) if answered else None


async def active_passive(site: HaSite, lose_node: bool = False) -> dict[str, Any]:
    """
    The active-passive scenario: node a (priority 150) and b (100) both listen
    on the virtual IP, keepalived on each; a phone registers through the
    address; a's Warden is SIGKILLed (with ``lose_node``, a's network link goes
    down at the same moment, as when the machine dies: b hears no more VRRP
    advertisements); the phone registers again every 0.1 s until one
    succeeds. Returns what happened, with the failover time (kill to the first
    successful REGISTER through the virtual IP).
    """
    a = await site.start_node("a", interface=VIP)
    await site.start_node("b", interface=VIP)
    users = await site.provision(1)
    site.start_keepalived("a", 150)
    site.start_keepalived("b", 100)
    holder_before = site.holder() if await wait_for(lambda: site.holder() == "a", 30) else None
    phone = await site.phone((VIP, SIP_PORT))
    port = phone.local_port
    try:
        user = users.numbers[0]
        password = users.passwords[user]
        before = await register_probe(phone, user, password, monotonic() + 10,
                                      stop_at_success=True)  # fmt: skip
        load = machine_load()
        killed = monotonic()
        if lose_node:
            site.lan.unplug("a")
        await a.kill()
        after = await register_probe(phone, user, password, killed + 60, stop_at_success=True)
        answered = first_answer(after)
        contacts: list[str] = []
        if answered is not None:
            query = await phone.register(user, password, contact=None)
            contacts = query.get_all("Contact") if query.status == 200 else []
    finally:
        await phone.close()
    return {
        "holder_before": holder_before,
        "holder_after": "b" if VIP in site.lan.addresses("b") else None,
        "registered_before": first_answer(before) is not None,
        "failover_s": None if answered is None else round(answered - killed, 3),
        "attempts_after_kill": len(after),
        "phone_bound": any(f":{port}" in contact for contact in contacts),
        "load": load,
    }


async def run_loadtest(
    site: HaSite,
    users: Users,
    options: Sequence[str],
    timeout: float,
    pbx_host: str = LAN_ADDRESS,
) -> tuple[defer.Deferred[ProcessResult], Path]:
    """
    Start ``twistd warden-loadtest`` in the LAN namespace against ``pbx_host``
    (Kamailio by default) with ``options``; returns (a Deferred firing with
    its result, the path of its report).
    """
    workdir = site.workdir / "loadtest"
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / "report.json"
    command = [
        *site.lan.prefix("lan"), *TWISTD, "-n", "--pidfile=",
        f"--logfile={workdir / 'twistd.log'}", "warden-loadtest",
        "--pbx-host", pbx_host, "--local-ip", LAN_ADDRESS,
        "--users-file", str(users.sipp_csv), "--users", str(len(users.numbers)),
        "--save-report", str(report), "--no-progress", "--timeout", f"{timeout:g}",
        *options,
    ]  # fmt: skip
    ran = defer.Deferred.fromCoroutine(run_process(command, workdir, timeout + 30))
    return ran, report


async def active_active(
    site: HaSite,
    callers: int = 20,
    calls: int = 120,
    rate: float = 8.0,
    hold: float = 3.0,
    kill_after: float = 6.0,
) -> dict[str, Any]:
    """
    The active-active scenario: Kamailio's dispatcher in front of nodes a and
    b; ``warden-loadtest`` with ``callers`` users (half of them callees)
    places ``calls`` calls at ``rate`` per second, held
    ``hold`` seconds, through Kamailio, while a probe phone registers through
    it every 0.1 s; ``kill_after`` seconds into the calls a's Warden is
    SIGKILLed. Returns the failed calls (by cause) and the recovery time: from
    the kill to the start of the last probe REGISTER that failed or was held
    up by the dead node (slower than 1 s, Kamailio's fr_timer being 2 s).
    """
    a = await site.start_node("a")
    await site.start_node("b")
    await site.start_kamailio()
    users = await site.provision(callers + 1)
    probe_user = users.numbers[0]
    callers = users._replace(numbers=users.numbers[1:], sipp_csv=site.workdir / "callers.csv")
    callers.sipp_csv.write_text(
        "SEQUENTIAL\n" + "".join(f"{n};{users.passwords[n]}\n" for n in callers.numbers)
    )
    duration = calls / rate + hold
    ran, report = await run_loadtest(
        site,
        callers,
        ["--test-type", "calls", "--total-calls", str(calls), "--call-rate", f"{rate:g}",
         "--concurrent-calls", str(int(rate * hold * 2) + 5), "--call-duration", f"{hold:g}",
         "--register-rate", "50"],
        timeout=duration + 120,
    )  # fmt: skip
    phone = await site.phone((LAN_ADDRESS, SIP_PORT))
    try:
        # The calls start once the loadtest's users are registered.
        await pause(len(callers.numbers) / 50 + kill_after)
        load = machine_load()
        killed = monotonic()
        probe = defer.Deferred.fromCoroutine(
            register_probe(phone, probe_user, users.passwords[probe_user], killed + 20)
        )
        await a.kill()
        attempts = await probe
    finally:
        await phone.close()
    result = await ran
    document = json.loads(report.read_text()) if report.exists() else {}
    held_up = [x for x in attempts if x.latency is None or x.latency > 1.0]
    phase = document.get("phases", {}).get("calls", {})
    return {
        "loadtest_exit": result.code,
        "loadtest_stderr": result.stderr[-2000:],
        "calls": phase,
        "call_setup_ms": {
            key: document.get("timers", {}).get("call_setup", {}).get(key)
            for key in ("p50_ms", "p95_ms", "max_ms")
        },
        "probe_attempts": len(attempts),
        "probe_failed": sum(1 for x in attempts if x.latency is None),
        "probe_held_up": len(held_up),
        "recovery_s": round(held_up[-1].started - killed, 3) if held_up else 0.0,
        "load": load,
    }


async def wait_for(
    condition: Callable[[], bool] | Callable[[], Awaitable[bool]], timeout: float
) -> bool:
    """Poll ``condition`` (plain or async) every 0.05 s until it holds or ``timeout``."""
    deadline = monotonic() + timeout
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return True
        if monotonic() >= deadline:
            return False
        await pause(0.05)


def machine_load() -> dict[str, float]:
    """The 1, 5 and 15 minute load averages and the number of CPUs."""
    one, five, fifteen = os.getloadavg()
    return {"load1": one, "load5": five, "load15": fifteen, "cpus": float(os.cpu_count() or 1)}


__all__ = [
    "TWISTD",
    "VIP",
    "HaSite",
    "NamespacedNode",
    "first_answer",
    "machine_load",
    "monotonic",
    "register_probe",
    "require_tools",
    "wait_for",
]
