"""
PostgreSQL failover under a Warden node, on the private network of
L{tests.integration.netns}: etcd in the LAN namespace, two Patroni members
(``deploy/patroni/patroni.yml``) in namespaces ``db1`` and ``db2``, and one
Warden node whose ``[store] url`` names HAProxy on its own loopback
(``deploy/haproxy/warden-postgres.cfg``), which follows Patroni's primary.

L{database_switchover} places calls with ``warden-loadtest`` while
``patronictl switchover`` moves the primary (or, ``unplanned``, while the
primary's machine dies: every process in its namespace SIGKILLed and its link
cut), and compares the call records in the database with the calls the load
test saw answered.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from tests.integration.clients import pause
from tests.integration.ha_cluster import (
    DEPLOY,
    HaSite,
    NamespacedNode,
    machine_load,
    monotonic,
    run_loadtest,
)
from tests.integration.harness import provision, run_process
from tests.integration.netns import LAN_ADDRESS, SUBNET, ip

PATRONI_YML = DEPLOY / "patroni" / "patroni.yml"
HAPROXY_CFG = DEPLOY / "haproxy" / "warden-postgres.cfg"
MEMBERS = ("db1", "db2")
SUPERUSER_PASSWORD = "pg-ha-secret"
WARDEN_PASSWORD = "warden-ha-secret"
POSTGRES_BIN = "/usr/lib/postgresql/15/bin"


def postgres_bin() -> str:
    """The newest PostgreSQL server binaries installed (Debian layout)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return str(versions[-1].parent) if versions else POSTGRES_BIN


def render_patroni(site: HaSite, member: str, scope: str, data: Path) -> str:
    """``deploy/patroni/patroni.yml`` for ``member`` on the test network."""
    address = site.lan.hosts[member]
    text = PATRONI_YML.read_text()
    replacements = {
        "scope: warden": f"scope: {scope}",
        "name: pg1": f"name: {member}",
        "10.0.0.41": address,
        "10.0.0.51:2379,10.0.0.52:2379,10.0.0.53:2379": f"{LAN_ADDRESS}:2379",
        "10.0.0.0/24": f"{SUBNET}.0/24",
        "/var/lib/postgresql/15/warden": str(data / "data"),
        "/usr/lib/postgresql/15/bin": postgres_bin(),
        "/var/lib/postgresql/.pgpass-patroni": str(data / "pgpass"),
        "/var/run/postgresql": str(data),
        "CHANGE-ME-superuser": SUPERUSER_PASSWORD,
    }
    for example, value in replacements.items():
        assert example in text, f"{PATRONI_YML} no longer has {example!r}"
        text = text.replace(example, value)
    return text


def render_haproxy(site: HaSite) -> str:
    """``deploy/haproxy/warden-postgres.cfg`` pointing at the two members."""
    text = HAPROXY_CFG.read_text()
    for example, member in (("10.0.0.41", "db1"), ("10.0.0.42", "db2")):
        assert example in text, f"{HAPROXY_CFG} no longer has {example!r}"
        text = text.replace(example, site.lan.hosts[member])
    return text


