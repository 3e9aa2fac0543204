"""
rtpengine as Warden's media engine (L{warden.interfaces.IMediaRelay}, ADR 0025).

rtpengine relays the packets; Warden drives it over the ng control protocol
(L{warden.rtp.ng}) and keeps the call's SDP in its own hands:

- ``allocate(call_id)`` creates the call in rtpengine with an ``offer`` and an
  ``answer`` of a placeholder description (``c=0.0.0.0``, hold: nothing is sent
  anywhere yet; ``replace: zero-address`` makes the reply name rtpengine's own
  address) from tag ``a`` (the caller's leg) to tag ``b`` (the callee's).
  The SDP rtpengine returns names the port pair it opened facing each leg:
  side b is in the offer's reply (what the callee will be told), side a in the
  answer's. rtpengine keeps those ports for the rest of the call because every
  request carries the ``port latching`` flag.
- ``offer_from``/``answer_from`` are synchronous like the built-in relay's: the
  phone's SDP is checked and rewritten here to the other side's address and
  ports (L{warden.sip.sdp.rewrite}, as the built-in relay does), and the same
  description, reduced to the relayed stream, goes to rtpengine as an
  ``offer`` or ``answer`` so it learns where that phone's media goes. Requests
  of one call are sent one after the other, in order. A reply whose SDP names
  other ports than the ones already given out, an error, or no reply at all
  (after the client's retransmissions) means the call's media is lost: the
  session logs it and calls ``on_timeout`` (the call is hung up).
- The relay asks rtpengine about every session each ``check_interval``
  (``query``, at most ``MAX_QUERIES`` waiting for a reply at once): packets
  and bytes per leg, RTCP, and the loss and jitter the phones report in RTCP
  (per SSRC), kept for ``stats()`` and the call record.
  Media counts as flowing while a leg's packet count grows; a session whose
  media stopped ``media_timeout`` seconds ago, not on hold, has its
  ``on_timeout`` called once, as with the built-in relay. A call rtpengine no
  longer knows (it restarted, or timed the call out itself) ends the same way.
- ``release()`` sends ``delete`` (without rtpengine's usual 30 s delay).

SRTP is the built-in relay's business (ADR 0019): an ``RTP/SAVP`` stream is
refused (488) and ``a=crypto`` lines of a plain RTP offer are removed, so no
key travels through rtpengine's leg in the clear.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.interfaces import IMediaRelay, IMediaSession, IMediaTap
from warden.model.media import SIDES, HoldState, MediaSide
from warden.rtp import metrics, sdes
from warden.rtp.checks import SessionChecks
from warden.rtp.errors import MediaError
from warden.rtp.music import held_sides, holding_after
from warden.rtp.ng import Address, NgClient, NgError, NgTimeout
from warden.rtp.session import close_tap
from warden.sip import sdp as sdplib

ListenUDP = Callable[[int, DatagramProtocol, str], IListeningPort]

#: What rtpengine is first told of each leg: no address, so it sends nothing.
PLACEHOLDER_SDP = (
    b"v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
)
#: rtpengine's tag for each side's leg (the ng call-id is the call's own).
TAGS = {"a": "warden-a", "b": "warden-b"}
#: Flags on every offer and answer: keep the ports given out at allocation.
FLAGS = ("port latching",)
#: Times rtpengine plays the hold music over (each 12.8 s for the shipped one).
MUSIC_REPEATS = 10000
#: The most counted in one reply field (a 64-bit counter, not a hostile bignum).
MAX_COUNT = 2**63
#: Stats queries waiting for rtpengine's reply at once. Every session is
#: queried each check interval; asked all at once, rtpengine answers faster
#: than one reactor turn reads, and at a few hundred calls the replies (1-2 kB
#: each) overflow the control socket's receive buffer (Linux's default
#: ``rmem_default``, 208 kB): dropped, sent again, timed out.
MAX_QUERIES = 16


class RtpengineUnusable(MediaError):
    """rtpengine answered, with something Warden cannot use."""


@implementer(IMediaRelay)
class RtpengineRelay:
    """
    Anchors calls' media in rtpengine.

    Args:
        clock: time for idleness, the stats poll and the ng retransmissions.
        listen_udp: binds the ng control socket, like ``reactor.listenUDP``.
        address: rtpengine's ng address (IP, port).
        media_timeout: seconds without RTP, off hold, before ``on_timeout``.
        check_interval: seconds between stats queries of every session.
        client: the ng client (default: one on ``clock`` for ``address``).
        hold_music: a WAV file rtpengine plays to a held phone (ng ``play
            media``; the path must be readable by rtpengine); None: nothing.
        max_queries: stats queries waiting for a reply at once; the others
            wait their turn (L{MAX_QUERIES}).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        listen_udp: ListenUDP,
        address: Address,
        media_timeout: float = 60.0,
        check_interval: float = 1.0,
        client: NgClient | None = None,
        hold_music: str | None = None,
        max_queries: int = MAX_QUERIES,
    ) -> None:
        self.clock = clock
        self.hold_music = hold_music
        self.media_timeout = media_timeout
        self.check_interval = check_interval
        self.client = client if client is not None else NgClient(clock, address)
        self._listen_udp = listen_udp
        self._query_slots = defer.DeferredSemaphore(max_queries)
        # Deletes sent and not yet answered, by call-id: their ports are
        # still rtpengine's until it has processed them.
        self._deleting: dict[str, defer.Deferred[None]] = {}
        self._checks: SessionChecks[RtpengineSession] = SessionChecks(
            clock, check_interval, self._check, self.ports_in_use, "rtpengine session check"
        )

    # -- IMediaRelay ------------------------------------------------------------------

    def allocate(self, call_id: str) -> defer.Deferred[IMediaSession]:
        """Create the call in rtpengine; fails with MediaError when it cannot."""
        return defer.Deferred.fromCoroutine(self._allocate(call_id))

    def sessions(self) -> list[IMediaSession]:
        """Every session allocated and not released."""
        return list(self._checks)

    def ports_in_use(self) -> int:
        """rtpengine's ports held for Warden's calls: RTP and RTCP of both sides."""
        return 4 * len(self._checks)

    def close(self) -> None:
        """Release every session (deleting it in rtpengine) and close the ng socket."""
        for session in self._checks:
            session.release()
        self._checks.stop()
        self.client.close()

    # -- allocation --------------------------------------------------------------------

    async def _allocate(self, call_id: str) -> IMediaSession:
        try:
            self._ensure_listening()
            session = await self._create(call_id)
        except MediaError:
            metrics.ALLOCATION_FAILURES.inc()
            raise
        self._checks.add(session)
        return session

    def _ensure_listening(self) -> None:
        if self.client.transport is not None:
            return
        interface = "::" if ":" in self.client.address[0] else "0.0.0.0"
        try:
            self._listen_udp(0, self.client, interface)
        except (OSError, CannotListenError) as e:
            raise MediaError(f"cannot open the rtpengine control socket: {e}") from e

    async def _create(self, call_id: str) -> RtpengineSession:
        # "zero-address": rtpengine's own address in the reply despite c=0.0.0.0.
        base = {
            "call-id": call_id,
            "from-tag": TAGS["a"],
            "flags": list(FLAGS),
            "replace": ["zero-address"],
        }
        try:
            return await self._offer_and_answer(call_id, base)
        except MediaError as e:
            # rtpengine works its control socket with several threads, so a
            # delete sent just before may not have freed its ports yet (the
            # error is "Ran out of ports" in a small range). Once the deletes
            # in flight when the offer failed are answered, try once more.
            pending = list(self._deleting.values())
            deleted = self._delete(call_id)
            if isinstance(e, NgTimeout) or not isinstance(e, NgError) or not pending:
                raise
            await deleted
            await defer.DeferredList(pending, consumeErrors=True)
        try:
            return await self._offer_and_answer(call_id, base)
        except MediaError:
            self._delete(call_id)
            raise

    async def _offer_and_answer(self, call_id: str, base: dict[str, Any]) -> RtpengineSession:
        offered = await self.client.request("offer", {**base, "sdp": PLACEHOLDER_SDP})
        side_b = _side_of(offered)
        answered = await self.client.request(
            "answer", {**base, "to-tag": TAGS["b"], "sdp": PLACEHOLDER_SDP}
        )
        side_a = _side_of(answered)
        return RtpengineSession(self, call_id, self.clock, side_a, side_b)

    def _delete(self, call_id: str) -> defer.Deferred[None]:
        """
        Delete ``call_id`` in rtpengine, at once; failures are only logged.
        The Deferred fires (never fails) once rtpengine answered or the
        request timed out.
        """
        request = self.client.request("delete", {"call-id": call_id, "delete-delay": 0})
        d: defer.Deferred[None] = request.addCallbacks(
            lambda _: None, self._delete_failed, errbackArgs=(call_id,)
        )
        self._deleting[call_id] = d

        def done(result: None) -> None:
            if self._deleting.get(call_id) is d:
                del self._deleting[call_id]
            return result

        d.addBoth(done)
        return d

    def _delete_failed(self, failure: Failure, call_id: str) -> None:
        if not isinstance(failure.value, NgTimeout):
            # An error: rtpengine no longer had it (or never made it); or the
            # control socket closed at shutdown, after the delete went out.
            return
        self.log.warn(
            "rtpengine did not delete call {call_id}: {error}",
            call_id=call_id,
            error=failure.getErrorMessage(),
        )

    # -- sessions ------------------------------------------------------------------------

    def forget(self, session: RtpengineSession) -> None:
        """Called by a session on release: delete it in rtpengine."""
        if self._checks.discard(session):
            self._checks.changed()

    def query(self, session: RtpengineSession) -> defer.Deferred[dict[str, Any] | None]:
        """
        Ask rtpengine for ``session``'s counters once one of ``max_queries``
        slots is free; None if the session was released while it waited.
        """

        def send() -> defer.Deferred[dict[str, Any] | None]:
            if session.released:
                return defer.succeed(None)
            return self.client.request("query", {"call-id": session.call_id})  # type: ignore[return-value]

        return self._query_slots.run(send)

    def _check(self, session: RtpengineSession, now: float) -> None:
        session.poll()
        session.check_timeout(now, self.media_timeout)


