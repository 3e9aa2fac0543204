"""
The SIP service: listeners, transaction layer, request dispatcher and registrar, wired
together from explicit dependencies by ``warden.tap.makeService``.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.application import internet, service
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from warden.interfaces import (
    IAuthFailureCounter,
    ICallCounters,
    ICallRecordStore,
    IDirectory,
    ILiveCalls,
    ILocalApplication,
    ILocationService,
    IMediaRelay,
)
from warden.reuseport import ReusePortService
from warden.rtp.endpoint import ListenUDP
from warden.rtp.udp import listen_udp
from warden.sip import metrics
from warden.sip.addressing import Addressing
from warden.sip.auth import AuthThrottle, NonceManager
from warden.sip.authenticator import Authenticator
from warden.sip.b2bua import CallController, CallSettings
from warden.sip.dialplan import DialplanRouter, Rule
from warden.sip.dispatch import RequestDispatcher
from warden.sip.hooks import CallHooks
from warden.sip.hop import NodeHop, TokenLifetimes
from warden.sip.local import LocalApplications
from warden.sip.node_streams import NodeStreams, udp_limit
from warden.sip.qualify import Qualifier
from warden.sip.registrar import ExpiryPolicy, Registrar
from warden.sip.routing import ExtensionRouter
from warden.sip.timers import TimerSettings
from warden.sip.tls import SipTlsService, TlsSettings
from warden.sip.transaction import TransactionLayer
from warden.sip.transport import (
    DEFAULT_TCP_CONNECTIONS_PER_IP,
    DEFAULT_TCP_MESSAGE_TIMEOUT,
    SipDatagramProtocol,
    SipStreamFactory,
    TransportHub,
)

HOUSEKEEPING_INTERVAL = 10.0


@attrs.frozen
class SipSettings:
    """Everything the SIP service needs from the configuration."""

    interface: str
    port: int
    transports: tuple[str, ...]
    max_message_bytes: int
    tcp_idle_timeout: float
    timers: TimerSettings
    realm: str
    node_id: str
    algorithms: tuple[str, ...]
    expiry: ExpiryPolicy
    nonce_lifetime: float
    auth_fail_limit: int
    auth_fail_window: float
    auth_block_seconds: float
    auth_fail_extension_limit: int = 10
    accept_rfc2069: bool = False
    server_header: str = "Warden"
    #: ``[sip] nat`` (warden.sip.addressing.NAT_MODES).
    nat: str = "auto"
    ring_timeout: float = 30.0
    max_calls_per_extension: int = 0
    qualify_interval: float = 30.0
    udp_receive_buffer: int = 8 * 1024 * 1024
    tcp_message_timeout: float = DEFAULT_TCP_MESSAGE_TIMEOUT
    tcp_connections_per_ip: int = DEFAULT_TCP_CONNECTIONS_PER_IP
    dialplan: tuple[Rule, ...] = ()
    #: Seconds a cluster Record-Route token stays valid ([cluster] dialog_token_lifetime).
    dialog_token_lifetime: float = 86400.0
    #: ``[sip] tls_port`` and ``[tls]``, for the TLS listener (with "tls" in transports).
    tls_port: int = 5061
    tls: TlsSettings = TlsSettings()
    #: ``[security] fips``: SHA-256 digest only, even for extensions that list MD5.
    fips: bool = False
    #: A SIP worker process (L{warden.workers}): ``port`` is shared with the
    #: other workers (``SO_REUSEPORT``, L{warden.reuseport}).
    reuse_port: bool = False
    #: The worker's own port (0: none): it sends from it and names it in Via,
    #: Contact and Record-Route, so a dialog's requests come back to it.
    worker_port: int = 0
    #: Every worker's own port (``worker_port`` among them): a response that
    #: reaches the shared port of the wrong worker goes on to the one its Via names.
    worker_ports: tuple[int, ...] = ()
    #: The worker's own TLS port (0: none), named in what it sends over TLS;
    #: ``tls_port`` is then shared with the other workers.
    worker_tls_port: int = 0

    @property
    def hop_tokens(self) -> TokenLifetimes:
        """
        Lifetimes of cluster flow tokens: an INVITE transaction rings for the ring
        timeout and then lasts Timer B at most (RFC 3261 §17.1.1.2).
        """
        return TokenLifetimes(self.ring_timeout + self.timers.timer_b, self.dialog_token_lifetime)


@attrs.frozen
class ClusterLink:
    """
    What makes the SIP service a cluster member (L{warden.cluster}).

    Attributes:
        auth_failures: counts authentication failures cluster-wide.
        connector: opens TCP to other nodes for large requests
            (L{warden.sip.node_streams}).
        path_mtu: ``[cluster] path_mtu`` (0: unknown).
        local_host: the address other nodes reach this one at ("" for any).
        live_nodes: fires with the live nodes' SIP addresses by node id.
    """

    auth_failures: IAuthFailureCounter
    connector: IReactorTCP
    path_mtu: int
    local_host: str
    live_nodes: Callable[[], Deferred[dict[str, str]]]


@attrs.frozen
class CallServices:
    """
    What calls need beyond SIP: the media relay, the call records, and the
    feature plugins' call hooks.
    """

    media: IMediaRelay
    records: ICallRecordStore | None = None
    live: ILiveCalls | None = None
    counters: ICallCounters | None = None
    hooks: CallHooks = attrs.field(factory=CallHooks)
    #: The local applications' providers (L{warden.sip.local}), and how their
    #: RTP endpoints bind (None: quiet sockets on the reactor, L{warden.rtp.udp}).
    applications: tuple[ILocalApplication, ...] = ()
    listen_udp: ListenUDP | None = None


def udp_server(
    port: int,
    protocol: SipDatagramProtocol,
    interface: str,
    max_message_bytes: int,
    reactor: object = None,
) -> internet.UDPServer:
    """
    The SIP UDP listener. Twisted reads at most 8,192 bytes of a datagram by
    default and drops the rest silently; this one reads one byte more than
    ``max_message_bytes``, so every datagram up to the limit arrives whole and a
    larger one is seen as too large (counted and dropped), never truncated.
    """
    return internet.UDPServer(  # type: ignore[no-untyped-call]
        port, protocol, interface=interface, maxPacketSize=max_message_bytes + 1, reactor=reactor
    )


class SipService(service.MultiService):
    """
    Runs the SIP stack.

    Args:
        clock: the reactor: every timer, and the listeners.
        settings: SIP settings.
        directory: extensions and credentials.
        location: registrar bindings.
        is_local_domain: whether a host is this PBX.
        call_services: what calls need (None: a registrar only).
        cluster: how this node is a cluster member (None: a single node).
        install_signal: installs the SIGHUP callback reloading the TLS certificate.
        exit: ends the process when a listener cannot start (None: stop the reactor).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        settings: SipSettings,
        directory: IDirectory,
        location: ILocationService,
        is_local_domain: Callable[[str], bool],
        call_services: CallServices | None = None,
        cluster: ClusterLink | None = None,
        install_signal: Callable[[Callable[[], None]], None] | None = None,
        exit: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._install_signal = install_signal
        self._exit = exit
        self.tls_listener: SipTlsService | None = None
        self.clock = clock
        self.settings = settings
        self.location = location
        self.hub = TransportHub(
            clock, settings.max_message_bytes, settings.tcp_idle_timeout,
            settings.tcp_message_timeout, settings.tcp_connections_per_ip,
        )  # fmt: skip
        self.dispatcher = RequestDispatcher(is_local_domain)
        self.dispatcher.server_header = self.hub.server_header = settings.server_header
        # The transaction layer counts nothing itself: its reports are bound here
        # to the SIP metrics (responses sent, transaction latency).
        self.transactions = TransactionLayer(
            clock,
            settings.timers,
            self.hub.send,
            self.dispatcher,
            metrics.TransactionMetrics(),
            send_data=self.hub.send_data,
        )
        # In a cluster, requests another node routes through this one to a phone
        # it holds, and their responses, are forwarded by the hop, which passes
        # everything else to the transactions; calls reach other nodes' phones
        # through it (ADR 0010).
        self.hop = NodeHop(
            settings.node_id, clock, settings.hop_tokens, self.hub.send, self.hub.connection_to,
            lambda flow: self.addressing.via_for(flow), self.transactions.receive,
            nat=settings.nat, server_header=settings.server_header,
            refresh_nodes=self._refresh_nodes if cluster is not None else None,
        )  # fmt: skip
        self.addressing = Addressing(
            settings.interface, self.bound_port, self.hub.connection_to, settings.nat,
            hop=self.hop if cluster is not None else None, tls_port=self.bound_tls_port,
        )  # fmt: skip
        self.cluster = cluster
        if cluster is None:
            self.hub.receiver = self.transactions.receive
        else:
            self.hub.receiver = self.hop.receive
            streams = NodeStreams(
                cluster.connector, self.hub, self.hop.is_node,
                udp_limit(cluster.path_mtu), cluster.local_host,
            )  # fmt: skip
            self.hub.choose_flow = streams.choose
        self.throttle = AuthThrottle(
            clock, settings.auth_fail_limit, settings.auth_fail_window,
            settings.auth_block_seconds, settings.auth_fail_extension_limit,
            shared=cluster.auth_failures if cluster is not None else None,
        )  # fmt: skip
        self.nonces = NonceManager(clock, settings.nonce_lifetime)
        self.authenticator = Authenticator(
            clock, directory, self.nonces, self.throttle, settings.realm, settings.algorithms,
            accept_rfc2069=settings.accept_rfc2069, fips=settings.fips,
        )  # fmt: skip
        self.registrar = Registrar(
            clock,
            self.authenticator,
            location,
            settings.expiry,
            is_local_domain,
            settings.node_id,
        )
        self.dispatcher.register_handler("REGISTER", self.registrar.answer)
        self.calls: CallController | None = None
        self.qualifier: Qualifier | None = None
        if call_services is not None:
            self._add_calls(directory, location, call_services)
        self._add_listeners()
        self._housekeeping = task.LoopingCall(self.housekeeping)
        self._housekeeping.clock = clock

    def _add_calls(
        self, directory: IDirectory, location: ILocationService, services: CallServices
    ) -> None:
        s = self.settings
        self.qualifier = Qualifier(
            self.clock, self.transactions, location, directory, self.addressing,
            s.qualify_interval, s.realm, s.node_id,
        )  # fmt: skip
        extensions = ExtensionRouter(
            self.clock, directory, location, self.qualifier.is_reachable, self.hop.holders_known
        )
        router = DialplanRouter(s.dialplan, extensions)
        call_settings = CallSettings(
            ring_timeout=s.ring_timeout,
            max_calls_per_extension=s.max_calls_per_extension,
            timers=s.timers,
            domain=s.realm,
            node_id=s.node_id,
        )
        self.calls = CallController(
            self.clock, call_settings, self.transactions, self.hub.send, self.authenticator,
            router, services.media, self.addressing, services.records, services.live,
            services.hooks, services.counters,
            self._local_applications(services),
        )  # fmt: skip
        self.dispatcher.attach_calls(self.calls)
        # Out-of-dialog methods Warden does not handle itself, answered by plugins.
        handled = {"INVITE", *self.dispatcher.allowed}
        for method, hook in services.hooks.method_handlers().items():
            if method in handled:
                self.log.warn("A plugin's {method} handler is ignored: Warden handles it",
                              method=method)  # fmt: skip
            else:
                self.dispatcher.register_handler(method, hook.handle_request)

    def _local_applications(self, services: CallServices) -> LocalApplications | None:
        """The local applications of the enabled plugins (None without any)."""
        if not services.applications:
            return None
        listen = services.listen_udp
        if listen is None:
            reactor = self.clock

            def listen(port: int, protocol: DatagramProtocol, interface: str) -> IListeningPort:
                return listen_udp(reactor, port, protocol, interface)

        return LocalApplications(
            services.applications, self.clock, listen, self.addressing.local_host_for
        )

    def _refresh_nodes(self) -> Deferred[None]:
        assert self.cluster is not None
        return self.cluster.live_nodes().addCallback(self.hop.set_nodes)

    def bound_port(self) -> int:
        """
        The SIP port this service is reached at: a worker's own port, else the
        port actually bound (the configured one, or the one picked for 0).
        """
        if self.settings.worker_port:
            return self.settings.worker_port
        for server in (getattr(self, "udp_server", None), getattr(self, "tcp_server", None)):
            port = getattr(server, "_port", None)
            if port is not None:
                return int(port.getHost().port)
        return self.settings.port

    def bound_tls_port(self) -> int:
        """The SIP-over-TLS port actually bound (the configured one before listening)."""
        if self.tls_listener is None:
            return self.settings.tls_port
        return self.tls_listener.bound_port()

    def _add_listeners(self) -> None:
        s = self.settings
        interface = s.interface or "0.0.0.0"
        if s.reuse_port:
            self._add_worker_listeners(interface)
            return
        ipv6 = ":" in s.interface
        if "udp" in s.transports:
            proto = SipDatagramProtocol(self.hub, ipv6=ipv6, receive_buffer=s.udp_receive_buffer)
            udp = udp_server(s.port, proto, interface, s.max_message_bytes, reactor=self.clock)
            udp.setServiceParent(self)  # type: ignore[no-untyped-call]
            self.udp_server = udp
        if "tcp" in s.transports:
            tcp = internet.TCPServer(  # type: ignore[no-untyped-call]
                s.port, SipStreamFactory(self.hub), interface=interface, reactor=self.clock
            )
            tcp.setServiceParent(self)  # type: ignore[no-untyped-call]
            self.tcp_server = tcp
        if "tls" in s.transports:
            self.tls_listener = SipTlsService(
                self.clock, self.hub, s.tls, s.tls_port, s.interface,
                self._install_signal, self._exit,
            )  # fmt: skip
            self.tls_listener.setServiceParent(self)  # type: ignore[no-untyped-call]

    def _add_worker_listeners(self, interface: str) -> None:
        """
        A worker's listeners: its own port first (the UDP socket it sends
        from), then the shared port (L{warden.reuseport}), which it sends
        from to the peers that sent to it.
        """
        s = self.settings
        ipv6 = ":" in s.interface
        if "udp" in s.transports:
            own = SipDatagramProtocol(self.hub, ipv6=ipv6, receive_buffer=s.udp_receive_buffer)
            udp = udp_server(s.worker_port, own, interface, s.max_message_bytes, self.clock)
            udp.setServiceParent(self)  # type: ignore[no-untyped-call]
            shared = SipDatagramProtocol(
                self.hub, ipv6=ipv6, receive_buffer=s.udp_receive_buffer, shared=True,
                siblings=(_loopback_or(interface), set(s.worker_ports) - {s.worker_port}),
            )  # fmt: skip
            ReusePortService(
                self.clock, interface, s.port, shared, s.max_message_bytes + 1
            ).setServiceParent(self)  # type: ignore[no-untyped-call]
        if "tcp" in s.transports:
            factory = SipStreamFactory(self.hub)
            tcp = internet.TCPServer(  # type: ignore[no-untyped-call]
                s.worker_port, factory, interface=interface, reactor=self.clock
            )
            tcp.setServiceParent(self)  # type: ignore[no-untyped-call]
            ReusePortService(self.clock, interface, s.port, factory).setServiceParent(self)  # type: ignore[no-untyped-call]
        if "tls" in s.transports:  # its own TLS port, and the shared one
            self.tls_listener = SipTlsService(
                self.clock, self.hub, s.tls, s.worker_tls_port, s.interface,
                self._install_signal, self._exit, shared_port=s.tls_port,
            )  # fmt: skip
            self.tls_listener.setServiceParent(self)  # type: ignore[no-untyped-call]

    def privilegedStartService(self) -> None:
        """
        Bind the listeners (twistd does it before the store is ready) without
        serving yet: L{startService} opens the UDP listener to requests.
        """
        self.hub.accepting = False
        super().privilegedStartService()  # type: ignore[no-untyped-call]

    def startService(self) -> None:
        """Serve requests; start the periodic housekeeping."""
        self.hub.accepting = True
        super().startService()  # type: ignore[no-untyped-call]
        if self.qualifier is not None:
            self.qualifier.start()
        if self.calls is not None:
            self.calls.start()
        d = self._housekeeping.start(HOUSEKEEPING_INTERVAL, now=True)
        d.addErrback(lambda f: self.log.failure("Housekeeping stopped", f))
        realms = self.authenticator.check_realms()
        realms.addErrback(lambda f: self.log.failure("Could not check extension realms", f))
        for transport in self.settings.transports:
            if transport == "tls":
                continue  # logged by the TLS listener, with its certificate
            self.log.info(
                "SIP listening on {transport} {interface}:{port}, realm {realm}",
                transport=transport.upper(),
                interface=self.settings.interface or "*",
                port=self.settings.port,
                realm=self.settings.realm,
            )

    def stopService(self) -> defer.Deferred[None]:
        """
        Hang up every call, stop listening, then make every accepted binding
        change durable.
        """
        if self._housekeeping.running:
            self._housekeeping.stop()
        if self.qualifier is not None:
            self.qualifier.stop()
        if self.calls is not None:
            self.calls.stop()
            self.calls.hangup_all("shutdown")
        d = defer.maybeDeferred(super().stopService)
        if self.calls is not None:
            calls = self.calls
            d.addCallback(lambda _: calls.records_written())
        d.addCallback(lambda _: self.location.flush())
        return d

    def housekeeping(self) -> Deferred[None]:
        """Expire bindings, forget old nonces and finished throttle windows."""
        return Deferred.fromCoroutine(self._housekeeping_once())

    async def _housekeeping_once(self) -> None:
        now = self.clock.seconds()
        expired = await self.location.expire(now)
        if expired:
            metrics.EXPIRED.inc(expired)
        self.nonces.forget_expired()
        self.throttle.prune()
        for udp in self.hub.udp:
            udp.check_drops()
        metrics.THROTTLED_SOURCES.set(self.throttle.blocked_count)
        count = await self.location.count(now)
        metrics.BINDINGS.set(count)


def _loopback_or(interface: str) -> str:
    """Where this machine's workers are reached: ``interface``, or loopback for all."""
    if interface == "0.0.0.0":
        return "127.0.0.1"
    if interface == "::":
        return "::1"
    return interface
