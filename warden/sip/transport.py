"""
SIP over UDP and TCP (RFC 3261 §18) with RFC 3581 ``rport``/``received``.

This is the Twisted edge of the SIP stack. Datagrams and stream bytes are parsed
here; a message that cannot be parsed is counted, answered with 400 (505 for a
foreign SIP version) when a response can be routed, otherwise dropped, and never
raises into the reactor. On TCP, messages are framed by Content-Length with a
size limit (an endless header or a huge body closes the connection without
buffering it), and responses go back on the connection the request arrived on.

TCP connections are bounded against slow or many-connection floods
("slowloris"): each source IP may hold at most ``tcp_connections_per_ip``
connections (more are closed at once), a message that has begun must be
complete within ``tcp_message_timeout``, and a connection is idle, and closed
after ``tcp_idle_timeout``, unless whole messages or keep-alives (RFC 5626
§4.4.1) pass on it: stray bytes do not keep it open.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Collection
from typing import Any

from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from warden.errors import SipParseError, WardenError
from warden.netutil import read_udp_tables, set_receive_buffer, udp_drops
from warden.sip import metrics
from warden.sip.addressing import not_at_sent_by
from warden.sip.dispatch import SERVER_HEADER, build_stateless_error
from warden.sip.flow import Flow
from warden.sip.headers import Via, split_commas
from warden.sip.message import Message, Request, Response
from warden.sip.parser import StreamFramer, UnsupportedVersion, parse_datagram

Receiver = Callable[[Message, Flow], None]

#: Connections one source IP may hold open: enough for an office of TCP phones
#: behind one NAT address ([sip] tcp_connections_per_ip).
DEFAULT_TCP_CONNECTIONS_PER_IP = 64
#: Peers a worker's shared UDP port remembers (about 200 bytes each): a phone
#: forgotten (scanners' spoofed sources can push phones out) is sent to from
#: the worker's own port until it sends again (a REGISTER refresh, a keep-alive).
MAX_SHARED_PEERS = 65_536
#: Seconds from a message's first byte to its last on TCP ([sip] tcp_message_timeout;
#: Kamailio's tcp_msg_read_timeout is the same 20 s).
DEFAULT_TCP_MESSAGE_TIMEOUT = 20.0


class TransportError(WardenError):
    """A message could not be sent on its flow."""


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


def stamp_via(request: Request, transport: str, host: str, port: int) -> Flow:
    """
    Add ``received``/``rport`` to the top Via as RFC 3261 §18.2.1 and RFC 3581 §4
    say, and return the flow a response must go to (§18.2.2, RFC 3581 §4).

    Raises SipParseError when the top Via is unusable.
    """
    via = request.top_via
    rport = via.param("rport")
    sent_host = _strip_brackets(via.host)
    if rport is not None or sent_host != host:
        params = [(k, v) for k, v in via.params if k not in ("received", "rport")]
        if rport is not None:
            params.append(("rport", str(port)))
        params.append(("received", host))
        replace_top_via(request, Via(via.transport, via.host, via.port, tuple(params)))
    if transport != "udp" or rport is not None:
        return Flow(transport, host, port)
    return Flow(transport, host, via.port or 5060)


def replace_top_via(message: Message, via: Via | str | None) -> None:
    """
    Replace the top Via value of ``message`` with ``via``, or remove it (None).
    A L{Via} the caller built is kept with the message's parsed Vias, which
    are then not parsed again.
    """
    parsed, text = (via, str(via)) if isinstance(via, Via) else (None, via)
    vias = message._cache.get("via") if parsed is not None else None
    headers = message.headers
    for i, (name, value) in enumerate(headers):
        if name == "Via":
            values = split_commas(value)[1:]
            if text is not None:
                values.insert(0, text)
            if values:
                headers[i] = ("Via", ", ".join(values))
            else:
                del headers[i]
            break
    message.raw = None
    if vias:
        message._cache["via"] = [parsed, *vias[1:]]
    else:
        message._cache.pop("via", None)


class TransportHub:
    """
    Owns the listening sockets and connections, receives and sends messages.

    Args:
        clock: time source for idle timeouts.
        max_message_bytes: largest message accepted or buffered.
        tcp_idle_timeout: seconds without a message after which a TCP connection closes.
        tcp_message_timeout: seconds a TCP message may take from its first byte to its last.
        tcp_connections_per_ip: TCP connections one source IP may hold open.
    """

    log = Logger()
    #: The Server header of stateless error responses ("" for none).
    server_header = SERVER_HEADER

    def __init__(
        self,
        clock: IReactorTime,
        max_message_bytes: int,
        tcp_idle_timeout: float,
        tcp_message_timeout: float = DEFAULT_TCP_MESSAGE_TIMEOUT,
        tcp_connections_per_ip: int = DEFAULT_TCP_CONNECTIONS_PER_IP,
    ) -> None:
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_message_timeout = tcp_message_timeout
        self.tcp_connections_per_ip = tcp_connections_per_ip
        self.receiver: Receiver | None = None
        #: False from the UDP bind until the SIP service starts (after the store is
        #: ready): datagrams that arrive meanwhile are dropped and the phones
        #: retransmit, so nothing is answered before the bindings are restored.
        self.accepting = True
        self.udp: list[SipDatagramProtocol] = []
        self.connections: set[SipStreamProtocol] = set()
        #: RFC 3261 §18.1.1: ``(message, udp flow, bytes) -> (flow, bytes)`` may move
        #: a request to TCP (L{warden.sip.node_streams}, between cluster nodes).
        self.choose_flow: Callable[[Message, Flow, bytes], tuple[Flow, bytes]] | None = None
        self._per_ip: dict[str, int] = {}
        self._refusing: set[str] = set()

    # -- stream connections -------------------------------------------------------

    def accepts_connection_from(self, host: str) -> bool:
        """
        Whether ``host`` may open another TCP connection. The first refusal of an
        episode is logged; each is counted (``warden_sip_tcp_refused_total``).
        """
        if self._per_ip.get(host, 0) < self.tcp_connections_per_ip:
            return True
        metrics.TCP_REFUSED.inc()
        if host not in self._refusing:
            self._refusing.add(host)
            self.log.warn(
                "Refusing TCP connections from {host}: it holds {limit}"
                " (sip.tcp_connections_per_ip)",
                host=host,
                limit=self.tcp_connections_per_ip,
            )
        return False

    def connection_opened(self, connection: SipStreamProtocol) -> None:
        """Count an open stream connection against its source IP."""
        self.connections.add(connection)
        host = connection.peer[0]
        self._per_ip[host] = self._per_ip.get(host, 0) + 1

    def connection_closed(self, connection: SipStreamProtocol) -> None:
        """Forget a closed stream connection."""
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        host = connection.peer[0]
        left = self._per_ip.get(host, 1) - 1
        if left > 0:
            self._per_ip[host] = left
        else:
            self._per_ip.pop(host, None)
        if left < self.tcp_connections_per_ip:
            self._refusing.discard(host)

    # -- receiving ----------------------------------------------------------------

    def message_received(
        self, message: Message, transport: str, host: str, port: int, connection: Any = None
    ) -> None:
        """A parsed message from the network."""
        try:
            if isinstance(message, Request):
                flow = stamp_via(message, transport, host, port)
            else:
                flow = Flow(transport, host, port)
        except SipParseError as e:
            self._bad_message(transport, host, port, e, connection)
            return
        if connection is not None:
            flow = Flow(transport, flow.host, flow.port, connection)
        assert self.receiver is not None
        try:
            self.receiver(message, flow)
        except SipParseError as e:
            self._bad_message(transport, host, port, SipParseError(e.reason, message), connection)
        except Exception:
            self.log.failure("Unhandled error processing a message from {host}", host=host)

    def bad_message(
        self, transport: str, host: str, port: int, error: SipParseError, connection: Any = None
    ) -> None:
        """Count a malformed message; answer it when a response can be routed."""
        self._bad_message(transport, host, port, error, connection)

    def _bad_message(
        self, transport: str, host: str, port: int, error: SipParseError, connection: Any
    ) -> None:
        metrics.PARSE_ERRORS.labels(transport).inc()
        self.log.debug(
            "Malformed message from {host}:{port}: {reason}",
            host=host,
            port=port,
            reason=error.reason,
        )
        partial = error.partial
        if not isinstance(partial, Request):
            return
        status, reason = (
            (505, "Version Not Supported")
            if isinstance(error, UnsupportedVersion)
            else (400, "Bad Request")
        )
        try:
            response = build_stateless_error(partial, status, reason, self.server_header)
            if response is None:
                return
            flow = stamp_via(partial, transport, host, port)
        except SipParseError:
            return
        if connection is not None:
            flow = Flow(transport, flow.host, flow.port, connection)
        metrics.count_response(status, transport, partial.method)
        try:
            self.send(response, flow)
        except TransportError:
            pass

    # -- sending ------------------------------------------------------------------

    def send(self, message: Message, flow: Flow) -> None:
        """Send ``message`` on ``flow``; raises TransportError when it cannot."""
        data = message.to_bytes()
        if flow.transport == "udp" and self.choose_flow is not None:
            flow, data = self.choose_flow(message, flow, data)
        self.send_data(data, flow)

    def send_data(self, data: bytes, flow: Flow) -> None:
        """
        Send ``data``, a message already serialised, on ``flow`` as it is: the
        second half of L{send}, after the choice of flow (which concerns
        requests only, so a response sent again to a retransmitted request
        comes here directly). Raises TransportError when it cannot.
        """
        if flow.transport == "udp":
            proto = self._udp_for(flow.host, flow.port)
            if proto is None or proto.transport is None:
                raise TransportError("no UDP socket")
            try:
                proto.write_to(data, (flow.host, flow.port))
            except (OSError, MessageLengthError) as e:
                raise TransportError(str(e)) from e
            return
        connection = flow.connection
        if connection is None or not connection.is_open:
            raise TransportError(f"no open connection for {flow}")
        connection.send_message(data)

    def connection_to(self, host: str, port: int) -> SipStreamProtocol | None:
        """The open stream connection with the peer ``host``:``port``, if any."""
        for connection in self.connections:
            if connection.peer == (host, port):
                return connection
        return None

    def _udp_for(self, host: str, port: int) -> SipDatagramProtocol | None:
        """
        The socket to send to ``host``:``port`` from: the shared port's (a
        worker's, L{SipDatagramProtocol.shared}) when that peer sent to it, so
        a phone behind a port-restricted NAT gets Warden's packets from the
        port it sends to; otherwise the first socket of the address family.
        """
        want_v6 = ":" in host
        first = None
        for proto in self.udp:
            if proto.ipv6 != want_v6:
                continue
            if proto.shared and (host, port) in proto.peers:
                return proto
            if first is None and not proto.shared:
                first = proto
        return first


#: Hosts a UDP socket remembers as checked (L{SipDatagramProtocol.write_to});
#: past that, the others are checked on every write.
_MAX_CHECKED_HOSTS = 4096

#: The largest datagram L{SipDatagramProtocol.write_to} keeps for the end of
#: the reactor's turn: RFC 3261 §18.1.1's bound for UDP, far below anything a
#: socket refuses as too large, so that such an error still reaches the sender.
BATCHED_BYTES = 1300


def _sendto(sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
    """
    Send one datagram on ``sock``, as Twisted's UDP port does: retried when a
    signal interrupts it; a refused port (an ICMP error from an earlier
    datagram) ignored; any other error raised.
    """
    while True:
        try:
            sock.sendto(data, addr)
            return
        except InterruptedError:
            continue
        except ConnectionRefusedError:
            return


class SipDatagramProtocol(DatagramProtocol):
    """
    One UDP socket.

    Args:
        hub: where messages go.
        ipv6: whether the socket is IPv6.
        receive_buffer: the kernel receive buffer asked for at start (0: the default).
        read_tables: the texts of /proc/net/udp and udp6, for the drop count.
        shared: the SIP port a worker shares with the others (ADR 0032). It
            remembers who sent to it (L{peers}, at most L{MAX_SHARED_PEERS},
            the least recently heard forgotten first), and the hub sends to
            them from it: the kernel hands their datagrams to the port to
            this worker (it picks by the peer's address), and a phone behind
            a port-restricted NAT only takes packets from the port it sent to.
        siblings: for the shared port, the local address the workers listen
            on and the other workers' own ports: a response whose top Via
            names one of those ports (a phone answering to the port a request
            came from, after the kernel moved that phone to another worker)
            is passed on there unchanged.
    """

    log = Logger()

    def __init__(
        self,
        hub: TransportHub,
        ipv6: bool = False,
        receive_buffer: int = 0,
        read_tables: Callable[[], list[str]] = read_udp_tables,
        shared: bool = False,
        siblings: tuple[str, Collection[int]] = ("", ()),
    ) -> None:
        self.hub = hub
        self.ipv6 = ipv6
        self.shared = shared
        self._sibling_host, self._sibling_ports = siblings[0], frozenset(siblings[1])
        #: Peers heard on the shared port, least recently heard first.
        self.peers: dict[tuple[str, int], None] = {}
        self.receive_buffer = receive_buffer
        self._read_tables = read_tables
        self._inode: int | None = None
        self._drops = 0
        #: The listening socket, once started on a real one (see L{write_to}).
        self._socket: socket.socket | None = None
        #: Hosts Twisted's UDP port checked as literals of this socket's family.
        self._checked_hosts: set[str] = set()
        #: Datagrams for the end of the reactor's turn (see L{write_to}).
        self._pending: list[tuple[bytes, tuple[str, int]]] = []
        hub.udp.append(self)

    def startProtocol(self) -> None:
        """Size the receive buffer and note the socket's inode for the drop count."""
        handle = getattr(self.transport, "socket", None)
        if not isinstance(handle, socket.socket):
            return
        self._socket = handle
        if self.receive_buffer:
            granted = set_receive_buffer(handle, self.receive_buffer)
            # Linux reports twice the usable size it reserved (bookkeeping overhead).
            if granted < self.receive_buffer:
                self.log.warn(
                    "SIP UDP receive buffer: asked for {asked} bytes, the kernel granted"
                    " {granted} (raise net.core.rmem_max, or run as root)",
                    asked=self.receive_buffer,
                    granted=granted,
                )
        self._inode = os.fstat(handle.fileno()).st_ino
        self._drops = udp_drops(self._inode, self._read_tables()) or 0

    def stopProtocol(self) -> None:
        """Send what this turn wrote, then forget the socket: the port is closing it."""
        self.flush()
        self._socket = None
        self._checked_hosts.clear()

    def write_to(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        Send one datagram to ``addr``, as the UDP port's ``write`` does.

        The port checks on every write that the host is an IP literal of the
        socket's family (two parsers of the text), which the hub's hosts
        always are: a host the port accepted once is sent to straight on the
        socket afterwards.

        To such a host, a datagram of at most L{BATCHED_BYTES} goes out at the
        end of the reactor's turn (L{flush}), with the others this turn wrote:
        each datagram wakes its receiver, which on a busy machine then takes
        the CPU from this process in the middle of its work; sent together
        after the work, the wake-ups cost one switch instead of one per
        datagram, and the answers reach their phones no later than the
        turn's last one would have. A failure to send one of those is logged
        (as a lost datagram: the request that asked for it is retransmitted).

        Any other datagram is sent at once, after those waiting, so that
        the order of sending is kept: a refused port (an ICMP error from an
        earlier datagram) is ignored, as the port ignores it; a datagram too
        large for the socket raises OSError (EMSGSIZE), like any other error.
        """
        sock = self._socket
        if sock is not None and addr[0] in self._checked_hosts:
            if len(data) <= BATCHED_BYTES:
                pending = self._pending
                pending.append((data, addr))
                if len(pending) == 1:
                    self.hub.clock.callLater(0, self.flush)
                return
            self.flush()
            _sendto(sock, data, addr)
            return
        self.flush()
        self.transport.write(data, addr)  # type: ignore[union-attr]
        if sock is not None and len(self._checked_hosts) < _MAX_CHECKED_HOSTS:
            self._checked_hosts.add(addr[0])

    def flush(self) -> None:
        """Send the datagrams L{write_to} kept for the end of the turn, in order."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        sock = self._socket
        if sock is None:
            self.log.info(
                "{count} SIP datagrams were not sent: the socket closed", count=len(pending)
            )
            return
        for data, addr in pending:
            try:
                _sendto(sock, data, addr)
            except OSError as e:
                self.log.info(
                    "Sending a SIP datagram to {host}:{port} failed: {error}",
                    host=addr[0],
                    port=addr[1],
                    error=e,
                )

    def check_drops(self) -> int:
        """
        Count datagrams the kernel dropped since the last check (metric
        ``warden_sip_udp_drops_total``, and a warning); return how many.
        """
        if self._inode is None:
            return 0
        total = udp_drops(self._inode, self._read_tables())
        if total is None or total <= self._drops:
            return 0
        new, self._drops = total - self._drops, total
        metrics.UDP_DROPS.inc(new)
        self.log.warn(
            "The kernel dropped {count} SIP datagrams (receive buffer full: Warden is"
            " overloaded or sip.udp_receive_buffer is too small)",
            count=new,
        )
        return new

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Parse and deliver one datagram; malformed ones never raise."""
        if not self.hub.accepting:
            return  # still starting: the sender retransmits (RFC 3261 §17)
        host, port = addr[0], addr[1]
        if not datagram.strip(b"\r\n\x00 "):
            if self.shared and (host, port) in self.peers:
                self._heard(host, port)  # a NATed phone keeping its binding open
            return  # keep-alive (RFC 5626 §4.4.2 CRLF)
        try:
            message = parse_datagram(datagram, self.hub.max_message_bytes)
        except SipParseError as e:
            self.hub.bad_message("udp", host, port, e)
            return
        except Exception:  # a parser bug: logged, never raised into the reactor
            metrics.PARSE_ERRORS.labels("udp").inc()
            self.log.failure("Parsing a datagram from {host} failed", host=host)
            return
        if self._sibling_ports and isinstance(message, Response):
            if self._passed_on(message, datagram):
                return
        if self.shared and isinstance(message, Request):
            self._heard_request(message, host, port)
        self.hub.message_received(message, "udp", host, port)

    def _heard_request(self, request: Request, host: str, port: int) -> None:
        """
        Remember a sender whose address is not the one its Via names (a NAT
        rewrote it): it may take packets only from the address it sent to, this
        shared port. A sender at the address it names is sent to from the
        worker's own port, the one in Warden's Contact, where its in-dialog
        requests then come straight back, whichever worker the kernel would pick
        for it on the shared port (that changes when a worker restarts).
        """
        try:
            via = request.top_via
        except SipParseError:
            return  # answered 400 further on
        if (host, port) in self.peers or not_at_sent_by(host, port, via.host, via.port or 5060):
            self._heard(host, port)

    def _passed_on(self, response: Response, datagram: bytes) -> bool:
        """Pass ``response`` to the worker its top Via names, if another; whether it was."""
        try:
            port = response.top_via.port
        except SipParseError:
            return False
        if port not in self._sibling_ports or self.transport is None:
            return False
        metrics.RESPONSES_PASSED_ON.inc()
        try:
            self.write_to(datagram, (self._sibling_host, port))
        except OSError:
            pass  # the worker's transaction retransmits or times out
        return True

    def _heard(self, host: str, port: int) -> None:
        peers, peer = self.peers, (host, port)
        if peer in peers:
            del peers[peer]  # to the end: heard most recently
        elif len(peers) >= MAX_SHARED_PEERS:
            del peers[next(iter(peers))]
        peers[peer] = None


class SipStreamProtocol(Protocol):
    """One TCP connection, framed by Content-Length (RFC 3261 §18.3)."""

    log = Logger()
    transport_name = "tcp"

    def __init__(self, hub: TransportHub) -> None:
        self.hub = hub
        self.framer = StreamFramer(hub.max_message_bytes)
        self._idle: IDelayedCall | None = None
        self._message_deadline: IDelayedCall | None = None
        self.peer: tuple[str, int] = ("", 0)
        self._broken = False
        #: Told when the connection closes (a connection Warden opened:
        #: L{warden.sip.stream_opener}).
        self.on_closed: Callable[[], None] | None = None

    def connectionMade(self) -> None:
        """Remember the peer and start the idle timer."""
        peer: Any = self.transport.getPeer()  # type: ignore[union-attr]
        self.peer = (peer.host, peer.port)
        self.hub.connection_opened(self)
        self._idle = self.hub.clock.callLater(self.hub.tcp_idle_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._idle = None
        self.log.debug("Closing idle connection from {host}", host=self.peer[0])
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _message_timed_out(self) -> None:
        self._message_deadline = None
        metrics.TCP_MESSAGE_TIMEOUTS.inc()
        self.log.info(
            "Closing the connection from {host}: a message took longer than {seconds} s"
            " (sip.tcp_message_timeout)",
            host=self.peer[0],
            seconds=self.hub.tcp_message_timeout,
        )
        self._broken = True
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _watch_message(self, completed: bool) -> None:
        """
        Start the message deadline when a message has begun (again, once one
        completed), stop it when nothing is pending.
        """
        deadline = self._message_deadline
        if self.framer.mid_message:
            if deadline is None or completed:
                if deadline is not None:
                    deadline.cancel()
                self._message_deadline = self.hub.clock.callLater(
                    self.hub.tcp_message_timeout, self._message_timed_out
                )
        elif deadline is not None:
            deadline.cancel()
            self._message_deadline = None

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.hub.tcp_idle_timeout)

    @property
    def is_open(self) -> bool:
        """True while the connection is open."""
        return self in self.hub.connections

    def dataReceived(self, data: bytes) -> None:
        """Frame and deliver messages; a framing error closes the connection."""
        if data == b"\r\n\r\n" and not self.framer.mid_message:
            self._touch()
            self.transport.write(b"\r\n")  # type: ignore[union-attr]  # RFC 5626 pong
            return
        if self._broken:
            return
        host, port = self.peer
        self.framer.push(data)
        completed = False
        while True:
            try:
                message = self.framer.next_message()
            except Exception as e:
                # The stream cannot be resynchronised: answer if possible, close.
                self._broken = True
                if isinstance(e, SipParseError):
                    self.hub.bad_message(self.transport_name, host, port, e, self)
                else:  # a parser bug: logged, never raised into the reactor
                    metrics.PARSE_ERRORS.labels(self.transport_name).inc()
                    self.log.failure("Framing a stream from {host} failed", host=host)
                self.transport.loseConnection()  # type: ignore[union-attr]
                self.framer = StreamFramer(0)
                return
            if message is None:
                self._watch_message(completed)
                return
            completed = True
            self._touch()
            self.hub.message_received(message, self.transport_name, host, port, self)

    def send_message(self, data: bytes) -> None:
        """Write one serialised message."""
        self._touch()
        self.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # type: ignore[no-untyped-call]  # noqa: B008
        """Forget the connection and its timers."""
        self.hub.connection_closed(self)
        for timer in (self._idle, self._message_deadline):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle = self._message_deadline = None
        if self.on_closed is not None:
            self.on_closed()


class SipStreamFactory(Factory):
    """Builds SipStreamProtocol for a TCP listener."""

    def __init__(self, hub: TransportHub) -> None:
        self.hub = hub

    def buildProtocol(self, addr: Any) -> SipStreamProtocol | None:
        """A protocol sharing the hub; None (close at once) past the per-IP limit."""
        if not self.hub.accepts_connection_from(getattr(addr, "host", "")):
            return None
        return SipStreamProtocol(self.hub)