@implementer(IMediaSession)
class RtpengineSession:
    """
    One call's media in rtpengine; made by L{RtpengineRelay.allocate}.

    Args:
        relay: the relay that made it (its ng client; told on release).
        call_id: the call's identifier, also rtpengine's call-id.
        clock: time for idleness.
        side_a: rtpengine's address and ports facing the caller.
        side_b: rtpengine's address and ports facing the callee.
    """

    log = Logger()

    def __init__(
        self,
        relay: RtpengineRelay,
        call_id: str,
        clock: IReactorTime,
        side_a: MediaSide,
        side_b: MediaSide,
    ) -> None:
        self.call_id = call_id
        self.side_a = side_a
        self.side_b = side_b
        self.on_timeout: Callable[[], object] | None = None
        # rtpengine keeps the packets to itself: no digit or packet reaches
        # these (recording and in-band digits need the built-in relay, ADR 0025).
        self.on_dtmf: Callable[[str, str], object] | None = None
        self.tap: IMediaTap | None = None
        self.timed_out = False
        self.released = False
        self._relay = relay
        self._clock = clock
        self._directions = dict.fromkeys(SIDES, "sendrecv")
        # Whether each phone holds the other, and the sides hearing music.
        self._holding = dict.fromkeys(SIDES, False)
        self.music_to: set[str] = set()
        self._signalling: dict[str, tuple[str, ...]] = dict.fromkeys(SIDES, ())
        self._encrypted = dict.fromkeys(SIDES, False)
        self._index: int | None = None
        self._activity = clock.seconds()
        self._counts = {side: _Counts() for side in SIDES}
        self._polling = False
        # ng requests of this call go out one after the other, in order.
        self._last: defer.Deferred[None] = defer.succeed(None)

    def __repr__(self) -> str:
        return (
            f"<RtpengineSession {self.call_id} a={self.side_a.rtp_port} b={self.side_b.rtp_port}>"
        )

    # -- IMediaSession: signalling ---------------------------------------------------

    @property
    def hold_state(self) -> HoldState:
        """The direction each phone last declared for the relayed stream."""
        return HoldState(self._directions["a"], self._directions["b"])

    def offer_from(self, side: str, sdp: bytes) -> bytes:
        """An offer from ``side``'s phone, rewritten for the other phone."""
        return self._description_from(side, sdp, offer=True)

    def answer_from(self, side: str, sdp: bytes) -> bytes:
        """An answer from ``side``'s phone, rewritten for the other phone."""
        return self._description_from(side, sdp, offer=False)

    def signalling_from(self, side: str, *hosts: str) -> None:
        """The phone on ``side`` sends its SIP from ``hosts`` (see L{IMediaSession})."""
        _check_side(side)
        self._signalling[side] = tuple(hosts)

    def signalling_encrypted(self, side: str, encrypted: bool) -> None:
        """Whether ``side``'s phone sends its SIP over TLS (see L{IMediaSession})."""
        _check_side(side)
        self._encrypted[side] = encrypted

    def _description_from(self, side: str, data: bytes, offer: bool) -> bytes:
        _check_side(side)
        if self.released:
            raise MediaError(f"media session of call {self.call_id} was released")
        parsed = sdplib.parse_sdp(data)
        index = self._index
        if offer or index is None or index >= len(parsed.media):
            index = sdplib.relayed_stream(parsed)
        other_side = _other(side)
        other = self.side_b if side == "a" else self.side_a
        if index is None:
            self._index = None
            self._directions[side] = "inactive"
            self._activity = self._clock.seconds()
            self._hold_music(side, offer)
            return sdplib.rewrite(parsed, other.address, {}).to_bytes()
        media = parsed.media[index]
        if sdes.is_secure(media.proto):
            raise sdplib.SdpError(
                f"{media.proto} (SRTP) is relayed by the built-in media engine only"
            )
        if media.has_attribute("crypto"):
            # Keys never pass through rtpengine's legs (ADR 0019, ADR 0025).
            parsed = sdes.with_crypto(parsed, index, media.proto, [])
            media = parsed.media[index]
        self._index = index
        self._directions[side] = sdplib.direction(media, parsed)
        self._activity = self._clock.seconds()
        onward = sdplib.rewrite(
            parsed, other.address, {index: other.rtp_port}, {index: other.rtcp_port}
        )
        # rtpengine hears of the relayed stream only: its media index 1.
        single = attrs.evolve(parsed, media=(media,)).to_bytes()
        if offer:
            tags = {"from-tag": TAGS[side], "to-tag": TAGS[other_side]}
        else:
            tags = {"from-tag": TAGS[other_side], "to-tag": TAGS[side]}
        params = {"call-id": self.call_id, **tags, "sdp": single, "flags": list(FLAGS)}
        self._send("offer" if offer else "answer", params, other)
        self._hold_music(side, offer)
        return onward.to_bytes()

    def _hold_music(self, side: str, offer: bool) -> None:
        """
        After ``side``'s SDP: rtpengine plays the hold music to a phone just
        put on hold (ng ``play media``, looping) and stops it on resume
        (``stop media``); ADR 0026.
        """
        self._holding[side] = holding_after(self._holding[side], self._directions[side], offer)
        music = self._relay.hold_music
        if music is None:
            return
        held = held_sides(self._holding)
        for name in sorted(held - self.music_to):
            params = {"call-id": self.call_id, "from-tag": TAGS[name], "file": music,
                      "repeat-times": MUSIC_REPEATS}  # fmt: skip
            self._command("play media", params)
        for name in sorted(self.music_to - held):
            self._command("stop media", {"call-id": self.call_id, "from-tag": TAGS[name]})
        self.music_to = held

    def _command(self, command: str, params: dict[str, Any]) -> None:
        """Queue ``command`` after this call's earlier requests; a failure is only logged."""

        def send(_: object) -> defer.Deferred[dict[str, Any]]:
            return self._relay.client.request(command, params)

        def failed(failure: Failure) -> None:
            failure.trap(MediaError)  # type: ignore[no-untyped-call]
            self.log.warn(
                "rtpengine refused {command} for call {call_id}: {error}",
                command=command, call_id=self.call_id, error=failure.getErrorMessage(),
            )  # fmt: skip

        d = self._last.addCallback(send)
        d.addCallbacks(lambda _: None, failed)
        self._last = d

    def _send(self, command: str, params: dict[str, Any], expected: MediaSide) -> None:
        """Queue ``command`` after this call's earlier requests; check its reply."""

        def send(_: object) -> defer.Deferred[dict[str, Any]]:
            return self._relay.client.request(command, params)

        def check(reply: dict[str, Any]) -> None:
            if self.released:
                return
            got = _side_of(reply, hold=True)
            if got.rtp_port != expected.rtp_port or got.rtcp_port != expected.rtcp_port:
                raise RtpengineUnusable(
                    f"rtpengine moved the media of call {self.call_id} from"
                    f" {expected.address}:{expected.rtp_port} to {got.address}:{got.rtp_port}"
                )

        d = self._last.addCallback(send)
        d.addCallback(check)
        d.addErrback(self._lost)
        self._last = d

    def _lost(self, failure: Failure) -> None:
        """rtpengine failed this call: log, and end the call as if media had stopped."""
        failure.trap(MediaError)  # type: ignore[no-untyped-call]
        if self.released:
            return
        self.log.error(
            "Media of call {call_id} lost in rtpengine: {error}",
            call_id=self.call_id,
            error=failure.getErrorMessage(),
        )
        self._fire_timeout()

    # -- stats and timeout ---------------------------------------------------------------

    def poll(self) -> defer.Deferred[None]:
        """
        Ask rtpengine for this call's counters (one query at a time); fires
        (never fails) once the reply is read, at once when nothing was asked.
        """
        if self._polling or self.released:
            return defer.succeed(None)
        self._polling = True
        d = self._relay.query(self)
        return d.addCallbacks(self._polled, self._poll_failed)

    def _polled(self, reply: dict[str, Any] | None) -> None:
        self._polling = False
        if self.released or reply is None:
            return
        now = self._clock.seconds()
        ssrcs = reply.get("SSRC")
        tags = reply.get("tags")
        for side in SIDES:
            tag = tags.get(TAGS[side]) if isinstance(tags, dict) else None
            counts = self._counts[side]
            before = counts.packets
            counts.update(tag, ssrcs if isinstance(ssrcs, dict) else {})
            if counts.packets > before:
                counts.last_packet_at = now
                self._activity = max(self._activity, now)

    def _poll_failed(self, failure: Failure) -> None:
        self._polling = False
        if self.released:
            return
        if isinstance(failure.value, NgError):
            # rtpengine no longer knows the call: restarted, or timed it out.
            self._lost(failure)
            return
        self.log.warn(
            "rtpengine query of call {call_id} failed: {error}",
            call_id=self.call_id,
            error=failure.getErrorMessage(),
        )

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
        if self.timed_out:
            return
        self.timed_out = True
        if self.on_timeout is not None:
            try:
                self.on_timeout()
            except Exception:
                self.log.failure("on_timeout of call {call_id} failed", call_id=self.call_id)

    # -- IMediaSession: state ---------------------------------------------------------

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters per side (see L{IMediaSession.stats}), as of the last query."""
        return {side: self._side_stats(side) for side in SIDES}

    def final_stats(self) -> defer.Deferred[dict[str, dict[str, Any]]]:
        """The counters of the last query, at once (ADR 0025 decision 3)."""
        return defer.succeed(self.stats())

    def _side_stats(self, side: str) -> dict[str, Any]:
        mine, theirs = self._counts[side], self._counts[_other(side)]
        media = self.side_a if side == "a" else self.side_b
        out: dict[str, Any] = {
            "address": media.address,
            "rtp_port": media.rtp_port,
            "rtcp_port": media.rtcp_port,
            "latched": mine.endpoint,
            "direction": self._directions[side],
            "packets_in": mine.packets,
            "bytes_in": mine.bytes,
            "lost_in": mine.lost,
            "jitter_ms_in": mine.jitter_ms,
            "last_packet_at_in": mine.last_packet_at,
            # rtpengine forwards what it receives from the other phone.
            "packets_out": theirs.packets,
            "bytes_out": theirs.bytes,
            "lost_out": theirs.lost,
            "jitter_ms_out": theirs.jitter_ms,
            "last_packet_at_out": theirs.last_packet_at,
            "rtcp_in": mine.rtcp,
            "rtcp_out": theirs.rtcp,
            "dtmf_events": 0,
            "media_encrypted": False,
            "engine": "rtpengine",
        }
        out.update({f"dropped_{reason}": 0 for reason in metrics.DROP_REASONS})
        out["dropped_malformed"] = mine.errors
        return out

    def idle_for(self, now: float) -> float:
        """Seconds since media was last seen growing, allocation or offer/answer."""
        return max(0.0, now - self._activity)

    def release(self) -> None:
        """Delete the call in rtpengine (after its queued requests). Idempotent."""
        if self.released:
            return
        self.released = True
        self._relay.forget(self)
        tap, self.tap = self.tap, None
        close_tap(tap, self._clock.seconds(), self.call_id)
        call_id, relay = self.call_id, self._relay
        self._last.addBoth(lambda _: relay._delete(call_id))


class _Counts:
    """One leg's counters from rtpengine's last ``query`` reply."""

    def __init__(self) -> None:
        self.packets = self.bytes = self.errors = self.rtcp = self.lost = 0
        self.jitter_ms = 0.0
        self.endpoint: str | None = None
        self.last_packet_at: float | None = None

    def update(self, tag: Any, ssrcs: dict[str, Any]) -> None:
        """Read the tag's first media (the relayed stream); ignore what is malformed."""
        medias = tag.get("medias") if isinstance(tag, dict) else None
        media = medias[0] if isinstance(medias, list) and medias else None
        streams = media.get("streams") if isinstance(media, dict) else None
        if not isinstance(streams, list):
            return
        for stream in streams[:4]:
            if not isinstance(stream, dict):
                continue
            flags = stream.get("flags")
            stats = stream.get("stats")
            if not isinstance(flags, list) or not isinstance(stats, dict):
                continue
            if b"RTCP" in flags:
                self.rtcp = _count(stats.get("packets"), self.rtcp)
            elif b"RTP" in flags:
                self.packets = _count(stats.get("packets"), self.packets)
                self.bytes = _count(stats.get("bytes"), self.bytes)
                self.errors = _count(stats.get("errors"), self.errors)
                self.endpoint = _endpoint(stream.get("endpoint")) or self.endpoint
                self._quality(ssrcs.get(str(stream.get("SSRC"))))

    def _quality(self, entry: Any) -> None:
        """Loss and jitter the phones reported in RTCP for this leg's stream."""
        if not isinstance(entry, dict):
            return
        self.lost = _count(entry.get("cumulative loss"), self.lost)
        average = entry.get("average MOS")
        if isinstance(average, dict):
            self.jitter_ms = float(_count(average.get("jitter"), int(self.jitter_ms)))


