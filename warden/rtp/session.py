"""
One call's media through the built-in relay (L{warden.interfaces.IMediaSession}).

A session owns two sides, ``a`` facing the caller and ``b`` facing the callee,
each an RTP socket (even port) and an RTCP socket (the next port). A packet
arriving on side a's RTP socket leaves from side b's RTP socket towards the
callee, and the other way round; RTCP likewise between the RTCP sockets. RTCP
multiplexed on the RTP port (RFC 5761) is recognised by its packet type, counted
as RTCP and relayed on the RTP sockets, the way it came. RFC 4733 events are
relayed untouched and counted once per event; ``on_dtmf`` hears each new
event's digit. A ``tap`` (a call recorder, L{warden.rtp.recorder}) sees every
other relayed RTP packet, decrypted, in the reactor thread.

Where a side's media goes and where it may come from (symmetric RTP latching,
"comedia", for phones behind NAT; ADR 0013 and L{warden.rtp.policy}):

1. The call controller tells the session where each phone's SIP comes from
   (``signalling_from``). A phone's SDP address (``c=``, ``m=`` port,
   ``a=rtcp`` or port + 1) becomes its *declared* destination if the
   ``[media] destinations`` rule accepts it (a phone signalling from a public
   address cannot aim the relay at loopback, a private network or the relay
   itself); a refused address is counted and the side has no destination until
   the phone is heard. Until then its media goes to the declared address.
   When another phone takes the side (a transfer: signalling from other
   addresses), the previous phone's SDP addresses are forgotten.
2. Only packets from the phone's *allowed* IP addresses (``[media] latch =
   "signalling"``: the signalling source and the declared addresses) are
   considered at all; anything else is dropped as ``spoofed``, whatever the
   timing. A stranger racing the phone neither receives nor injects audio.
3. A side is *latched* to one source address and port; media for the phone goes
   there and only packets from there are relayed. The first RTP packet from
   exactly the declared address (or the source the side was latched to before
   a new SDP) latches at once: the destination does not change. Any other
   allowed source (the phone's NAT mapping) must first send ``latch_packets``
   consecutive RTP packets of one stream (same SSRC, sequence numbers rising
   by 1 to 16), with no packet from the latched source in between; those are
   dropped as ``pending``. So a re-latch never happens while the latched
   source is still talking.
4. RTCP latches on its own port, to exactly the declared RTCP address while
   unlatched, or to any port of the IP address RTP is (or was) latched to. RTCP
   multiplexed on the RTP port latches RTP only where rule 3 does so at once.
   Other RTCP from an allowed address is dropped as ``pending``.
5. A new SDP from that phone (a re-INVITE's offer, or an answer) unlatches the
   side, so a phone that moved is followed; the previous source stays
   remembered (and is the destination while the new SDP names none that may be
   used) as long as its IP is still allowed. The same SDP again (same ``o=``
   line, RFC 3264 §8, and same RTP address: a 183's SDP repeated in the 200)
   keeps the latch.
6. While the far side's destination is unknown (no SDP yet, ``c=0.0.0.0``, an
   address of the wrong family or refused, a name instead of an address),
   packets are dropped and counted as ``no_destination``. Anything that is not
   RTP or RTCP version 2 is dropped as ``malformed`` and never latches.
7. On an SRTP leg (L{warden.rtp.srtp}, ADR 0019) a packet from a source rule 2
   allows is decrypted and authenticated before anything else looks at it
   (forged: ``auth_failed``; replayed: ``replayed``), and what goes to an SRTP
   phone is encrypted with Warden's own key for that leg.
8. Music on hold (L{warden.rtp.music}, ADR 0026): while one phone holds the
   other (its last offer ``sendonly`` or ``inactive``, or ``c=0.0.0.0``) and
   the relay has music, the held phone hears it from the relay instead of
   what the holder sends, until the holder's next offer resumes the call.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import InvalidAddressError, MessageLengthError
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from warden.interfaces import IMediaSession, IMediaTap
from warden.iplit import ip_address, ip_literal
from warden.model.media import SIDES, HoldState, MediaSide
from warden.rtp import metrics
from warden.rtp.errors import MediaError, RtpParseError
from warden.rtp.music import HoldMusic, MusicPlayer, held_sides, holding_after
from warden.rtp.packet import (
    RTCP_MUX_RANGE,
    RTP_HEADER_BYTES,
    DtmfCounter,
    RtpHeader,
    StreamStats,
    is_rtcp,
    parse_rtcp,
    parse_rtp,
    parse_telephone_event,
)
from warden.rtp.policy import MediaPolicy, normal_host
from warden.rtp.srtp import MediaCrypto, SrtpDrop, SrtpLeg
from warden.sip import sdp as sdplib

if TYPE_CHECKING:
    from warden.rtp.relay import MediaRelay

Address = tuple[str, int]
_SEND_ERRORS = (OSError, InvalidAddressError, MessageLengthError)
# The fast path's packets (MediaSession._relay_plain): version 2 without
# padding, extension or CSRCs; RTCP's second octets on a shared port (RFC 5761).
_PLAIN_FIRST_OCTET = 0x80
_RTCP_MUX_FIRST, _RTCP_MUX_LAST = RTCP_MUX_RANGE[0], RTCP_MUX_RANGE[-1]
_SEQUENCE_TIMESTAMP = struct.Struct("!HI")
# The stats keys of the drop counters, in metrics.DROP_REASONS' order (as _Peer.dropped).
_DROPPED_KEYS = tuple(f"dropped_{reason}" for reason in metrics.DROP_REASONS)
# A payload type no SDP names: the default clock rate, not an event.
_UNKNOWN_FORMAT: tuple[int | None, bool] = (None, False)
#: RFC 4733 §3.2 event codes of the DTMF digits.
DTMF_DIGITS = {
    **{n: str(n) for n in range(10)},
    10: "*",
    11: "#",
    12: "A",
    13: "B",
    14: "C",
    15: "D",
}
# How far a candidate stream's sequence number may advance between two of its
# packets and still count as consecutive (a few lost packets).
MAX_SEQUENCE_STEP = 16


class RelayProtocol(DatagramProtocol):
    """One relay socket: hands every datagram to its session with side and channel."""

    noisy = False

    def __init__(self, side: str, rtcp: bool) -> None:
        self.side = side
        self.rtcp = rtcp
        self.session: MediaSession | None = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Relay ``datagram`` (dropped until the session exists)."""
        if self.session is not None:
            self.session.datagram_received(self.side, self.rtcp, datagram, addr)

    def send(self, datagram: bytes, addr: Address) -> bool:
        """Send from this socket; False when the socket is closed or refuses."""
        transport = self.transport
        if transport is None:
            return False
        try:
            transport.write(datagram, addr)
        except _SEND_ERRORS:
            return False
        return True


