"""
Fake UDP sockets for the media relay, and builders for RTP, RTCP and RFC 4733
packets.

``FakeNetwork.listen_udp`` stands in for ``reactor.listenUDP``: it records every
bound port and its protocol, can refuse chosen ports or fail on demand, lets a
test deliver datagrams to a port and read what the relay wrote from it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

Address = tuple[str, int]


@implementer(IListeningPort, IUDPTransport)
class FakeUdpPort:
    """A bound UDP port: records datagrams written, closes on stopListening."""

    def __init__(
        self, network: FakeNetwork, port: int, protocol: DatagramProtocol, interface: str
    ) -> None:
        self.network = network
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.written: list[tuple[bytes, Address]] = []
        self.closed = False
        self.fail_writes = False

    def startListening(self) -> None:
        """Bound already by FakeNetwork.listen_udp."""

    def write(self, datagram: bytes, addr: Address | None = None) -> None:
        """Record ``datagram`` as sent to ``addr``; OSError when made to fail."""
        assert not self.closed, "write on a closed port"
        assert addr is not None
        if self.fail_writes:
            raise OSError(101, "Network is unreachable")
        self.written.append((datagram, addr))

    def stopListening(self) -> None:
        """Close at once (the real port closes on the next reactor turn)."""
        assert not self.closed, "port closed twice"
        self.closed = True
        del self.network.ports[self.port]
        self.protocol.doStop()
        if self.network.fail_close:
            raise OSError(9, "Bad file descriptor")

    def getHost(self) -> IPv4Address | IPv6Address:
        """The bound address."""
        if ":" in self.interface:
            return IPv6Address("UDP", self.interface, self.port)
        return IPv4Address("UDP", self.interface, self.port)

    def connect(self, host: str, port: int) -> None:
        """Connected UDP is not used by the relay."""
        raise NotImplementedError("the relay never connects its sockets")

    def setBroadcastAllowed(self, enabled: bool) -> None:
        """Broadcast is not used by the relay."""

    def getBroadcastAllowed(self) -> bool:
        """Never."""
        return False

    def take(self) -> list[tuple[bytes, Address]]:
        """The datagrams written since the last take()."""
        written, self.written = self.written, []
        return written


class FakeNetwork:
    """
    ``listen_udp`` for tests.

    Attributes:
        ports: bound ports by number.
        refused: port numbers whose bind fails with CannotListenError.
        fail_bind: when set, called with each port number before binding; may raise.
        fail_close: stopListening raises OSError (after closing).
        binds: how many binds succeeded.
    """

    def __init__(self) -> None:
        self.ports: dict[int, FakeUdpPort] = {}
        self.refused: set[int] = set()
        self.fail_bind: Callable[[int], None] | None = None
        self.fail_close = False
        self.binds = 0

    def listen_udp(
        self, port: int, protocol: DatagramProtocol, interface: str = ""
    ) -> FakeUdpPort:
        """Bind ``port`` like reactor.listenUDP (CannotListenError when taken or refused)."""
        if self.fail_bind is not None:
            self.fail_bind(port)
        if port in self.refused or port in self.ports:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        bound = FakeUdpPort(self, port, protocol, interface)
        protocol.makeConnection(bound)
        self.ports[port] = bound
        self.binds += 1
        return bound

    def deliver(self, port: int, datagram: bytes, source: Address) -> None:
        """A datagram from ``source`` arrives at ``port`` (which must be bound)."""
        self.ports[port].protocol.datagramReceived(datagram, source)

    def sent_from(self, port: int) -> list[tuple[bytes, Address]]:
        """Datagrams written from ``port`` since the last call."""
        return self.ports[port].take()


def rtp(
    seq: int,
    timestamp: int = 0,
    ssrc: int = 0x11223344,
    payload_type: int = 0,
    payload: bytes = b"\xff" * 160,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: bytes | None = None,
    padding: int = 0,
) -> bytes:
    """An RTP packet (RFC 3550 §5.1)."""
    first = 0x80 | len(csrcs) | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    second = (0x80 if marker else 0) | payload_type
    data = struct.pack("!BBHII", first, second, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
    data += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension is not None:
        data += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    data += payload
    if padding:
        data += b"\x00" * (padding - 1) + bytes([padding])
    return data


def rtcp_rr(ssrc: int = 0x11223344, packet_type: int = 201) -> bytes:
    """An RTCP receiver report with no report blocks (RFC 3550 §6.4.2)."""
    return struct.pack("!BBHI", 0x80, packet_type, 1, ssrc)


def dtmf(
    seq: int,
    timestamp: int,
    event: int = 5,
    end: bool = False,
    duration: int = 160,
    payload_type: int = 101,
    ssrc: int = 0x11223344,
) -> bytes:
    """An RFC 4733 telephone-event packet."""
    payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
    return rtp(seq, timestamp, ssrc, payload_type, payload)


def sdp_body(
    host: str = "192.0.2.10",
    port: int = 4000,
    version: int = 1,
    direction: str | None = None,
    rtcp: str | None = None,
    user: str = "phone",
) -> bytes:
    """
    A phone's SDP: PCMU, PCMA and telephone-event 101 at ``host``:``port``.

    ``version`` is the o= version (a new one for each changed description),
    ``direction`` adds ``a=<direction>``, ``rtcp`` adds ``a=rtcp:<rtcp>``.
    """
    addrtype = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o={user} 1000 {version} IN {addrtype} {host}",
        "s=-",
        f"c=IN {addrtype} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
    ]
    if rtcp is not None:
        lines.append(f"a=rtcp:{rtcp}")
    if direction is not None:
        lines.append(f"a={direction}")
    return "".join(line + "\r\n" for line in lines).encode()
