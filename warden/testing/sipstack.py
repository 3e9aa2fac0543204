"""
A whole Warden SIP stack on fake transports and a Clock, for unit tests: bytes
in through the UDP protocol or a TCP protocol on a StringTransport, responses
out as parsed messages.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport, StringTransport

from warden.sip.auth import AuthThrottle, NonceManager
from warden.sip.authenticator import Authenticator
from warden.sip.dispatch import RequestDispatcher
from warden.sip.message import Message
from warden.sip.parser import StreamFramer, parse_datagram
from warden.sip.registrar import ExpiryPolicy, Registrar
from warden.sip.timers import TimerSettings
from warden.sip.transaction import TransactionLayer
from warden.sip.transport import (
    DEFAULT_TCP_CONNECTIONS_PER_IP,
    DEFAULT_TCP_MESSAGE_TIMEOUT,
    SipDatagramProtocol,
    SipStreamFactory,
    SipStreamProtocol,
    TransportHub,
)
from warden.store.credentials import make_extension
from warden.testing.memory import MemoryDirectory, MemoryLocationService

REALM = "pbx.test"


class FakeSipStack:
    """
    Transport hub, transaction layer, request dispatcher and registrar over memory stores.

    ``local_domains``: hosts the dispatcher treats as this PBX.
    """

    def __init__(
        self,
        local_domains: frozenset[str] = frozenset({REALM, "127.0.0.1"}),
        max_message_bytes: int = 65535,
        tcp_idle_timeout: float = 600.0,
        tcp_message_timeout: float = DEFAULT_TCP_MESSAGE_TIMEOUT,
        tcp_connections_per_ip: int = DEFAULT_TCP_CONNECTIONS_PER_IP,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.directory = MemoryDirectory([make_extension("1001", "Test", REALM, "secret1001")])
        self.location = MemoryLocationService()
        self.hub = TransportHub(
            self.clock, max_message_bytes, tcp_idle_timeout, tcp_message_timeout,
            tcp_connections_per_ip,
        )  # fmt: skip
        is_local = local_domains.__contains__
        self.dispatcher = RequestDispatcher(is_local)
        self.transactions = TransactionLayer(
            self.clock, TimerSettings(), self.hub.send, self.dispatcher
        )
        self.hub.receiver = self.transactions.receive
        self.throttle = AuthThrottle(self.clock, 20, 60.0, 300.0)
        self.authenticator = Authenticator(
            self.clock, self.directory, NonceManager(self.clock, 300.0), self.throttle, REALM,
            ("MD5", "SHA-256"),
        )  # fmt: skip
        self.registrar = Registrar(
            self.clock, self.authenticator, self.location, ExpiryPolicy(), is_local, "test"
        )
        self.dispatcher.register_handler("REGISTER", self.registrar.handle)
        self.udp = SipDatagramProtocol(self.hub)
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