class PatroniCluster:
    """etcd and two Patroni members on a site; their scratch directories."""

    def __init__(self, site: HaSite) -> None:
        self.site = site
        self.scope = site.cluster
        self.configs: dict[str, Path] = {}
        self._scratch = Path(tempfile.mkdtemp(prefix="warden-patroni-"))
        site.cleanups.append(lambda: shutil.rmtree(self._scratch, ignore_errors=True))

    def start_etcd(self) -> None:
        """etcd in the LAN namespace."""
        etcd = shutil.which("etcd") or "etcd"
        data = self._scratch / "etcd"
        peer = "http://127.0.0.1:2380"
        self.site.start_daemon("lan", [
            etcd, "--name", "e0", "--data-dir", str(data),
            "--listen-client-urls", f"http://{LAN_ADDRESS}:2379",
            "--advertise-client-urls", f"http://{LAN_ADDRESS}:2379",
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"e0={peer}",
        ], "etcd")  # fmt: skip
        os.chmod(self._scratch, 0o755)

    def start_member(self, member: str) -> None:
        """Patroni member ``member`` (run as the postgres user, in its own directory)."""
        directory = self._scratch / member
        directory.mkdir()
        shutil.chown(directory, user="postgres", group="postgres")
        directory.chmod(0o700)
        config = directory / "patroni.yml"
        config.write_text(render_patroni(self.site, member, self.scope, directory))
        shutil.chown(config, user="postgres", group="postgres")
        self.configs[member] = config
        runuser = shutil.which("runuser") or "runuser"
        patroni = shutil.which("patroni") or "patroni"
        self.site.start_daemon(member, [runuser, "-u", "postgres", "--", patroni, str(config)],
                               f"patroni-{member}", cwd=directory)  # fmt: skip

    async def rest(self, member: str, path: str) -> int:
        """The HTTP status of Patroni's REST ``path`` on ``member`` (0: no answer)."""
        url = f"http://{self.site.lan.hosts[member]}:8008{path}"
        command = [*self.site.lan.prefix("lan"), "curl", "-s", "-o", "/dev/null",
                   "-w", "%{http_code}", "-m", "2", url]  # fmt: skip
        result = await run_process(command, self.site.workdir, 5.0)
        return int(result.stdout.strip() or 0)

    async def primary(self) -> str | None:
        """The member whose REST API says it is the primary."""
        for member in MEMBERS:
            if await self.rest(member, "/primary") == 200:
                return member
        return None

    async def wait(self, check: Any, timeout: float) -> bool:
        """Poll the async ``check`` every 0.2 s until it holds or ``timeout`` passes."""
        deadline = monotonic() + timeout
        while monotonic() < deadline:
            if await check():
                return True
            await pause(0.2)
        return False

    async def psql(self, sql: str, database: str = "postgres") -> str:
        """``sql`` as the superuser on the current primary (through the LAN)."""
        primary = await self.primary()
        assert primary is not None, "no primary"
        command = [
            *self.site.lan.prefix("lan"), "env", f"PGPASSWORD={SUPERUSER_PASSWORD}",
            "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", self.site.lan.hosts[primary], "-U", "postgres", "-d", database, "-c", sql,
        ]  # fmt: skip
        result = await run_process(command, self.site.workdir, 30.0)
        if result.code != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout.strip()

    async def switchover(self, leader: str, candidate: str) -> int:
        """``patronictl switchover``; its exit code."""
        command = [
            *self.site.lan.prefix("lan"), "patronictl", "-c", str(self.configs[leader]),
            "switchover", "--leader", leader, "--candidate", candidate, "--force",
        ]  # fmt: skip
        return (await run_process(command, self.site.workdir, 60.0)).code


