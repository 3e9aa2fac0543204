"""
A fake rtpengine speaking the ng control protocol, in memory, for unit tests.

``FakeNgServer.listen_udp`` stands in for ``reactor.listenUDP`` of the client's
control socket: what the client writes is decoded and answered as rtpengine
answers ``ping``, ``offer``, ``answer``, ``query`` and ``delete`` (each tag of
a call has its own RTP/RTCP port pair from the server's range; an offer's or
answer's SDP comes back pointing at the *other* tag's pair; a repeated cookie
gets the remembered reply). Replies are delivered at once, or kept in
``held`` while ``hold`` is set, so tests can lose, delay, duplicate or forge
them. ``set_media`` sets the counters ``query`` reports for a tag.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from warden.rtp import bencode
from warden.sip import sdp as sdplib

Address = tuple[str, int]


@implementer(IListeningPort)
class FakeNgPort:
    """The client's control socket: writes go to the fake server."""

    def __init__(self, server: FakeNgServer, protocol: DatagramProtocol, interface: str) -> None:
        self.server = server
        self.protocol = protocol
        self.interface = interface
        self.closed = False

    def startListening(self) -> None:
        """Bound already."""

    def write(self, datagram: bytes, addr: Address | None = None) -> None:
        """Hand ``datagram`` to the server if it is addressed to it."""
        assert not self.closed, "write on a closed port"
        self.server.sent.append((datagram, addr))
        if addr == self.server.address:
            self.server.receive(self, datagram)

    def stopListening(self) -> None:
        """Close."""
        self.closed = True
        self.protocol.doStop()

    def getHost(self) -> IPv4Address:
        """A made-up local address."""
        return IPv4Address("UDP", self.interface or "127.0.0.1", 40000)


class _Tag:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.packets = self.bytes = self.rtcp = self.jitter = 0
        self.lost: int | None = None
        self.sdp: bytes | None = None


