"""
A whole Warden SIP stack for unit tests, built by the composition root
(L{warden.server.build_server}) with the SIP plugin, as ``twistd warden`` builds
it, on in-memory stores, a media relay on a fake network and a
L{MemoryWardenReactor}: bytes in through the UDP protocol or a TCP protocol on
a StringTransport, responses out as parsed messages.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import FakeDatagramTransport, StringTransport

from warden.config import (
    CallsConfig,
    DialplanConfig,
    RegistrarConfig,
    ServerConfig,
    SipConfig,
    WardenConfig,
)
from warden.interfaces import ICallHook, ILocalApplication, IMediaRelay
from warden.plugins.sip import plugin as sip_plugin
from warden.rtp.relay import MediaRelay
from warden.server import StoreParts, WardenService, build_server
from warden.sip.dialplan import Rule
from warden.sip.hooks import CallHooks
from warden.sip.message import Message
from warden.sip.parser import StreamFramer, parse_datagram
from warden.sip.service import SipService
from warden.sip.transport import (
    DEFAULT_TCP_CONNECTIONS_PER_IP,
    DEFAULT_TCP_MESSAGE_TIMEOUT,
    SipStreamFactory,
    SipStreamProtocol,
)
from warden.store.credentials import make_extension
from warden.testing.memory import (
    MemoryCallRecordStore,
    MemoryDirectory,
    MemoryLiveCalls,
    MemoryLocationService,
)
from warden.testing.reactor import MemoryWardenReactor

REALM = "pbx.test"
#: Where the stack's media relay listens (on the reactor's fake network).
MEDIA_ADDRESS = "192.0.2.1"
MEDIA_PORTS = (30000, 30100)


def stack_config(
    local_domains: frozenset[str],
    interface: str = "",
    port: int = 5060,
    *,
    max_message_bytes: int = 65535,
    tcp_idle_timeout: float = 600.0,
    tcp_message_timeout: float = DEFAULT_TCP_MESSAGE_TIMEOUT,
    tcp_connections_per_ip: int = DEFAULT_TCP_CONNECTIONS_PER_IP,
    ring_timeout: float = 30.0,
    max_calls: int = 0,
    dialplan: tuple[Rule, ...] = (),
) -> WardenConfig:
    """
    The configuration of a test stack: realm L{REALM}, node ``test``, UDP and
    TCP, MD5 and SHA-256 digests; the rest as Warden's defaults.
    """
    return WardenConfig(
        server=ServerConfig(node_id="test", realm=REALM, domains=tuple(sorted(local_domains))),
        sip=SipConfig(
            interface=interface,
            port=port,
            transports=("udp", "tcp"),
            max_message_bytes=max_message_bytes,
            tcp_idle_timeout=tcp_idle_timeout,
            tcp_message_timeout=tcp_message_timeout,
            tcp_connections_per_ip=tcp_connections_per_ip,
        ),
        registrar=RegistrarConfig(
            digest_algorithms=("MD5", "SHA-256"), auth_fail_extension_limit=20
        ),
        calls=CallsConfig(ring_timeout=ring_timeout, max_calls_per_extension=max_calls),
        dialplan=DialplanConfig(rules=dialplan),
    )


def sip_service(root: WardenService) -> SipService:
    """The SIP service among the services ``root`` runs."""
    for child in root:
        if isinstance(child, SipService):
            return child
    raise LookupError("no SIP service was built")


class FakeSipStack:
    """
    Warden as ``twistd warden`` builds it with the SIP plugin
    (L{warden.sip.service.SipService}: transport hub, transaction layer,
    dispatcher, registrar, calls, cluster hop), over memory stores, a
    MemoryWardenReactor and a fake UDP socket; extension 1001 (password
    ``secret1001``) exists.

    Args:
        local_domains: hosts the dispatcher treats as this PBX (with this
            host's own names and addresses, as in production).
        interface, port: the SIP address.
        config: the configuration (None: L{stack_config} of the arguments above).
        media: the media relay (None: one on the reactor's fake network, at
            L{MEDIA_ADDRESS}).
        reactor: the reactor (None: a new L{MemoryWardenReactor} at
            1,700,000,000 s); ``media`` may be built on it beforehand.
        hooks: the call hooks, in order (a sequence, or a L{CallHooks}).
        applications: the local applications (L{warden.sip.local}); their
            endpoints bind on the reactor's fake network.
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
        *,
        config: WardenConfig | None = None,
        media: IMediaRelay | None = None,
        hooks: Sequence[ICallHook] | CallHooks = (),
        applications: Sequence[ILocalApplication] = (),
        media_timeout: float = 60.0,
        reactor: MemoryWardenReactor | None = None,
    ) -> None:
        if reactor is None:
            reactor = MemoryWardenReactor()
            reactor.advance(1_700_000_000)
        self.clock = reactor
        self.network = self.clock.network
        self.directory = MemoryDirectory([make_extension("1001", "Test", REALM, "secret1001")])
        self.location = MemoryLocationService()
        self.records = MemoryCallRecordStore()
        self.live = MemoryLiveCalls()
        #: Ports the local applications' endpoints bound (50000 up).
        self.endpoint_ports: list[int] = []
        if config is None:
            config = stack_config(
                local_domains,
                interface,
                port,
                max_message_bytes=max_message_bytes,
                tcp_idle_timeout=tcp_idle_timeout,
                tcp_message_timeout=tcp_message_timeout,
                tcp_connections_per_ip=tcp_connections_per_ip,
            )
        if media is None:
            media = MediaRelay(
                self.clock,
                self.network.listen_udp,
                MEDIA_ADDRESS,
                MEDIA_PORTS,
                media_timeout=media_timeout,
            )
        self.media = media
        self.root = build_server(
            self.clock,
            config,
            [sip_plugin],
            store=StoreParts(self.directory, self.location, self.records, self.live),
            media=media,
            features=[*(hooks.hooks if isinstance(hooks, CallHooks) else hooks), *applications],
            listen_udp=self._listen_endpoint,
        )
        self.sip = sip_service(self.root)
        self.settings = self.sip.settings
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

    def _listen_endpoint(
        self, port: int, protocol: DatagramProtocol, interface: str
    ) -> IListeningPort:
        """Bind an endpoint's socket on the fake network: port 0 is the next from 50000."""
        chosen = port or 50000 + 2 * len(self.endpoint_ports)
        self.endpoint_ports.append(chosen)
        return self.network.listen_udp(chosen, protocol, interface)

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