def _count(value: Any, default: int) -> int:
    """A counter from a reply: a non-negative integer in range, else ``default``."""
    if isinstance(value, int) and 0 <= value < MAX_COUNT:
        return value
    return default


def _endpoint(value: Any) -> str | None:
    """``address:port`` of a stream's endpoint, if it is an IP address and a port."""
    if not isinstance(value, dict):
        return None
    address, port = value.get("address"), value.get("port")
    if not isinstance(address, bytes) or not isinstance(port, int) or not 0 < port < 65536:
        return None
    try:
        ip = ipaddress.ip_address(address[:64].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return None if ip.is_unspecified else f"{ip}:{port}"


def _side_of(reply: dict[str, Any], hold: bool = False) -> MediaSide:
    """
    rtpengine's address and ports in the SDP of an offer's or answer's reply;
    ``hold``: the address may be unspecified (it repeats a phone's ``c=0.0.0.0``).
    """
    raw = reply.get("sdp")
    if not isinstance(raw, bytes):
        raise RtpengineUnusable("rtpengine replied without SDP")
    try:
        parsed = sdplib.parse_sdp(raw)
    except sdplib.SdpError as e:
        raise RtpengineUnusable(f"rtpengine replied with unusable SDP: {e.reason}") from None
    if not parsed.media or parsed.media[0].port == 0:
        raise RtpengineUnusable("rtpengine replied with no media port")
    media = parsed.media[0]
    connection = parsed.connection_for(0)
    try:
        ip = ipaddress.ip_address(connection.address if connection else "")
    except ValueError:
        raise RtpengineUnusable("rtpengine replied with no media address") from None
    rtcp = media.port + 1
    for value in media.attribute_values("rtcp"):
        try:
            rtcp = sdplib.parse_rtcp_attribute(value)[0]
        except sdplib.SdpError:
            raise RtpengineUnusable("rtpengine replied with a bad a=rtcp") from None
    if ip.is_unspecified and not hold:
        raise RtpengineUnusable("rtpengine advertised an unspecified media address")
    return MediaSide(str(ip), media.port, rtcp)


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise ValueError(f"side must be 'a' or 'b', not {side!r}")


def _other(side: str) -> str:
    return "b" if side == "a" else "a"
