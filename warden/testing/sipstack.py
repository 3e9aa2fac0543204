"""
A whole Warden SIP stack, built as production builds it, on fake transports and a
MemoryReactorClock, for unit tests: bytes
in through the UDP protocol or a TCP protocol on a StringTransport, responses
out as parsed messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import FakeDatagramTransport, MemoryReactorClock, StringTransport

from warden.sip.message import Message
from warden.sip.parser import StreamFramer, parse_datagram
from warden.sip.registrar import ExpiryPolicy
from warden.sip.service import CallServices, SipService, SipSettings
from warden.sip.timers import TimerSettings
from warden.sip.transport import (
    DEFAULT_TCP_CONNECTIONS_PER_IP,
    DEFAULT_TCP_MESSAGE_TIMEOUT,
    SipStreamFactory,
    SipStreamProtocol,
)
from warden.store.credentials import make_extension
from warden.testing.memory import MemoryDirectory, MemoryLocationService

REALM = "pbx.test"


class FakeSipStack:
    """
    The SIP service as ``twistd warden`` builds it (L{warden.sip.service.SipService}:
    transport hub, transaction layer, dispatcher, registrar, cluster hop), over
    memory stores, a MemoryReactorClock and a fake UDP socket.

    ``local_domains``: hosts the dispatcher treats as this PBX; ``interface``
    and ``port``: the SIP address; ``calls``: builds what calls need from the
    clock (None: a registrar only).
    """

    def __init__(
        self,
        local_domains: frozenset[str] = frozenset({REALM, "127.0.0.1"}),
        max_message_bytes: int = 65535,
        tcp_idle_timeout: float = 600.0,
        tcp_message_timeout: float = DEFAULT_TCP_MESSAGE_TIMEOUT,
        tcp_connections_per_ip: int = DEFAULT_TCP_CONNECTIONS_PER_IP,
        interface: str = "",
        port: int = 5060,
        calls: Callable[[MemoryReactorClock], CallServices] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(1_700_000_000)
        self.directory = MemoryDirectory([make_extension("1001", "Test", REALM, "secret1001")])
        self.location = MemoryLocationService()
        values: dict[str, Any] = {
            "interface": interface, "port": port, "transports": ("udp", "tcp"),
            "max_message_bytes": max_message_bytes, "tcp_idle_timeout": tcp_idle_timeout,
            "tcp_message_timeout": tcp_message_timeout,
            "tcp_connections_per_ip": tcp_connections_per_ip, "timers": TimerSettings(),
            "realm": REALM, "node_id": "test", "algorithms": ("MD5", "SHA-256"),
            "expiry": ExpiryPolicy(), "nonce_lifetime": 300.0, "auth_fail_limit": 20,
            "auth_fail_window": 60.0, "auth_block_seconds": 300.0,
            "auth_fail_extension_limit": 20,
        }  # fmt: skip
        self.settings = SipSettings(**{**values, **(settings or {})})
        self.sip = SipService(
            self.clock, self.settings, self.directory, self.location,
            local_domains.__contains__, calls(self.clock) if calls is not None else None,
        )  # fmt: skip
        self.hub = self.sip.hub
        self.dispatcher = self.sip.dispatcher
        self.transactions = self.sip.transactions
        self.throttle = self.sip.throttle
        self.authenticator = self.sip.authenticator
        self.registrar = self.sip.registrar
        # The service's own UDP listener, on a fake socket.
        self.udp = self.hub.udp[0]
        self.udp_transport = FakeDatagramTransport()
        self.udp.makeConnection(self.udp_transport)

    def send_udp(
        self, data: bytes, source: tuple[str, int] = ("192.0.2.10", 5062)
    ) -> list[Message]:
        """Deliver a datagram; return the messages Warden sent in answer."""
        before = len(self.udp_transport.written)
        self.udp.datagramReceived(data, source)
        return [parse_datagram(packet) for packet, _ in self.udp_transport.written[before:]]

    def sent_udp(self) -> list[tuple[bytes, object]]:
        """Every (datagram, address) sent so far."""
        return list(self.udp_transport.written)

    def connect_tcp(self, peer: tuple[str, int] = ("192.0.2.20", 40000)) -> TcpPeer:
        """
        Open a fake TCP connection to Warden, through the listener's factory.

        Raises ConnectionRefusedError when the factory refuses it (per-IP limit).
        """
        address = IPv4Address("TCP", *peer)
        protocol = SipStreamFactory(self.hub).buildProtocol(address)
        if protocol is None:
            raise ConnectionRefusedError(f"{peer[0]} holds sip.tcp_connections_per_ip")
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return TcpPeer(protocol, transport)


class TcpPeer:
    """The remote end of a fake TCP connection."""

    def __init__(self, protocol: SipStreamProtocol, transport: StringTransport) -> None:
        self.protocol = protocol
        self.transport = transport
        self._framer = StreamFramer()

    def send(self, data: bytes) -> list[Message]:
        """Write bytes to Warden; return complete messages it wrote back since."""
        self.protocol.dataReceived(data)
        return self.received()

    def received(self) -> list[Message]:
        """Messages Warden wrote since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return self._framer.feed(data)

    @property
    def closed(self) -> bool:
        """True once Warden asked to close the connection."""
        return bool(self.transport.disconnecting)
