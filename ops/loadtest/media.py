"""
G.711 RTP for load-test calls: each call side sends 20 ms packets (RFC 3551 §4.5.14
PCMU, 160 samples) to the address its peer's SDP names and counts what comes back.

Every payload starts with a 16-byte probe: the sending stream's token (8 bytes)
and the clock time it was sent (a big-endian double), then silence. Both ends of a
load-test call live in the same process, so the receiver reads the one-way latency
through the PBX straight off the payload, and finds the stream that sent it (by its
token) to count loss as sent minus received. Loss and interarrival jitter also
come from L{warden.rtp.packet.StreamStats} (RFC 3550 A.1, A.8).

One L{MediaEngine} per agent sends for all streams from one 20 ms timer, so a
thousand streams cost one timer, not a thousand.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from warden.rtp.errors import RtpParseError
from warden.rtp.packet import StreamStats, parse_rtp

PTIME = 0.020
SAMPLES_PER_PACKET = 160
PAYLOAD_BYTES = 160
PCMU = 0
_PROBE = struct.Struct("!8sd")
_HEADER = struct.Struct("!BBHII")
_SILENCE = b"\xff" * (PAYLOAD_BYTES - _PROBE.size)  # PCMU silence
#: At most this many packets are sent per stream to catch up after a late tick.
MAX_CATCH_UP = 5
#: Ended streams kept for pairing; the oldest go first beyond this.
MAX_UNPAIRED = 20_000


@attrs.frozen
class DirectionQuality:
    """
    One direction of a call's media, as its receiver measured it.

    Attributes:
        sent: packets the sender sent.
        received: packets that arrived (duplicates excluded).
        lost: ``sent - received`` (never negative).
        jitter_ms: RFC 3550 interarrival jitter at the end of the call.
        latency_ms_mean: mean one-way latency (send to receive, through the PBX).
        latency_ms_max: highest one-way latency.
    """

    sent: int
    received: int
    lost: int
    jitter_ms: float
    latency_ms_mean: float | None
    latency_ms_max: float | None

    @property
    def loss_ratio(self) -> float:
        """Lost over sent (0 when nothing was sent)."""
        return self.lost / self.sent if self.sent else 0.0


@attrs.frozen
class MediaResult:
    """Both directions of a call: what the caller received and what the callee received."""

    to_caller: DirectionQuality
    to_callee: DirectionQuality


class RtpStream(DatagramProtocol):
    """
    One call side's RTP socket: sends to ``remote`` while active, receives from anyone.

    Created and driven by L{MediaEngine}.
    """

    def __init__(self, engine: MediaEngine, token: bytes) -> None:
        self.engine = engine
        self.token = token
        self.ssrc = int.from_bytes(os.urandom(4), "big")
        self.sequence = int.from_bytes(os.urandom(2), "big")
        self.timestamp = int.from_bytes(os.urandom(4), "big")
        self.remote: tuple[str, int] | None = None
        self.sent = 0
        self.stats = StreamStats()
        self.latency_sum = 0.0
        self.latency_max = 0.0
        self.latency_count = 0
        self.peer_token: bytes | None = None
        self.port: Any = None
        self.sending = False
        self._packet = bytearray(_HEADER.size + _PROBE.size) + bytearray(_SILENCE)

    @property
    def local_port(self) -> int:
        """The bound port."""
        return int(self.port.getHost().port)

    def send_packets(self, count: int, now: float) -> None:
        """Send ``count`` consecutive packets (each 20 ms of audio later than the last)."""
        transport: Any = self.transport
        remote = self.remote
        if remote is None or transport is None:
            return
        # Straight to the socket: Twisted's write() checks the address on every
        # packet, which at tens of thousands of packets a second is most of the cost.
        sock = getattr(transport, "socket", None)
        sendto = sock.sendto if sock is not None else None
        packet = self._packet
        for _ in range(count):
            self.sequence = (self.sequence + 1) & 0xFFFF
            self.timestamp = (self.timestamp + SAMPLES_PER_PACKET) & 0xFFFFFFFF
            _HEADER.pack_into(packet, 0, 0x80, PCMU, self.sequence, self.timestamp, self.ssrc)
            _PROBE.pack_into(packet, _HEADER.size, self.token, now)
            try:
                if sendto is not None:
                    sendto(packet, remote)
                else:
                    transport.write(bytes(packet), remote)
            except OSError:  # a full send buffer or an ICMP error: this packet is lost
                self.engine.send_errors += 1
                return
            self.sent += 1

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Account an RTP packet; anything else (RTCP, junk) is ignored."""
        try:
            header = parse_rtp(datagram)
        except RtpParseError:
            return
        if header.payload_type != PCMU:
            return
        now = self.engine.clock.seconds()
        self.stats.record(header, len(datagram), now)
        offset = header.payload_offset
        if header.payload_length >= _PROBE.size:
            token, sent_at = _PROBE.unpack_from(datagram, offset)
            self.peer_token = token
            latency = now - sent_at
            if 0.0 <= latency < 60.0:
                self.latency_sum += latency
                self.latency_count += 1
                if latency > self.latency_max:
                    self.latency_max = latency

    def received_quality(self, sent_by_peer: int) -> DirectionQuality:
        """What this side received of the ``sent_by_peer`` packets its peer sent."""
        received = min(sent_by_peer, self.stats.packets - self.stats.duplicates)
        mean = self.latency_sum / self.latency_count * 1000.0 if self.latency_count else None
        return DirectionQuality(
            sent=sent_by_peer,
            received=received,
            lost=max(0, sent_by_peer - received),
            jitter_ms=self.stats.jitter_ms,
            latency_ms_mean=mean,
            latency_ms_max=self.latency_max * 1000.0 if self.latency_count else None,
        )