def kill_member(site: HaSite, member: str) -> int:
    """
    The machine of ``member`` dies: SIGKILL to every process in its namespace
    (Patroni and PostgreSQL), and its link to the LAN cut. Returns how many
    processes were killed.
    """
    pids = [int(p) for p in ip("netns", "pids", site.lan.namespace(member)).split()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    site.lan.unplug(member)
    return len(pids)


async def database_switchover(
    site: HaSite,
    calls: int = 80,
    rate: float = 4.0,
    hold: float = 1.0,
    switch_after: float = 5.0,
    unplanned: bool = False,
) -> dict[str, Any]:
    """
    One Warden node (``a``) on the Patroni cluster through HAProxy;
    ``warden-loadtest`` places ``calls`` calls at ``rate`` per second, held
    ``hold`` s, straight to the node; ``switch_after`` seconds into the calls
    ``patronictl switchover`` moves the primary from db1 to db2 (``unplanned``:
    db1's machine dies, L{kill_member}, and Patroni promotes db2 once db1's
    leader key expires). Returns the load test's outcome, how long the
    switchover took (command start, or the kill, to db2 answering /primary),
    the call records in the database compared with the calls the load test saw
    answered, and ``records_s``: from the command or kill until every answered
    call's record was in the new primary.
    """
    patroni = PatroniCluster(site)
    patroni.start_etcd()
    patroni.start_member("db1")
    if not await patroni.wait(lambda: _is(patroni, "db1"), 90):
        raise RuntimeError("db1 did not become the primary")
    await patroni.psql(f"CREATE ROLE warden LOGIN PASSWORD '{WARDEN_PASSWORD}'")
    await patroni.psql("CREATE DATABASE warden OWNER warden")
    patroni.start_member("db2")
    if not await patroni.wait(lambda: _replica_ready(patroni), 90):
        raise RuntimeError("db2 did not become a streaming replica")
    haproxy_cfg = site.workdir / "haproxy.cfg"
    haproxy_cfg.write_text(render_haproxy(site))
    site.start_daemon("a", [shutil.which("haproxy") or "haproxy", "-db", "-f", str(haproxy_cfg)],
                      "haproxy")  # fmt: skip
    password_file = site.workdir / "warden-password"
    password_file.write_text(WARDEN_PASSWORD + "\n")
    password_file.chmod(0o600)
    url = "postgresql://warden@127.0.0.1:5432/warden?target_session_attrs=read-write&connect_timeout=3"
    node = NamespacedNode(site.workdir / "node-a", site.lan, "a", site.lan.hosts["a"], {
        "store": {"url": url, "password_file": str(password_file)},
        "media": {"port_min": 20000, "port_max": 20999},
    })  # fmt: skip
    site.nodes["a"] = node
    await node.start(timeout=60.0)
    users = await provision(node.config_path, 20, 3000, prefix=site.lan.prefix("a"))
    ran, report = await run_loadtest(
        site, users,
        ["--test-type", "calls", "--total-calls", str(calls),
         "--call-rate", f"{rate:g}", "--call-duration", f"{hold:g}",
         "--concurrent-calls", str(int(rate * hold * 2) + 5), "--register-rate", "50"],
        timeout=calls / rate + hold + 120,
        pbx_host=site.lan.hosts["a"],
    )  # fmt: skip
    await pause(len(users.numbers) / 50 + switch_after)
    load = machine_load()
    started = monotonic()
    if unplanned:
        killed = kill_member(site, "db1")
        switched = 0 if killed else -1
    else:
        switched = await patroni.switchover("db1", "db2")
    moved = await patroni.wait(lambda: _is(patroni, "db2"), 60)
    switch_s = monotonic() - started
    result = await ran
    document = json.loads(report.read_text()) if report.exists() else {}
    phase = document.get("phases", {}).get("calls", {})
    answered = document.get("responses", {}).get("INVITE", {}).get("200", 0)

    async def records() -> int:
        return int(await patroni.psql("SELECT count(*) FROM call_records", "warden") or 0)

    # Records that met the switch wait in the node's spool and are retried.
    stored = 0
    records_s = None
    deadline = monotonic() + 60
    while monotonic() < deadline:
        stored = await records()
        if stored >= answered:
            records_s = round(monotonic() - started, 3)
            break
        await pause(0.5)
    return {
        "unplanned": unplanned,
        "switchover_exit": switched,
        "primary_after": await patroni.primary() if moved else None,
        "switchover_s": round(switch_s, 3),
        "loadtest_exit": result.code,
        "calls": phase,
        "answered": answered,
        "call_records": stored,
        "records_s": records_s,
        "node_running": node.running,
        "load": load,
    }


async def _is(patroni: PatroniCluster, member: str) -> bool:
    return await patroni.rest(member, "/primary") == 200


async def _replica_ready(patroni: PatroniCluster) -> bool:
    return await patroni.rest("db2", "/replica") == 200