class _Candidate:
    """A source the side is not latched to, and the stream heard from it so far."""

    __slots__ = ("count", "mark", "sequence", "source", "ssrc")

    def __init__(self, source: Address, ssrc: int, sequence: int, count: int, mark: int) -> None:
        self.source = source
        self.ssrc = ssrc
        self.sequence = sequence
        self.count = count
        # The side's relayed packet count when last heard: a packet from the
        # latched source in between breaks the run.
        self.mark = mark


class _Peer:
    """What the session knows about the phone on one side, and its counters."""

    def __init__(self, side: MediaSide, clock_rate: int) -> None:
        self.side = side
        self.family = ip_address(side.address).version
        # Where the phone's SIP comes from, and what its SDP asked for.
        self.signalling: tuple[str, ...] = ()
        self.sdp_rtp: Address | None = None
        self.sdp_rtcp: Address | None = None
        # The SDP's addresses that passed the destination rule.
        self.declared_rtp: Address | None = None
        self.declared_rtcp: Address | None = None
        # Source IPs media may come from; None: any.
        self.allowed: frozenset[str] | None = frozenset()
        self.latched_rtp: Address | None = None
        self.latched_rtcp: Address | None = None
        # Where the side was latched before the last new SDP.
        self.confirmed_rtp: Address | None = None
        self.confirmed_rtcp: Address | None = None
        self.candidate: _Candidate | None = None
        self.origin: str | None = None
        self.direction = "sendrecv"
        # Payload type -> (clock rate, is an RFC 4733 event), from this phone's SDP.
        self.formats: dict[int, tuple[int, bool]] = {}
        # The first G.711 codec of this phone's SDP (payload type, name), for music.
        self.g711: tuple[int, str] | None = None
        # The phone's last offer put the other phone on hold.
        self.holding = False
        # SRTP contexts while this phone's media is encrypted (warden.rtp.srtp).
        self.srtp: SrtpLeg | None = None
        self.rtp_in = StreamStats(clock_rate)
        self.dtmf = DtmfCounter()
        self.rtcp_in = 0
        self.packets_out = 0
        self.bytes_out = 0
        self.rtcp_out = 0
        self.last_out_at: float | None = None
        self.dropped = dict.fromkeys(metrics.DROP_REASONS, 0)
        # What flush_metrics() has exported so far.
        self.exported_lost = 0
        self.exported_dtmf = 0
        self.exported_dropped = dict.fromkeys(metrics.DROP_REASONS, 0)

    def rtp_destination(self) -> Address | None:
        return self.latched_rtp or self.declared_rtp or self.confirmed_rtp

    def rtcp_destination(self) -> Address | None:
        return self.latched_rtcp or self.declared_rtcp or self.confirmed_rtcp

    def permits(self, address: Address | None) -> bool:
        """Whether media may come from ``address``."""
        allowed = self.allowed
        return address is not None and (allowed is None or address[0] in allowed)


