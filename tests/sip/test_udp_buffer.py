"""The SIP UDP socket's receive buffer and the kernel's drop count (warden.netutil,
warden.sip.transport.SipDatagramProtocol), on real sockets without a reactor."""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from warden.netutil import read_udp_tables, set_receive_buffer, udp_drops
from warden.sip import metrics
from warden.sip.transport import SipDatagramProtocol, TransportHub

TABLE = "\n".join(
    [
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
        "   uid  timeout inode ref pointer drops",
        " 9298: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000"
        "     0        0 26293 2 00000000a3dc7d0d 17",
        " 9300: 00000000:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000"
        "     0        0 26301 2 00000000a3dc7d0e 0",
    ]
)


class FakeUdpPort:
    """The part of twisted.internet.udp.Port that the protocol uses."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


class DropTableTests(SynchronousTestCase):
    """Reading the drops column of /proc/net/udp."""

    def test_by_inode(self) -> None:
        """The row whose inode matches gives its drops; others are ignored."""
        self.assertEqual(udp_drops(26293, [TABLE]), 17)
        self.assertEqual(udp_drops(26301, ["", TABLE]), 0)

    def test_unknown(self) -> None:
        """An inode no table lists, or unreadable tables, give None."""
        self.assertIsNone(udp_drops(1, [TABLE]))
        self.assertIsNone(udp_drops(26293, ["", "garbage\n1 2 3"]))


class SocketTests(SynchronousTestCase):
    """A real UDP socket on 127.0.0.1."""

    def setUp(self) -> None:
        if not os.path.exists("/proc/net/udp"):
            self.skipTest("no /proc/net/udp on this system")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sock.close)
        self.sock.bind(("127.0.0.1", 0))
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sender.close)

    def protocol(self, receive_buffer: int) -> tuple[SipDatagramProtocol, list[dict[str, Any]]]:
        events: list[dict[str, Any]] = []
        proto = SipDatagramProtocol(
            TransportHub(Clock(), 65535, 600.0), receive_buffer=receive_buffer
        )
        proto.log = Logger(observer=events.append)
        proto.transport = FakeUdpPort(self.sock)  # type: ignore[assignment]
        proto.startProtocol()
        return proto, events

    def test_buffer_granted(self) -> None:
        """The buffer asked for is granted (Linux reports double the usable size)."""
        granted = set_receive_buffer(self.sock, 1 << 20)
        self.assertGreaterEqual(granted, 1 << 20)

    def test_drops_counted_and_logged(self) -> None:
        """Datagrams the kernel drops on a full buffer are counted once each, in the
        metric and in one warning per check; a check with no new drops is silent."""
        proto, events = self.protocol(receive_buffer=0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        before = metrics.UDP_DROPS._value.get()
        self.assertEqual(proto.check_drops(), 0)
        for _ in range(200):
            self.sender.sendto(b"x" * 1000, self.sock.getsockname())
        dropped = proto.check_drops()
        self.assertGreater(dropped, 0)
        inode = os.fstat(self.sock.fileno()).st_ino
        self.assertEqual(dropped, udp_drops(inode, read_udp_tables()))
        self.assertEqual(metrics.UDP_DROPS._value.get() - before, dropped)
        self.assertEqual(proto.check_drops(), 0)
        warnings = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["count"], dropped)