class MediaEngine:
    """
    Opens RTP sockets for call sides, sends 20 ms packets for every active stream
    from one timer, and pairs the two sides of a call by the tokens in the payload.

    Args:
        clock: time source (stamps, the 20 ms timer).
        reactor: where sockets are opened.
        local_ip: the address sockets bind to and SDP advertises.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, reactor: IReactorUDP, local_ip: str) -> None:
        self.clock = clock
        self.reactor = reactor
        self.local_ip = local_ip
        self.send_errors = 0
        self._active: dict[bytes, RtpStream] = {}
        self._ended: dict[bytes, RtpStream] = {}
        self._loop = LoopingCall.withCount(self._tick)
        self._loop.clock = clock

    def open(self) -> RtpStream:
        """A new stream bound to a free port (it sends once L{start_sending} is called)."""
        stream = RtpStream(self, os.urandom(8))
        stream.port = self.reactor.listenUDP(0, stream, self.local_ip, 2048)
        self._active[stream.token] = stream
        if not self._loop.running:
            self._loop.start(PTIME, now=False).addErrback(
                lambda f: self.log.failure("RTP send loop failed", f)
            )
        return stream

    def start_sending(self, stream: RtpStream, remote: tuple[str, int]) -> None:
        """Send 20 ms packets from ``stream`` to ``remote`` from now on."""
        stream.remote = remote
        stream.sending = True

    def close(self, stream: RtpStream) -> defer.Deferred[None]:
        """Stop sending and receiving; the stream's counts stay readable for pairing."""
        stream.sending = False
        if self._active.pop(stream.token, None) is not None:
            self._ended[stream.token] = stream
            if len(self._ended) > MAX_UNPAIRED:
                del self._ended[next(iter(self._ended))]
        if not self._active and self._loop.running:
            self._loop.stop()
        port, stream.port = stream.port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)

    def peer(self, stream: RtpStream) -> RtpStream | None:
        """The stream whose packets ``stream`` receives (found by the payload's token)."""
        if stream.peer_token is None:
            return None
        return self._active.get(stream.peer_token) or self._ended.get(stream.peer_token)

    def result(self, caller: RtpStream, peer_sent: int | None = None) -> MediaResult:
        """
        Both directions of ``caller``'s call; the callee side is the stream whose
        token arrived in the caller's packets, and it is forgotten afterwards.

        Args:
            caller: the caller's stream.
            peer_sent: how many packets the callee had sent when the caller hung up;
                later ones may be lost as the PBX tears the media down, so they
                are not counted as sent (default: all it sent).
        """
        callee = self.peer(caller)
        self._ended.pop(caller.token, None)
        if callee is None:
            expected = caller.sent  # nothing came back: assume the peer sent as much
            lost_all = DirectionQuality(expected, 0, expected, 0.0, None, None)
            return MediaResult(to_caller=lost_all, to_callee=lost_all)
        self._ended.pop(callee.token, None)
        return MediaResult(
            to_caller=caller.received_quality(callee.sent if peer_sent is None else peer_sent),
            to_callee=callee.received_quality(caller.sent),
        )

    def forget(self, stream: RtpStream) -> None:
        """Drop an ended stream nobody will pair (the callee side of a foreign call)."""
        self._ended.pop(stream.token, None)

    @property
    def active_streams(self) -> int:
        """Streams currently open."""
        return len(self._active)

    def _tick(self, count: int) -> None:
        now = self.clock.seconds()
        count = min(count, MAX_CATCH_UP)
        for stream in list(self._active.values()):
            if stream.sending:
                stream.send_packets(count, now)