@implementer(IMediaSession)
class MediaSession:
    """
    The built-in relay's session; made by L{warden.rtp.relay.MediaRelay.allocate}.

    Args:
        relay: the relay that owns the ports (told on release).
        call_id: the call's identifier.
        clock: time of arrival for statistics and idleness.
        side_a: the relay's address and ports facing the caller.
        side_b: the relay's address and ports facing the callee.
        protocols: the protocol of each socket, by ``(side, is_rtcp)``.
        ports: the bound sockets, closed on release.
        clock_rate: timestamp rate for payload types the SDP does not name.
        policy: which media sources and destinations are accepted.
        music: what a held phone hears (None: nothing; ADR 0026).
    """

    log = Logger()

    def __init__(
        self,
        relay: MediaRelay,
        call_id: str,
        clock: IReactorTime,
        side_a: MediaSide,
        side_b: MediaSide,
        protocols: Mapping[tuple[str, bool], RelayProtocol],
        ports: Sequence[IListeningPort],
        clock_rate: int = 8000,
        policy: MediaPolicy | None = None,
        music: HoldMusic | None = None,
    ) -> None:
        self.call_id = call_id
        self.side_a = side_a
        self.side_b = side_b
        self.on_timeout: Callable[[], object] | None = None
        self.on_dtmf: Callable[[str, str], object] | None = None
        self.tap: IMediaTap | None = None
        self.timed_out = False
        self._relay = relay
        self._clock = clock
        self._policy = policy if policy is not None else MediaPolicy()
        self._peers = {"a": _Peer(side_a, clock_rate), "b": _Peer(side_b, clock_rate)}
        self._crypto = MediaCrypto(self._policy.srtp)
        self._protocols = dict(protocols)
        self._ports = list(ports)
        for protocol in self._protocols.values():
            protocol.session = self
        self._index: int | None = None
        self._activity = clock.seconds()
        self._relayed_packets = 0
        self._relayed_bytes = 0
        self.released = False
        self._music = music
        #: The music playing to each held side.
        self.players: dict[str, MusicPlayer] = {}
        #: Whether this copy counts the signalling metrics (refused destinations,
        #: legs by media); a media process's copy leaves them to Warden's (ADR 0033).
        self.signalling_metrics = True

    def __repr__(self) -> str:
        return f"<MediaSession {self.call_id} a={self.side_a.rtp_port} b={self.side_b.rtp_port}>"

    # -- IMediaSession: signalling ---------------------------------------------------

    @property
    def hold_state(self) -> HoldState:
        """The direction each phone last declared for the relayed stream."""
        return HoldState(self._peers["a"].direction, self._peers["b"].direction)

    def offer_from(self, side: str, sdp: bytes) -> bytes:
        """An offer from ``side``'s phone, rewritten for the other phone."""
        return self._description_from(side, sdp, offer=True)

    def answer_from(self, side: str, sdp: bytes) -> bytes:
        """An answer from ``side``'s phone, rewritten for the other phone."""
        return self._description_from(side, sdp, offer=False)

    def signalling_from(self, side: str, *hosts: str) -> None:
        """The phone on ``side`` sends its SIP from ``hosts`` (see L{IMediaSession})."""
        if side not in SIDES:
            raise ValueError(f"side must be 'a' or 'b', not {side!r}")
        peer = self._peers[side]
        signalling = tuple(dict.fromkeys(normal_host(h) for h in hosts))
        if signalling != peer.signalling:
            if peer.signalling and not set(peer.signalling) & set(signalling):
                # Another phone took the side (transfer): its predecessor's SDP
                # no longer says where the side's media goes (rule 1).
                peer.sdp_rtp = peer.sdp_rtcp = None
                peer.origin = None
            peer.signalling = signalling
            self._apply_policy(peer)

    def signalling_encrypted(self, side: str, encrypted: bool) -> None:
        """Whether ``side``'s phone sends its SIP over TLS (see L{IMediaSession})."""
        if side not in SIDES:
            raise ValueError(f"side must be 'a' or 'b', not {side!r}")
        self._crypto.signalling_encrypted(side, encrypted)

    def srtp_keys(self) -> dict[str, dict[str, bytes]]:
        """Warden's SRTP master keys of each leg so far, by suite (ADR 0033)."""
        return {side: self._crypto.keys(side) for side in SIDES}

    def use_srtp_keys(self, keys: Mapping[str, dict[str, bytes]]) -> None:
        """Take another copy's keys (L{srtp_keys}) before its next description."""
        for side, leg_keys in keys.items():
            self._crypto.use_keys(side, leg_keys)

    def _description_from(self, side: str, data: bytes, offer: bool) -> bytes:
        if side not in SIDES:
            raise ValueError(f"side must be 'a' or 'b', not {side!r}")
        if self.released:
            raise MediaError(f"media session of call {self.call_id} was released")
        parsed = sdplib.parse_sdp(data)
        index = self._index
        if offer or index is None or index >= len(parsed.media):
            index = sdplib.relayed_stream(parsed)
        onward = parsed
        if index is not None:
            # SDES keys per leg (warden.rtp.srtp); SrtpRefused before any change here.
            negotiate = self._crypto.offer if offer else self._crypto.answer
            onward = negotiate(side, parsed, index)
            for name, each in self._peers.items():
                each.srtp = self._crypto.leg(name)
        self._index = index
        peer = self._peers[side]
        self._learn(peer, parsed, index)
        peer.holding = holding_after(peer.holding, peer.direction, offer)
        self._hold_music()
        self._activity = self._clock.seconds()
        other = self._peers[_other(side)].side
        if index is None:
            return sdplib.serialised(sdplib.rewrite(onward, other.address, {}))
        ports, rtcp_ports = {index: other.rtp_port}, {index: other.rtcp_port}
        return sdplib.serialised(sdplib.rewrite(onward, other.address, ports, rtcp_ports))

    def _learn(self, peer: _Peer, parsed: sdplib.SessionDescription, index: int | None) -> None:
        """Remember where ``peer``'s phone wants its media, and what it sends."""
        media = parsed.media[index] if index is not None else None
        rtp, rtcp = _declared(media, parsed.connection_for(index) if index is not None else None)
        if not _usable(rtp, peer.family):
            rtp = rtcp = None
        elif not _usable(rtcp, peer.family):
            rtcp = None
        if parsed.origin != peer.origin or rtp != peer.sdp_rtp:
            # A new description: follow the phone anew (rule 5).
            if peer.latched_rtp is not None:
                peer.confirmed_rtp, peer.confirmed_rtcp = peer.latched_rtp, peer.latched_rtcp
            peer.latched_rtp = peer.latched_rtcp = None
            peer.candidate = None
        peer.origin = parsed.origin
        peer.sdp_rtp, peer.sdp_rtcp = rtp, rtcp
        self._apply_policy(peer)
        peer.direction = sdplib.direction(media, parsed) if media is not None else "inactive"
        formats = sdplib.payload_formats(media) if media is not None else []
        peer.formats = {
            c.payload_type: (c.clock_rate, c.name.lower() == "telephone-event") for c in formats
        }
        peer.g711 = next(
            ((c.payload_type, c.name.upper()) for c in formats
             if c.name.upper() in ("PCMU", "PCMA") and c.clock_rate == 8000),
            None,
        )  # fmt: skip

    def _play(self, side: str, data: bytes) -> bool:
        """Send one packet of music to ``side``'s phone."""
        peer = self._peers[side]
        return self._forward(
            peer, peer.rtp_destination(), (side, False), data, self._clock.seconds()
        )

    def _hold_music(self) -> None:
        """Start the music for a side just put on hold; stop it for one resumed."""
        held_now = held_sides({name: p.holding for name, p in self._peers.items()})
        for name, peer in self._peers.items():
            held = self._music is not None and name in held_now
            player = self.players.get(name)
            if held and player is None and peer.g711 is not None:
                pt, codec = peer.g711
                assert self._music is not None
                self.players[name] = MusicPlayer(
                    self._clock, self._music.frames(codec), pt, functools.partial(self._play, name)
                )
            elif not held and player is not None:
                player.stop()
                del self.players[name]

    def _apply_policy(self, peer: _Peer) -> None:
        """Derive the declared destinations and allowed sources; drop what is no longer allowed."""
        policy, signalling = self._policy, peer.signalling
        rtp, rtcp = peer.sdp_rtp, peer.sdp_rtcp
        refused = [
            a for a in (rtp, rtcp) if a and not policy.destination_allowed(a[0], signalling)
        ]
        if refused:
            if self.signalling_metrics:
                metrics.REFUSED_DESTINATIONS.inc(len(refused))
            self.log.warn(
                "Call {call_id}: media destination {address} refused for a phone "
                "signalling from {source} ([media] destinations)",
                call_id=self.call_id,
                address=refused[0][0],
                source=", ".join(signalling) or "an unknown address",
            )
            if rtp in refused:
                rtp = rtcp = None
            else:
                rtcp = None
        peer.declared_rtp, peer.declared_rtcp = rtp, rtcp
        peer.allowed = policy.latch_hosts(signalling, (a[0] for a in (rtp, rtcp) if a))
        for name in ("latched_rtp", "latched_rtcp", "confirmed_rtp", "confirmed_rtcp"):
            if not peer.permits(getattr(peer, name)):
                setattr(peer, name, None)
        peer.candidate = None

    # -- media ----------------------------------------------------------------------

    def datagram_received(self, side: str, rtcp: bool, data: bytes, addr: Any) -> None:
        """A datagram on one of the session's sockets."""
        if self.released:
            return
        peer = self._peers[side]
        source: Address = (addr[0], addr[1])
        if (
            source == peer.latched_rtp
            and not rtcp
            and peer.srtp is None
            and self.tap is None
            and len(data) >= RTP_HEADER_BYTES
            and data[0] == _PLAIN_FIRST_OCTET
            and not _RTCP_MUX_FIRST <= data[1] <= _RTCP_MUX_LAST
            and self._relay_plain(side, peer, data)
        ):
            return
        if peer.srtp is not None:
            decrypted = self._unprotect(peer, peer.srtp, rtcp, data, source)
            if decrypted is None:
                return
            data = decrypted
        if rtcp or is_rtcp(data):
            self._rtcp_received(side, peer, rtcp, data, source)
            return
        try:
            header = parse_rtp(data)
        except RtpParseError:
            self._drop(peer, "malformed")
            return
        if source != peer.latched_rtp and not self._latches(peer, source, header):
            return
        now = self._clock.seconds()
        self._activity = now
        other = self._peers[_other(side)]
        # Packets are in the numbering of the phone they go to; else the sender's.
        pt = header.payload_type
        rate, event = other.formats.get(pt) or peer.formats.get(pt) or _UNKNOWN_FORMAT
        peer.rtp_in.record(header, len(data), now, rate, timing=not event)
        if event:
            self._count_event(side, peer, header, data)
        elif self.tap is not None:
            self.tap.rtp(side, header.ssrc, header.timestamp, pt, header.payload(data), now)
        if self.players and _other(side) in self.players:
            return  # the other phone is held: it hears the music instead
        self._forward(other, other.rtp_destination(), (_other(side), False), data, now)

    def _relay_plain(self, side: str, peer: _Peer, data: bytes) -> bool:
        """
        The common packet, relayed with the least work: plain RTP with no CSRC,
        extension or padding from the latched source, not an RFC 4733 event, to
        a plain-RTP phone, the session untapped. Exactly what the general path
        does with such a packet (it would parse, need no latching and count the
        same); False, with nothing done, for a packet that is not this case.
        """
        other_side = _other(side)
        other = self._peers[other_side]
        if other.srtp is not None:
            return False
        pt = data[1] & 0x7F
        rate, event = other.formats.get(pt) or peer.formats.get(pt) or _UNKNOWN_FORMAT
        if event:
            return False
        sequence, timestamp = _SEQUENCE_TIMESTAMP.unpack_from(data, 2)
        now = self._clock.seconds()
        self._activity = now
        peer.rtp_in.record_fields(sequence, timestamp, len(data), now, rate)
        if not self.players or other_side not in self.players:
            self._forward(other, other.rtp_destination(), (other_side, False), data, now)
        return True

    def _unprotect(
        self, peer: _Peer, srtp: SrtpLeg, rtcp: bool, data: bytes, source: Address
    ) -> bytes | None:
        """
        The RTP/RTCP inside an SRTP/SRTCP packet from ``peer``'s phone; None when
        dropped: from a source that may not send (rule 2, checked before any
        cryptography), a bad authentication tag, a replay (RFC 3711 §3.3).
        """
        if source not in (peer.latched_rtp, peer.latched_rtcp) and not peer.permits(source):
            self._drop(peer, "spoofed")
            return None
        try:
            return srtp.unprotect(data, rtcp or is_rtcp(data))
        except SrtpDrop as e:
            self._drop(peer, e.reason)
            return None

    def _latches(self, peer: _Peer, source: Address, header: RtpHeader) -> bool:
        """
        Whether an RTP packet from ``source``, not the latched one, is relayed: it
        latches the side (rules 2 and 3). Counts the drop otherwise.
        """
        if not peer.permits(source):
            self._drop(peer, "spoofed")
            return False
        if peer.latched_rtp is None and source in (peer.declared_rtp, peer.confirmed_rtp):
            peer.latched_rtp, peer.candidate = source, None
            return True
        candidate, mark = peer.candidate, peer.rtp_in.packets
        if (
            candidate is not None
            and candidate.source == source
            and candidate.ssrc == header.ssrc
            and candidate.mark == mark
            and 0 < (header.sequence - candidate.sequence) & 0xFFFF <= MAX_SEQUENCE_STEP
        ):
            candidate.count += 1
            candidate.sequence = header.sequence
        else:
            candidate = peer.candidate = _Candidate(source, header.ssrc, header.sequence, 1, mark)
        if candidate.count >= self._policy.latch_packets:
            if peer.latched_rtp is not None:
                self.log.info(
                    "Call {call_id}: media of side {side} moved to {host}:{port}",
                    call_id=self.call_id,
                    side="a" if peer is self._peers["a"] else "b",
                    host=source[0],
                    port=source[1],
                )
            peer.latched_rtp, peer.candidate = source, None
            return True
        self._drop(peer, "pending")
        return False

    def _rtcp_latches(self, peer: _Peer, on_rtcp_port: bool, source: Address) -> bool:
        """
        Whether RTCP from ``source``, not the latched one, is relayed (rule 4); on
        the RTP port (RFC 5761) it latches only where rule 3 latches at once.
        RTCP from an allowed address that cannot latch (yet) is ``pending``.
        """
        if not peer.permits(source):
            self._drop(peer, "spoofed")
            return False
        if not on_rtcp_port:
            if peer.latched_rtp is None and source in (peer.declared_rtp, peer.confirmed_rtp):
                peer.latched_rtp, peer.candidate = source, None
                return True
        else:
            proven = peer.latched_rtp or peer.confirmed_rtp
            if (peer.latched_rtcp is None and source == peer.declared_rtcp) or (
                proven is not None and source[0] == proven[0]
            ):
                peer.latched_rtcp = source
                return True
        self._drop(peer, "pending")
        return False

    def _rtcp_received(
        self, side: str, peer: _Peer, on_rtcp_port: bool, data: bytes, source: Address
    ) -> None:
        try:
            parse_rtcp(data)
        except RtpParseError:
            self._drop(peer, "malformed")
            return
        latched = peer.latched_rtcp if on_rtcp_port else peer.latched_rtp
        if source != latched and not self._rtcp_latches(peer, on_rtcp_port, source):
            return
        peer.rtcp_in += 1
        other = self._peers[_other(side)]
        destination = other.rtcp_destination() if on_rtcp_port else other.rtp_destination()
        if self._forward(other, destination, (_other(side), on_rtcp_port), data, None):
            other.rtcp_out += 1

    def _count_event(self, side: str, peer: _Peer, header: Any, data: bytes) -> None:
        try:
            event = parse_telephone_event(header.payload(data))
        except RtpParseError:
            return
        if peer.dtmf.record(header, event) and self.on_dtmf is not None:
            digit = DTMF_DIGITS.get(event.event)
            if digit is not None:
                try:
                    self.on_dtmf(side, digit)
                except Exception:
                    self.log.failure("on_dtmf of call {call_id} failed", call_id=self.call_id)

    def _forward(
        self,
        to: _Peer,
        destination: Address | None,
        socket: tuple[str, bool],
        data: bytes,
        now: float | None,
    ) -> bool:
        """Send ``data`` to ``to``'s phone; ``now`` is None for RTCP."""
        if destination is None:
            self._drop(to, "no_destination")
            return False
        if to.srtp is not None:
            try:
                data = to.srtp.protect(data, now is None)
            except SrtpDrop as e:
                self._drop(to, e.reason)
                return False
        if not self._protocols[socket].send(data, destination):
            self._drop(to, "send_error")
            return False
        if now is not None:
            to.packets_out += 1
            to.bytes_out += len(data)
            to.last_out_at = now
        self._relayed_packets += 1
        self._relayed_bytes += len(data)
        return True

    def _drop(self, peer: _Peer, reason: str) -> None:
        peer.dropped[reason] += 1

    def flush_metrics(self) -> None:
        """
        Add what happened since the last flush to the Prometheus counters.

        Counting in plain integers per packet and exporting in batches (every
        timeout check, and on release) keeps the per-packet cost low.
        """
        if self._relayed_packets:
            metrics.PACKETS_RELAYED.inc(self._relayed_packets)
            metrics.BYTES_RELAYED.inc(self._relayed_bytes)
            self._relayed_packets = self._relayed_bytes = 0
        for peer in self._peers.values():
            lost = peer.rtp_in.lost
            # Late packets can lower ``lost``; the counter keeps its high-water mark.
            if lost > peer.exported_lost:
                metrics.LOST.inc(lost - peer.exported_lost)
                peer.exported_lost = lost
            if peer.dtmf.events > peer.exported_dtmf:
                metrics.DTMF_EVENTS.inc(peer.dtmf.events - peer.exported_dtmf)
                peer.exported_dtmf = peer.dtmf.events
            for reason, count in peer.dropped.items():
                if count > peer.exported_dropped[reason]:
                    metrics.DROPPED[reason].inc(count - peer.exported_dropped[reason])
                    peer.exported_dropped[reason] = count

    # -- IMediaSession: state ---------------------------------------------------------

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters per side (see L{IMediaSession.stats})."""
        return {side: self._side_stats(side) for side in SIDES}

    def final_stats(self) -> Deferred[dict[str, dict[str, Any]]]:
        """The counters, at once: every packet was counted in this process."""
        return succeed(self.stats())

    def _side_stats(self, side: str) -> dict[str, Any]:
        peer, other = self._peers[side], self._peers[_other(side)]
        latched = peer.latched_rtp
        out: dict[str, Any] = {
            "address": peer.side.address,
            "rtp_port": peer.side.rtp_port,
            "rtcp_port": peer.side.rtcp_port,
            "latched": f"{latched[0]}:{latched[1]}" if latched else None,
            "direction": peer.direction,
            "packets_in": peer.rtp_in.packets,
            "bytes_in": peer.rtp_in.bytes,
            "lost_in": peer.rtp_in.lost,
            "jitter_ms_in": round(peer.rtp_in.jitter_ms, 3),
            "last_packet_at_in": peer.rtp_in.last_packet_at,
            "packets_out": peer.packets_out,
            "bytes_out": peer.bytes_out,
            "lost_out": other.rtp_in.lost,
            "jitter_ms_out": round(other.rtp_in.jitter_ms, 3),
            "last_packet_at_out": peer.last_out_at,
            "rtcp_in": peer.rtcp_in,
            "rtcp_out": peer.rtcp_out,
            "dtmf_events": peer.dtmf.events,
            "media_encrypted": peer.srtp is not None,
        }
        out.update(zip(_DROPPED_KEYS, peer.dropped.values(), strict=True))
        return out

    def idle_for(self, now: float) -> float:
        """Seconds since the last RTP packet, allocation or offer/answer."""
        return max(0.0, now - self._activity)

    def check_timeout(self, now: float, media_timeout: float) -> None:
        """Fire ``on_timeout`` once when media stopped for ``media_timeout`` off hold."""
        if self.released or self.timed_out or self.hold_state.on_hold:
            return
        if self.idle_for(now) < media_timeout:
            return
        metrics.TIMEOUTS.inc()
        self.log.info(
            "Media of call {call_id} stopped {idle:.1f}s ago",
            call_id=self.call_id,
            idle=self.idle_for(now),
        )
        self._fire_timeout()

    def _fire_timeout(self) -> None:
        """Call ``on_timeout`` (once for the session's life), logging its failure."""
        if self.timed_out:
            return
        self.timed_out = True
        if self.on_timeout is not None:
            try:
                self.on_timeout()
            except Exception:
                self.log.failure("on_timeout of call {call_id} failed", call_id=self.call_id)

    def release(self) -> None:
        """Close both sides' sockets and return the ports. Idempotent."""
        if self.released:
            return
        # Packets already waiting on the sockets came before the release:
        # relay them (and count them) before the sockets close.
        for port in self._ports:
            drain = getattr(port, "drain", None)
            if drain is not None:
                drain()
        self.released = True
        for player in self.players.values():
            player.stop()
        self.players.clear()
        self.flush_metrics()
        tap, self.tap = self.tap, None
        close_tap(tap, self._clock.seconds(), self.call_id)
        for peer in self._peers.values():
            if peer.origin is not None and self.signalling_metrics:  # the phone sent SDP
                metrics.LEGS_BY_MEDIA["srtp" if peer.srtp else "rtp"].inc()
        try:
            for port in self._ports:
                close_port(port)
        finally:
            self._ports = []
            for protocol in self._protocols.values():
                protocol.session = None  # break the session <-> socket cycle
            self._relay.forget(self)


def close_tap(tap: IMediaTap | None, now: float, call_id: str) -> None:
    """Close a released session's ``tap``, if any, logging (never raising) a failure."""
    if tap is None:
        return
    try:
        tap.close(now)
    except Exception:
        MediaSession.log.failure("Closing the tap of call {call_id} failed", call_id=call_id)


def close_port(port: IListeningPort) -> None:
    """Stop listening on ``port``, logging (never raising) a failure."""
    try:
        d = port.stopListening()
    except Exception:
        MediaSession.log.failure("Could not close a media port")
        return
    if d is not None:
        d.addErrback(lambda f: MediaSession.log.failure("Could not close a media port", f))


def _other(side: str) -> str:
    return "b" if side == "a" else "a"


def _declared(
    media: sdplib.MediaDescription | None, connection: sdplib.Connection | None
) -> tuple[Address | None, Address | None]:
    """Where a phone's SDP asks for RTP and RTCP (``a=rtcp``, RFC 3605, or port + 1)."""
    if media is None or connection is None or media.port == 0:
        return None, None
    host = connection.address
    rtcp = (host, media.port + 1)
    for value in media.attribute_values("rtcp"):
        port, rtcp_connection = sdplib.parse_rtcp_attribute(value)
        rtcp = (rtcp_connection.address if rtcp_connection else host, port)
    return (host, media.port), rtcp


def _usable(address: Address | None, family: int) -> bool:
    """Whether media can be sent to ``address`` from a socket of IP ``family``."""
    if address is None:
        return False
    ip = ip_literal(address[0])
    return ip is not None and ip.version == family and not ip.is_unspecified