class FakeNgServer:
    """
    An rtpengine double.

    Args:
        address: where it listens (what the client is configured with).
        media_address: the address its SDP advertises.
        port_range: lowest and highest media port, inclusive.
    """

    def __init__(
        self,
        address: Address = ("127.0.0.1", 2223),
        media_address: str = "203.0.113.7",
        port_range: tuple[int, int] = (10000, 10099),
    ) -> None:
        self.address = address
        self.media_address = media_address
        self.free = list(range(port_range[0] + port_range[0] % 2, port_range[1], 2))
        self.calls: dict[str, dict[str, _Tag]] = {}
        self.requests: list[dict[str, Any]] = []
        self.sent: list[tuple[bytes, Address | None]] = []
        self.replies: dict[bytes, bytes] = {}
        self.ports: list[FakeNgPort] = []
        self.hold = False
        self.held: list[tuple[FakeNgPort, bytes]] = []
        self.down = False
        # Commands handled only on run_postponed(), as rtpengine's control
        # threads may take a request after one sent later.
        self.postpone: set[bytes] = set()
        self.postponed: list[tuple[FakeNgPort, bytes]] = []

    def listen_udp(self, port: int, protocol: DatagramProtocol, interface: str) -> FakeNgPort:
        """Bind the client's control socket (``reactor.listenUDP``'s signature)."""
        bound = FakeNgPort(self, protocol, interface)
        self.ports.append(bound)
        protocol.makeConnection(bound)  # type: ignore[arg-type]
        return bound

    def receive(self, port: FakeNgPort, datagram: bytes) -> None:
        """Answer one request (unless down); held while ``hold`` is set."""
        if self.down:
            return
        if self.postpone and bencode.decode(datagram.partition(b" ")[2]).get("command") in (
            self.postpone
        ):
            self.postponed.append((port, datagram))
            return
        cookie, _, body = datagram.partition(b" ")
        reply = self.replies.get(cookie)
        if reply is None:
            request = bencode.decode(body)
            self.requests.append(request)
            reply = cookie + b" " + bencode.encode(self.handle(request))
            self.replies[cookie] = reply
        if self.hold:
            self.held.append((port, reply))
        else:
            self.deliver(port, reply)

    def deliver(self, port: FakeNgPort, datagram: bytes, source: Address | None = None) -> None:
        """Hand ``datagram`` to the client as if from ``source`` (default: the server)."""
        if not port.closed:
            port.protocol.datagramReceived(datagram, source or self.address)

    def run_postponed(self) -> None:
        """Handle every postponed request now, in the order they came."""
        postponed, self.postponed = self.postponed, []
        commands, self.postpone = self.postpone, set()
        try:
            for port, datagram in postponed:
                self.receive(port, datagram)
        finally:
            self.postpone = commands

    def release_held(self) -> None:
        """Deliver every held reply."""
        held, self.held = self.held, []
        for port, reply in held:
            self.deliver(port, reply)

    def set_media(
        self,
        call_id: str,
        tag: str,
        packets: int,
        size: int,
        rtcp: int = 0,
        lost: int | None = None,
        jitter: int = 0,
    ) -> None:
        """What ``query`` reports of ``tag``'s phone (``lost``: its RTCP reports)."""
        each = self.calls[call_id][tag]
        each.packets, each.bytes, each.rtcp = packets, size, rtcp
        each.lost, each.jitter = lost, jitter

    # -- commands ----------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """The reply to one decoded request."""
        command = request.get("command")
        if command == b"ping":
            return {"result": "pong"}
        call_id = request.get("call-id", b"").decode()
        if command in (b"offer", b"answer"):
            return self._offer_answer(request, call_id, command == b"offer")
        if call_id not in self.calls:
            return {"result": "error", "error-reason": "Unknown call-id"}
        if command == b"query":
            return self._query(call_id)
        if command in (b"play media", b"stop media"):
            if request.get("from-tag", b"").decode() not in self.calls[call_id]:
                return {"result": "error", "error-reason": "Unknown from-tag"}
            return {"result": "ok"}
        if command == b"delete":
            for tag in self.calls.pop(call_id).values():
                self.free.append(tag.port)
            return {"result": "ok"}
        return {"result": "error", "error-reason": "Unrecognized command"}

    def _offer_answer(self, request: dict[str, Any], call_id: str, offer: bool) -> dict[str, Any]:
        from_tag = request["from-tag"].decode()
        to_tag = request.get("to-tag", b"").decode()
        tags = self.calls.get(call_id)
        if tags is None:
            if not offer:
                return {"result": "error", "error-reason": "Unknown call-id"}
            if len(self.free) < 2:
                return {"result": "error", "error-reason": "Ran out of ports"}
            tags = self.calls[call_id] = {}
        if to_tag and to_tag not in tags and "(unnamed)" in tags:
            tags[to_tag] = tags.pop("(unnamed)")  # the answerer's tag is known now
            tags[to_tag].name = to_tag
        for name in (from_tag, to_tag or "(unnamed)"):
            if name not in tags:
                if not self.free:
                    return {"result": "error", "error-reason": "Ran out of ports"}
                tags[name] = _Tag(name, self.free.pop(0))
        # An offer goes to the peer (to-tag); an answer back to the offerer (from-tag).
        sender = tags[from_tag if offer else to_tag]
        receiver = (to_tag or "(unnamed)") if offer else from_tag
        sender.sdp = request["sdp"]
        raw = request["sdp"]
        if b"zero-address" in request.get("replace", []):
            raw = raw.replace(b"IN IP4 0.0.0.0", b"IN IP4 " + self.media_address.encode())
        parsed = sdplib.parse_sdp(raw)
        port = tags[receiver].port
        out = sdplib.rewrite(
            parsed, self.media_address, dict.fromkeys(range(len(parsed.media)), port)
        )
        return {"result": "ok", "sdp": out.to_bytes()}

    def _query(self, call_id: str) -> dict[str, Any]:
        tags: dict[str, Any] = {}
        ssrcs: dict[str, Any] = {}
        for name, tag in self.calls[call_id].items():
            rtp = {"packets": tag.packets, "bytes": tag.bytes, "errors": 0}
            rtcp = {"packets": tag.rtcp, "bytes": 0, "errors": 0}
            ssrc = 1000 + tag.port
            streams = [
                {"local port": tag.port, "flags": ["RTP", "filled"], "SSRC": ssrc, "stats": rtp,
                 "endpoint": {"family": "IPv4", "address": "192.0.2.99", "port": tag.port}},
                {"local port": tag.port + 1, "flags": ["RTCP"], "stats": rtcp},
            ]  # fmt: skip
            tags[name] = {"tag": name, "medias": [{"index": 1, "streams": streams}]}
            if tag.lost is not None:
                mos = {"MOS": 43, "jitter": tag.jitter, "packet loss": 0, "samples": 1}
                ssrcs[str(ssrc)] = {"cumulative loss": tag.lost, "average MOS": mos}
        return {"result": "ok", "created": 1, "SSRC": ssrcs, "tags": tags}
