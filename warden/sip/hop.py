"""
Calls between Warden nodes to phones only one node can reach (RFC 3327 Path
semantics, RFC 5626 flow tokens).

A phone registered over TCP can only be sent requests on its connection, which
lives in the node it registered through; a phone behind a NAT often only takes
packets from the address it sent its REGISTER to. When node B routes a call to
such a binding held by a live node A, B sends the INVITE to A with a pre-loaded
Route naming A and the phone's flow::

    Route: <sip:A-host:A-port;lr;wnode=a;wflow=TOKEN>

and A forwards it, as a stateless proxy (RFC 3261 §16.11), on that flow. A
Record-Routes the dialog-creating requests it forwards (twice for stream flows:
once as the phone sees A, once as the nodes do, RFC 3261 §16.6 item 4), so the
dialog's later requests take the same path both ways; requests from the phone go
on to the Request-URI only when it is a live node of the cluster (no open
relay). A's Via on forwarded requests carries the flow the request arrived on,
so responses go back exactly there, on the same connection for TCP.
Retransmissions and the CANCEL of an INVITE get the same branch as the original
because the branch is derived from the incoming top Via.

Flow tokens (ADR 0010) are ``FLOW.KIND EXPIRES.MAC``: the flow (``tcp:host:port``)
in base64url, the kind, the expiry in whole clock seconds, and 64 bits of
HMAC-SHA256 with the cluster's secret over kind, node, flow, expiry, the Call-ID
and (for a Via token) the host the request was forwarded to. Three kinds:

- ``r`` (route): minted by the calling node for one call's INVITE; lives for
  the INVITE transaction (ring timeout + Timer B), so its retransmissions, its
  CANCEL and the ACK of a failure pass;
- ``d`` (dialog): minted by the holding node into Record-Route; lives for
  ``[cluster] dialog_token_lifetime``, so long calls keep their in-dialog
  requests (ACK, BYE, re-INVITE, UPDATE...);
- ``v`` (via): the ``wrx`` parameter of our Via; lives for a transaction.

A token is honoured only for its Call-ID, and only in one of two directions:
from a live node of the cluster (by source address) towards the flow it names,
or from that very flow towards a live node. Anyone else presenting a token (a
phone replaying another flow's token, a host outside the cluster) gets 403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from collections.abc import Callable, Collection, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from warden.digits import parse_uint
from warden.errors import FlowTokenRefused, SipParseError
from warden.model import Binding
from warden.sip import metrics
from warden.sip.addressing import behind_nat, parse_flow_text
from warden.sip.dispatch import SERVER_HEADER, build_stateless_error
from warden.sip.flow import RELIABLE_TRANSPORTS, Flow
from warden.sip.headers import parse_address
from warden.sip.message import Message, Request, Response
from warden.sip.transaction import MAGIC_COOKIE
from warden.sip.transport import TransportError, replace_top_via

#: Every Via branch a node adds when it forwards starts with this.
HOP_BRANCH = MAGIC_COOKIE + "-wh"
_SIG_BYTES = 8

#: Token kinds: the calling node's pre-loaded Route, a Record-Route, our Via.
ROUTE, DIALOG, VIA = "r", "d", "v"
_MAX_EXPIRES = 10**12 - 1  # clock seconds: far beyond any real expiry
#: At most one fetch of the live nodes per this many seconds for unknown senders,
#: holding at most MAX_WAITING requests meanwhile.
NODE_REFRESH_INTERVAL = 1.0
MAX_WAITING = 64


@attrs.frozen
class TokenLifetimes:
    """
    How long flow tokens stay valid, in seconds.

    Attributes:
        transaction: route and Via tokens: one INVITE transaction, ringing
            included (ring timeout + Timer B).
        dialog: Record-Route tokens: the longest call whose in-dialog requests
            still pass through the node holding the phone's flow.
    """

    transaction: float
    dialog: float


Receiver = Callable[[Message, Flow], None]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NodeHop:
    """
    Routing through the node that holds a phone's flow, and forwarding such
    requests when this node is that node.

    Args:
        node_id: this node's name.
        clock: the time source of token expiry.
        lifetimes: how long the tokens this node mints stay valid.
        send: the transport's ``send(message, flow)`` (raises TransportError).
        connection_to: ``(host, port) -> connection | None`` for open streams.
        via_for: ``via_for(flow)`` giving our ``host:port`` towards a peer.
        passthrough: where every message that is not a hop's goes (the
            transaction layer).
        nat: ``[sip] nat``, for deciding a phone is behind a NAT
            (L{warden.sip.addressing.behind_nat}).
        server_header: the Server header of refusals ("" for none).
        refresh_nodes: fetches the live nodes again and passes them to
            L{set_nodes}; None outside a cluster.

    Until L{use_secret} is called (the cluster agreed a secret) nothing is routed
    through other nodes and every message passes through untouched.
    """

    log = Logger()

    def __init__(
        self,
        node_id: str,
        clock: IReactorTime,
        lifetimes: TokenLifetimes,
        send: Callable[[Message, Flow], None],
        connection_to: Callable[[str, int], Any],
        via_for: Callable[[Flow], str],
        passthrough: Receiver,
        *,
        nat: str = "auto",
        server_header: str = SERVER_HEADER,
        refresh_nodes: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self.node_id = node_id
        self.nat = nat
        self.server_header = server_header
        self._clock = clock
        self.lifetimes = lifetimes
        self._send = send
        self._connection_to = connection_to
        self._via_for = via_for
        self.passthrough = passthrough
        self._secret: bytes | None = None
        #: Live nodes other than this one: node id -> (host, port) of their SIP.
        self.nodes: dict[str, tuple[str, int]] = {}
        self._node_addresses: set[tuple[str, int]] = set()
        self._node_hosts: set[str] = set()
        self.forwarded = 0
        #: Fetches the live nodes again and passes them to L{set_nodes} (from
        #: L{warden.cluster}); asked when a valid token comes from an unknown address.
        self.refresh_nodes = refresh_nodes
        self._refreshed_at = -math.inf
        #: Requests held until a fetch of the live nodes ends (at most MAX_WAITING).
        self._waiting = 0
        #: Told when the fetch of the live nodes in flight ends (None: none is).
        self._fetch_waiters: list[Deferred[None]] | None = None

    # -- cluster membership -------------------------------------------------------

    def use_secret(self, secret: bytes) -> None:
        """Adopt the cluster's secret (the same on every node)."""
        self._secret = secret

    @property
    def enabled(self) -> bool:
        """True once the cluster's secret is known."""
        return self._secret is not None

    def set_nodes(self, nodes: dict[str, str]) -> None:
        """
        The live nodes and their SIP addresses (``host:port``) from the heartbeats;
        nodes without a usable address (a wildcard interface) are left out.
        """
        found: dict[str, tuple[str, int]] = {}
        for node_id, address in nodes.items():
            host, colon, port = address.rpartition(":")
            host = host.strip("[]")
            number = parse_uint(port, 65535)
            if node_id == self.node_id or not colon or number is None:
                continue
            if host in ("", "0.0.0.0", "::"):
                continue
            found[node_id] = (host, number)
        self.nodes = found
        self._node_addresses = set(found.values())
        self._node_hosts = {host for host, _ in found.values()}

    def is_node(self, host: str, port: int) -> bool:
        """Whether ``host``:``port`` is the SIP address of another live node."""
        return (host, port) in self._node_addresses

    # -- tokens -------------------------------------------------------------------

    def _sign(
        self, kind: str, node_id: str, flow_text: str, expires: int, scope: tuple[str, ...]
    ) -> str:
        assert self._secret is not None
        # A JSON array: no field can run into the next (flow texts hold colons).
        data = json.dumps([kind, node_id, flow_text, expires, *scope]).encode()
        return _b64(hmac.new(self._secret, data, hashlib.sha256).digest()[:_SIG_BYTES])

    def token(self, kind: str, node_id: str, flow_text: str, *scope: str) -> str:
        """
        A token of ``kind`` naming ``flow_text`` at ``node_id``, valid for the
        lifetime of its kind from now, for ``scope`` (the Call-ID, and for a Via
        token the host the request goes to).
        """
        lifetime = self.lifetimes.dialog if kind == DIALOG else self.lifetimes.transaction
        expires = math.ceil(self._clock.seconds() + lifetime)
        signature = self._sign(kind, node_id, flow_text, expires, scope)
        return f"{_b64(flow_text.encode())}.{kind}{expires}.{signature}"

    def read_token(
        self, kinds: Collection[str], node_id: str, token: str, *scope: str
    ) -> tuple[str, str]:
        """
        ``(kind, flow text)`` of a token this cluster signed for ``node_id`` and
        ``scope``, of one of ``kinds``, and not expired.

        Raises:
            FlowTokenRefused: the token is malformed, forged, for another scope,
                of another kind or expired.
        """
        parts = token.split(".")
        if len(parts) != 3 or self._secret is None:
            raise FlowTokenRefused("malformed flow token")
        data, stamp, signature = parts
        kind, expires = stamp[:1], parse_uint(stamp[1:], _MAX_EXPIRES)
        if expires is None:
            raise FlowTokenRefused("malformed flow token")
        try:
            flow_text = _unb64(data).decode()
        except (ValueError, UnicodeDecodeError):
            raise FlowTokenRefused("malformed flow token") from None
        good = self._sign(kind, node_id, flow_text, expires, scope)
        if not hmac.compare_digest(signature, good):
            raise FlowTokenRefused("flow token forged or for another call")
        if kind not in kinds:
            raise FlowTokenRefused(f"flow token of kind {kind!r} used out of place")
        if self._clock.seconds() > expires:
            raise FlowTokenRefused("flow token expired")
        return kind, flow_text

    # -- the calling node -----------------------------------------------------------

    def wanted(self, binding: Binding) -> bool:
        """Whether ``binding`` is held by another node and not reachable directly."""
        if not self.enabled or not binding.node_id or binding.node_id == self.node_id:
            return False
        transport = binding.received.partition(":")[0]
        return transport in RELIABLE_TRANSPORTS or behind_nat(binding, self.nat)

    def holders_known(self, bindings: Iterable[Binding]) -> Deferred[None]:
        """
        Fires once every node holding one of ``bindings`` that must be reached
        through it (L{wanted}) is known, or the live nodes were fetched again
        trying: a node that started after our last heartbeat (a restarted
        worker, a new node) is then a route at once, instead of its phones
        being dialled directly, which fails for a phone behind a NAT or on a
        stream. Fetches at most once per L{NODE_REFRESH_INTERVAL}; waiters
        share a fetch in flight; a failed fetch is logged, and the call goes on
        with what is known.
        """
        if all(b.node_id in self.nodes or not self.wanted(b) for b in bindings):
            return succeed(None)
        return self._fetch_nodes() or succeed(None)

    def _fetch_nodes(self) -> Deferred[None] | None:
        """
        Fetch the live nodes again (L{refresh_nodes}), or join the fetch in
        flight: fires when it ends, failed or not (a failure is logged). None
        when there is no way to fetch, or the last fetch ended less than
        L{NODE_REFRESH_INTERVAL} ago.
        """
        if self.refresh_nodes is None:
            return None
        if self._fetch_waiters is None:
            if self._clock.seconds() - self._refreshed_at < NODE_REFRESH_INTERVAL:
                return None
            self._fetch_waiters = []
            d = self.refresh_nodes()
            d.addErrback(lambda f: self.log.info("Could not fetch the live nodes: {error}",
                                                 error=f.getErrorMessage()))  # fmt: skip
            d.addBoth(lambda _: self._fetched())
            if self._fetch_waiters is None:  # it ended at once
                return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._fetch_waiters.append(waiter)
        return waiter

    def _fetched(self) -> None:
        self._refreshed_at = self._clock.seconds()
        waiters, self._fetch_waiters = self._fetch_waiters or [], None
        for waiter in waiters:
            waiter.callback(None)

    def route(self, binding: Binding, call_id: str) -> tuple[Flow, str] | None:
        """
        The flow to the node holding ``binding`` and the Route header value naming
        the phone's flow there, for the call ``call_id``; None when that node is
        not alive.
        """
        address = self.nodes.get(binding.node_id)
        if address is None:
            return None
        host, port = address
        token = self.token(ROUTE, binding.node_id, binding.received, call_id)
        route = f"<sip:{_host_port(host, port)};lr;wnode={binding.node_id};wflow={token}>"
        return Flow("udp", host, port), route

    # -- the node holding the flow ------------------------------------------------

    def receive(self, message: Message, flow: Flow) -> None:
        """Forward a hop's message, or pass anything else to the transaction layer."""
        if self._secret is not None:
            if isinstance(message, Request):
                if message.get("Route") is not None and self._request(message, flow):
                    return
            elif isinstance(message, Response):
                branch = message.top_via.branch
                if branch is not None and branch.startswith(HOP_BRANCH):
                    self._response(message, flow)
                    return
        self.passthrough(message, flow)

    def _own_route(self, value: str) -> str | None:
        """The flow token of a Route value naming this node, else None."""
        if "wnode=" not in value:
            return None
        try:
            uri = parse_address(value).uri
        except SipParseError:
            return None
        params = dict(uri.params)
        if params.get("wnode") != self.node_id:
            return None
        return params.get("wflow") or None

    def _request(self, request: Request, flow: Flow) -> bool:
        """Forward ``request`` when its top Route names this node; False if it does not."""
        routes = request.get_all("Route")
        token = self._own_route(routes[0])
        if token is None:
            return False
        try:
            phone, to_phone = self._direction(request, flow, token)
        except FlowTokenRefused as e:
            self._reject(request, flow, 403, "Forbidden", str(e))
            return True
        if to_phone and flow.host.strip("[]") not in self._node_hosts:
            if not self._wait_for_nodes(request, flow):
                problem = "flow token presented from outside the cluster"
                self._reject(request, flow, 403, "Forbidden", problem)
            return True
        rest = routes[1:]
        while rest and self._own_route(rest[0]) is not None:
            rest = rest[1:]
        if to_phone:
            target = self._phone_flow(phone)
            if target is None:
                self._reject(request, flow, 430, "Flow Failed", "the phone's flow is gone")
                return True
        else:
            target = self._node_target(request, rest)
            if target is None:
                self._reject(request, flow, 403, "Forbidden", "the next hop is not a live node")
                return True
        max_forwards = request.int_header("Max-Forwards", 255)
        if max_forwards is not None and max_forwards <= 0:
            self._reject(request, flow, 483, "Too Many Hops", "Max-Forwards reached 0")
            return True
        self._forward(request, flow, target, rest, phone, to_phone, max_forwards)
        return True

    def _direction(
        self, request: Request, flow: Flow, token: str
    ) -> tuple[tuple[str, str, int], bool]:
        """
        The phone's flow a token names and whether ``request`` goes to it (it
        comes from anywhere but that flow: the caller checks it is a live node)
        or from it (it comes on that very flow).

        Raises:
            FlowTokenRefused: the token is not valid for this call, or the
                phone presents a token it never gets.
        """
        kind, flow_text = self.read_token((ROUTE, DIALOG), self.node_id, token, request.call_id)
        phone = parse_flow_text(flow_text)
        if phone is None:
            raise FlowTokenRefused("flow token names no flow")
        if (flow.transport, flow.host, flow.port) == phone:
            if kind != DIALOG:
                raise FlowTokenRefused("a route token presented by the phone")
            return phone, False
        return phone, True

    def _wait_for_nodes(self, request: Request, flow: Flow) -> bool:
        """
        Hold ``request`` (a valid token from an address that is not a known node)
        while the live nodes are fetched again: a node that joined since our last
        heartbeat is known after that. False, to refuse it now, when the nodes
        were fetched less than L{NODE_REFRESH_INTERVAL} ago or too much waits.
        """
        if self._waiting >= MAX_WAITING:
            return False
        fetched = self._fetch_nodes()
        if fetched is None:
            return False
        self._waiting += 1

        def handle(_: None) -> None:
            self._waiting -= 1
            self.receive(request, flow)  # refused if its sender is still unknown

        fetched.addCallback(handle)
        return True

    def _node_target(self, request: Request, rest: list[str]) -> Flow | None:
        """The flow to the next hop (Route, else Request-URI) when it is a live node."""
        try:
            uri = parse_address(rest[0]).uri if rest else request.uri
        except SipParseError:
            return None
        address = (uri.host.strip("[]"), uri.port or 5060)
        if address not in self._node_addresses:
            return None
        return Flow("udp", *address)

    def _phone_flow(self, phone: tuple[str, str, int]) -> Flow | None:
        transport, host, port = phone
        if transport == "udp":
            return Flow("udp", host, port)
        connection = self._connection_to(host, port)
        if connection is None:
            return None
        return Flow(transport, host, port, connection)

    def _forward(
        self,
        request: Request,
        flow: Flow,
        target: Flow,
        rest: list[str],
        phone: tuple[str, str, int],
        to_phone: bool,
        max_forwards: int | None,
    ) -> None:
        top = request.top_via
        # Not the flow: a CANCEL may come on another transport than its INVITE.
        seed = f"{top.branch}|{top.host}|{top.port}".encode()
        assert self._secret is not None
        branch = HOP_BRANCH + hmac.new(self._secret, seed, hashlib.sha256).hexdigest()[:24]
        came = self.token(VIA, self.node_id, str(flow), request.call_id, target.host)
        via = (
            f"SIP/2.0/{target.transport.upper()} {self._via_for(target)};branch={branch}"
            f";wrx={came}"
        )
        request.remove("Route")
        for value in rest:
            request.add("Route", value)
        request.set("Max-Forwards", str(69 if max_forwards is None else max_forwards - 1))
        if to_phone and request.to.tag is None and request.method not in ("ACK", "CANCEL"):
            # The nodes reach us at our cluster address, the phone on its flow;
            # both carry a token for this dialog that outlives the INVITE's.
            token = self.token(DIALOG, self.node_id, str(Flow(*phone)), request.call_id)
            node_side = f"<sip:{self._via_for(flow)};lr;wnode={self.node_id};wflow={token}>"
            request.add("Record-Route", node_side, first=True)
            if target.transport != "udp":
                phone_side = (
                    f"<sip:{self._via_for(target)};transport={target.transport};lr"
                    f";wnode={self.node_id};wflow={token}>"
                )
                request.add("Record-Route", phone_side, first=True)
        request.add("Via", via, first=True)
        try:
            self._send(request, target)
        except TransportError as e:
            self.log.info("Could not forward {method} to {target}: {error}",
                          method=request.method, target=str(target), error=str(e))  # fmt: skip
            return
        self.forwarded += 1
        metrics.HOP_FORWARDED.labels("request").inc()

    def _response(self, response: Response, flow: Flow) -> None:
        """
        Pop our Via and send ``response`` back where its request came from, when
        it comes from where we forwarded that request.
        """
        top = response.top_via
        try:
            _, came_text = self.read_token(
                (VIA,), self.node_id, top.param("wrx") or "", response.call_id, flow.host
            )
        except FlowTokenRefused as e:
            self.log.debug("Dropping a response from {flow}: {problem}",
                           flow=str(flow), problem=str(e))  # fmt: skip
            return
        came = parse_flow_text(came_text)
        if came is None:
            return
        transport, host, port = came
        target: Flow | None = Flow("udp", host, port)
        if transport != "udp":
            target = self._phone_flow(came)
        if target is None:
            return
        replace_top_via(response, None)
        try:
            self._send(response, target)
        except TransportError:
            return
        self.forwarded += 1
        metrics.HOP_FORWARDED.labels("response").inc()

    def _reject(
        self, request: Request, flow: Flow, status: int, reason: str, problem: str
    ) -> None:
        """Answer a hop request we cannot forward (ACKs get nothing)."""
        self.log.info(
            "Not forwarding {method} from {flow}: {status} {reason} ({problem})",
            method=request.method, flow=str(flow), status=status, reason=reason,
            problem=problem,
        )  # fmt: skip
        metrics.HOP_REFUSED.labels(str(status)).inc()
        if request.method == "ACK":
            return
        response = build_stateless_error(request, status, reason, self.server_header)
        if response is None:
            return
        metrics.count_response(status, flow.transport, request.method)
        try:
            self._send(response, flow)
        except TransportError:
            pass
