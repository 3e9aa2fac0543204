"""
Redis Sentinel failover under a Warden node, on the loopback: a Redis primary,
one replica and three Sentinels (``redis-server --sentinel``), each on a free
port (L{SentinelGroup}); Warden's ``[state] url`` names the three Sentinels
(``redis+sentinel://...``).

L{sentinel_failover} registers a phone through Warden every 0.1 s, SIGKILLs
the primary, and reports when Sentinel promoted the replica, when REGISTER
succeeded again, and how many REGISTERs failed in between. Used by
L{tests.integration.test_redis_sentinel} and ``bench.ha``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.clients import LOCALHOST, SipUdpClient, pause
from tests.integration.harness import WardenProcess, provision, user_password
from warden.testing import servers

MASTER = "wardenpbx"
# Sentinel's settings for the test (an operator's are in docs/HA_DEPLOYMENT_GUIDE.md):
# the primary counts as down after 1 s without an answer.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10000
QUORUM = 2
SENTINELS = 3


def redis_command(port: int, *args: str, timeout: float = 1.0) -> Any:
    """
    Send one command to the Redis (or Sentinel) on ``port`` of the loopback and
    return its reply (a str, int, None or nested list); an error reply raises.
    """
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as sock:
        sock.sendall(b"".join(parts))
        reader = sock.makefile("rb")
        return _read_reply(reader)


def _read_reply(reader: Any) -> Any:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed before the reply")
    kind, text = line[:1], line[1:-2].decode()
    if kind == b"+":
        return text
    if kind == b"-":
        raise RuntimeError(text)
    if kind == b":":
        return int(text)
    if kind == b"$":
        size = int(text)
        if size < 0:
            return None
        return reader.read(size + 2)[:-2].decode()
    if kind == b"*":
        count = int(text)
        return None if count < 0 else [_read_reply(reader) for _ in range(count)]
    raise RuntimeError(f"unexpected reply {line!r}")


class SentinelGroup:
    """
    A Redis primary, a replica and three Sentinels watching them as ``MASTER``,
    in a scratch directory; L{close} stops whatever still runs.
    """

    def __init__(self) -> None:
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._binary = found
        self.directory = Path(tempfile.mkdtemp(prefix="warden-sentinel-"))
        self.primary_port = servers.free_tcp_port()
        self.replica_port = servers.free_tcp_port()
        self.sentinel_ports = [servers.free_tcp_port() for _ in range(SENTINELS)]
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """Warden's ``[state] url`` naming the three Sentinels."""
        hosts = ",".join(f"{LOCALHOST}:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    def _spawn(self, port: int, args: list[str]) -> None:
        log = self.directory / f"{port}.log"
        self._processes[port] = subprocess.Popen(
            [self._binary, *args, "--logfile", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _redis(self, port: int, *extra: str) -> None:
        data = self.directory / str(port)
        data.mkdir()
        self._spawn(
            port,
            ["--port", str(port), "--bind", LOCALHOST, "--save", "", "--appendonly", "no",
             "--dir", str(data), *extra],
        )  # fmt: skip

    async def start(self, timeout: float = 20.0) -> None:
        """
        Start everything; return once the replica is in sync and every Sentinel
        knows the replica and the two other Sentinels (else RuntimeError).
        """
        self._redis(self.primary_port)
        self._redis(self.replica_port, "--replicaof", LOCALHOST, str(self.primary_port))
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind {LOCALHOST}\ndir {self.directory}\n"
                f"sentinel monitor {MASTER} {LOCALHOST} {self.primary_port} {QUORUM}\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
            )
            self._spawn(port, [str(conf), "--sentinel"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready():
                return
            await pause(0.2)
        raise RuntimeError(f"the Sentinel group was not ready within {timeout:g} s")

    def _ready(self) -> bool:
        try:
            info = redis_command(self.replica_port, "INFO", "replication")
            if "master_link_status:up" not in info:
                return False
            for port in self.sentinel_ports:
                state = dict(_pairs(redis_command(port, "SENTINEL", "MASTER", MASTER)))
                if state.get("num-slaves") != "1" or state.get("num-other-sentinels") != "2":
                    return False
        except (OSError, RuntimeError):
            return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the first Sentinel that answers names it."""
        for port in self.sentinel_ports:
            try:
                reply = redis_command(port, "SENTINEL", "get-master-addr-by-name", MASTER)
            except (OSError, RuntimeError):
                continue
            if reply:
                return int(reply[1])
        return None

    def kill(self, port: int) -> None:
        """SIGKILL the server on ``port`` and reap it."""
        process = self._processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def close(self) -> None:
        """Stop every process still running; remove the scratch directory."""
        for process in self._processes.values():
            process.terminate()
        for process in self._processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        shutil.rmtree(self.directory, ignore_errors=True)


def _pairs(reply: list[str]) -> list[tuple[str, str]]:
    return list(zip(reply[::2], reply[1::2], strict=True))


async def sentinel_failover(
    workdir: Path, duration_after: float = 12.0, interval: float = 0.1
) -> dict[str, Any]:
    """
    One Warden node (defaults, but ``[state] url`` through the Sentinels) and a
    phone registering every ``interval`` s; the primary is SIGKILLed 2 s in and
    the phone goes on for ``duration_after`` s.

    Returns a dict: ``registered_before`` (REGISTERs before the kill all
    succeeded), ``promoted_s`` (kill to a Sentinel naming the replica),
    ``first_success_s`` (kill to the end of the first successful REGISTER after
    it), ``recovery_s`` (kill to the start of the first REGISTER after the last
    failed one), ``failed`` and ``attempted`` (REGISTERs after the kill), the
    failures by status (``"timeout"`` for no answer), and whether the binding
    is in the new master.
    """
    group = SentinelGroup()
    warden: WardenProcess | None = None
    client: SipUdpClient | None = None
    try:
        await group.start()
        warden = WardenProcess(
            workdir,
            settings={"state": {"url": group.url}, "cluster": {"name": "sentinel"}},
        )
        await warden.start()
        users = await provision(warden.config_path, 1)
        number = users.numbers[0]
        client = await SipUdpClient.open(warden.address)
        contact = f"<sip:{number}@{LOCALHOST}:{client.local_port}>"

        async def register() -> str:
            assert client is not None
            try:
                response = await client.register(
                    number, user_password(number), contact=contact, timeout=2.0
                )
            except Exception:
                return "timeout"
            return str(response.status)

        before = []
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            before.append(await register())
            await pause(interval)
        killed = time.monotonic()
        group.kill(group.primary_port)
        results: list[tuple[float, float, str]] = []
        promoted: float | None = None
        while time.monotonic() - killed < duration_after:
            begin = time.monotonic()
            status = await register()
            results.append((begin - killed, time.monotonic() - killed, status))
            if promoted is None and group.master_port() == group.replica_port:
                promoted = time.monotonic() - killed
            await pause(interval)
        failures: dict[str, int] = {}
        for _, _, status in results:
            if status != "200":
                failures[status] = failures.get(status, 0) + 1
        first_success = next((end for _, end, s in results if s == "200"), None)
        last_failed = max((i for i, (_, _, s) in enumerate(results) if s != "200"), default=-1)
        recovery = results[last_failed + 1][0] if last_failed + 1 < len(results) else None
        bound = redis_command(group.replica_port, "EXISTS", f"warden:sentinel:loc:{number}")
        return {
            "registered_before": bool(before) and all(s == "200" for s in before),
            "promoted_s": promoted,
            "first_success_s": first_success,
            "recovery_s": recovery if last_failed >= 0 else 0.0,
            "attempted": len(results),
            "failed": sum(failures.values()),
            "failures": failures,
            "bound_in_new_master": bound == 1,
            "warden_running": warden.running,
            "load": os.getloadavg()[0],
        }
    finally:
        if client is not None:
            await client.close()
        if warden is not None:
            await warden.cleanup()
        group.close()
