"""
Private networks for the high-availability tests: Linux network namespaces
joined by veth pairs to one bridge, created and removed by the test that uses
them (``ip netns``, ``ip link``; root only).

Layout of a L{Lan} named ``wha-<hex>``:

- namespace ``<name>-lan`` holds the bridge ``br0`` with ``10.77.0.1/24``: the
  shared servers (PostgreSQL, Redis, Kamailio) and the phones live here;
- each L{Lan.add_host} adds namespace ``<name>-<label>`` whose ``eth0`` (a veth
  whose peer is a port of ``br0``) has ``10.77.0.<n>/24``.

Every namespace is its own network stack, so the fixed addresses never meet the
machine's network or another run's; the names are unique per run. Processes are
started in a namespace with L{Lan.prefix} (``ip netns exec NAME``), and this
process opens a socket in one with L{Lan.inside}, which switches only the
calling thread (setns(2)) for as long as the socket takes to create.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

from twisted.trial import unittest

SUBNET = "10.77.0"
LAN_ADDRESS = f"{SUBNET}.1"
_CLONE_NEWNET = 0x40000000
_IP_TIMEOUT = 10.0


def require_root(testcase: unittest.TestCase) -> None:
    """
    Network namespaces need root and ``ip``: skip without them, except under
    ``CI=true``, where it is a failure (CI must run every integration test).
    """
    problem = ""
    if os.geteuid() != 0:
        problem = "network namespaces need root"
    elif shutil.which("ip") is None:
        problem = "ip is not installed (apt-get install iproute2)"
    if not problem:
        return
    if os.environ.get("CI") == "true":
        testcase.fail(f"{problem}, and CI=true requires these tests to run")
    raise unittest.SkipTest(problem)


def ip(*args: str) -> str:
    """Run ``ip ARGS``; its output. A failure raises with ip's message."""
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _setns(fd: int) -> None:
    libc: Any = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


class Lan:
    """
    A bridge in its own namespace and the hosts attached to it (see the module
    docstring). L{create} builds it; L{destroy} kills what still runs in its
    namespaces and removes them.
    """

    def __init__(self) -> None:
        self.name = f"wha-{uuid.uuid4().hex[:8]}"
        self.lan = f"{self.name}-lan"
        self.hosts: dict[str, str] = {}
        self._namespaces: list[str] = []

    def namespace(self, label: str) -> str:
        """The namespace of host ``label`` (``lan`` for the bridge's own)."""
        return self.lan if label == "lan" else f"{self.name}-{label}"

    def prefix(self, label: str) -> list[str]:
        """The command prefix that runs a program in ``label``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(label)]

    @staticmethod
    def _port(label: str) -> str:
        """The bridge port (LAN side of the veth) of host ``label``."""
        return f"p{label}"[:15]

    def _add_namespace(self, namespace: str) -> None:
        ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        ip("-n", namespace, "link", "set", "lo", "up")

    def create(self) -> None:
        """The LAN namespace with its bridge and address."""
        self._add_namespace(self.lan)
        ip("-n", self.lan, "link", "add", "br0", "type", "bridge")
        ip("-n", self.lan, "addr", "add", f"{LAN_ADDRESS}/24", "dev", "br0")
        ip("-n", self.lan, "link", "set", "br0", "up")

    def add_host(self, label: str, number: int) -> str:
        """
        Namespace for host ``label`` on the bridge with address ``10.77.0.<number>``,
        allowed to bind addresses it does not hold yet (a virtual IP it may take
        over, ``net.ipv4.ip_nonlocal_bind``); returns the address.
        """
        namespace = self.namespace(label)
        self._add_namespace(namespace)
        port = self._port(label)
        ip("-n", self.lan, "link", "add", port, "type", "veth", "peer", "name", "eth0",
           "netns", namespace)  # fmt: skip
        ip("-n", self.lan, "link", "set", port, "master", "br0", "up")
        address = f"{SUBNET}.{number}"
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        subprocess.run(
            [*self.prefix(label), "sysctl", "-q", "-w", "net.ipv4.ip_nonlocal_bind=1"],
            check=True,
            timeout=_IP_TIMEOUT,
        )
        self.hosts[label] = address
        return address

    def unplug(self, label: str) -> None:
        """Take ``label``'s link down on the bridge side (the host drops off the LAN)."""
        ip("-n", self.lan, "link", "set", self._port(label), "down")

    def addresses(self, label: str) -> list[str]:
        """The IPv4 addresses on ``label``'s ``eth0`` right now."""
        out = ip("-n", self.namespace(label), "-4", "-o", "addr", "show", "dev", "eth0")
        return [line.split()[3].split("/")[0] for line in out.splitlines()]

    @contextlib.contextmanager
    def inside(self, label: str) -> Iterator[None]:
        """Sockets created by this thread in the block belong to ``label``'s namespace."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.namespace(label)}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)

    def destroy(self) -> None:
        """Kill every process left in the namespaces, then remove them."""
        for namespace in reversed(self._namespaces):
            with contextlib.suppress(RuntimeError):
                for pid in ip("netns", "pids", namespace).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(RuntimeError):
                ip("netns", "delete", namespace)
        self._namespaces.clear()
