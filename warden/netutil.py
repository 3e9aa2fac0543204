"""
This host's own names and addresses, so that requests addressed to any of them
count as local (alongside the configured domains).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable


def _fib_trie_local_ipv4(text: str) -> set[str]:
    addresses: set[str] = set()
    last = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("|--", "+--")):
            last = stripped[3:].split()[0]
        elif stripped == "/32 host LOCAL" and last:
            addresses.add(last)
    return addresses


def _if_inet6(text: str) -> set[str]:
    out: set[str] = set()
    for line in text.splitlines():
        raw = line.split()[0] if line.split() else ""
        if len(raw) == 32:
            groups = [raw[i : i + 4] for i in range(0, 32, 4)]
            packed = bytes.fromhex("".join(groups))
            out.add(socket.inet_ntop(socket.AF_INET6, packed))
    return out


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def local_addresses() -> set[str]:
    """Every IP address of this host (IPv4 from the FIB, IPv6 from if_inet6)."""
    addresses = {"127.0.0.1", "::1"}
    addresses |= _fib_trie_local_ipv4(_read("/proc/net/fib_trie"))
    addresses |= _if_inet6(_read("/proc/net/if_inet6"))
    try:
        addresses |= set(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return addresses


def local_names(domains: Iterable[str], extra_addresses: Iterable[str] = ()) -> frozenset[str]:
    """Lower-cased names and addresses that are this PBX (no brackets, no ports)."""
    names = {d.lower().rstrip(".") for d in domains}
    hostname = socket.gethostname()
    names |= {hostname.lower(), socket.getfqdn().lower(), "localhost"}
    names |= local_addresses()
    names |= {a for a in extra_addresses if a}
    return frozenset(names)


def host_matcher(names: frozenset[str]) -> HostMatcher:
    """A predicate ``(host) -> bool`` over URI hosts (IPv6 may be bracketed)."""
    return HostMatcher(names)


class HostMatcher:
    """Callable telling whether a URI host is one of ``names``."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def __call__(self, host: str) -> bool:
        if host.startswith("["):
            host = host[1:-1]
        return host.lower().rstrip(".") in self.names


def udp_drops(inode: int, tables: Iterable[str]) -> int | None:
    """
    The kernel's count of datagrams dropped for the UDP socket ``inode`` (the
    ``drops`` column of ``/proc/net/udp`` and ``udp6``), or None when no table
    lists it.

    Args:
        inode: the socket's inode (``os.fstat(sock.fileno()).st_ino``).
        tables: the texts of /proc/net/udp and /proc/net/udp6.
    """
    wanted = str(inode)
    for text in tables:
        lines = text.splitlines()
        if not lines:
            continue
        header = lines[0].split()
        try:
            inode_at = header.index("inode")
        except ValueError:
            continue
        # The header names "tx_queue rx_queue" and "tr tm->when" as four columns;
        # rows write each pair as one ("00000000:00000000"), so count from the end.
        from_end = len(header) - inode_at
        for line in lines[1:]:
            fields = line.split()
            if len(fields) >= from_end and fields[-from_end] == wanted:
                try:
                    return int(fields[-1])
                except ValueError:
                    return None
    return None


def read_udp_tables() -> list[str]:
    """The texts of /proc/net/udp and /proc/net/udp6 (empty where unreadable)."""
    return [_read("/proc/net/udp"), _read("/proc/net/udp6")]


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """
    Ask for a ``size``-byte receive buffer on ``sock`` (beyond net.core.rmem_max
    when the process may: SO_RCVBUFFORCE needs CAP_NET_ADMIN) and return the size
    the kernel granted.
    """
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            force = None
    if force is None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:
            pass
    granted: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return granted
