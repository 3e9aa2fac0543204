"""
An RTP endpoint that Warden itself terminates a call's media at: local
applications (voicemail, and later IVR prompts, feature-code confirmations and
hold music) play and record G.711 through it (ADR 0022).

- L{RtpEndpoint.answer} answers an SDP offer with one G.711 codec (PCMU or PCMA,
  the offer's order) and RFC 4733 ``telephone-event`` when offered.
- L{RtpEndpoint.play} sends 16-bit PCM as 20 ms packets paced by the injected
  clock (a missed tick sends the frames it owes, so the far end hears no gap);
  one SSRC per endpoint, the sequence number +1 per packet, the timestamp +160
  per packet and, after a pause, advanced by the time that passed, with the
  marker bit on the first packet of each talkspurt (RFC 3550 §5.1, RFC 3551 §4.1).
- L{RtpEndpoint.record} places each packet's audio by its RTP timestamp (a lost
  packet leaves silence; a late one lands where it belongs), and stops on a stop
  digit, on ``silence_seconds`` without speech or without packets, or at
  ``max_seconds``: the recording never grows past it.
- Digits come from RFC 4733 events (one digit per event, however many packets
  carry it, RFC 4733 §2.5.1.2) or from SIP INFO (L{RtpEndpoint.digit_received});
  at most L{MAX_PENDING_DIGITS} wait to be read, more are dropped and counted,
  so a DTMF flood costs nothing.

Only packets from the address the offer named are taken: a B2BUA call always
reaches the endpoint through the media relay, which enforces who may send.
When the call ends, L{RtpEndpoint.close} fails whatever is waiting with
L{HungUp}.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Callable

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from warden.rtp import g711
from warden.rtp.errors import RtpParseError
from warden.rtp.packet import parse_rtp, parse_telephone_event
from warden.rtp.policy import ip_of
from warden.sip import sdp as sdplib
from warden.sip.sdp import SdpError

__all__ = ["HungUp", "ListenUDP", "Recording", "RtpEndpoint"]

ListenUDP = Callable[[int, DatagramProtocol, str], IListeningPort]

#: Seconds of audio per packet, and samples per packet at 8 kHz.
FRAME_SECONDS = 0.020
FRAME_SAMPLES = 160
#: Digits waiting to be read at most; a flood beyond is dropped.
MAX_PENDING_DIGITS = 32
#: Frames sent at most for one late tick (a stalled reactor does not burst more).
MAX_CATCH_UP = 10
#: Mean absolute amplitude above which a frame counts as speech (about -36 dBFS).
SPEECH_LEVEL = 500.0
#: RFC 4733 §3.2 event codes of the DTMF digits.
DIGITS = "0123456789*#ABCD"

_HEADER = struct.Struct("!BBHII")


class HungUp(Exception):
    """The call ended while an application was playing, recording or waiting."""


@attrs.frozen
class Recording:
    """
    What L{RtpEndpoint.record} captured.

    Attributes:
        pcm: 16-bit little-endian PCM at 8 kHz.
        ended_by: ``digit``, ``silence``, ``limit`` or ``hangup``.
        digit: the stop digit pressed ("" otherwise).
    """

    pcm: bytes
    ended_by: str
    digit: str = ""

    @property
    def seconds(self) -> float:
        """The recording's length."""
        return len(self.pcm) / 2 / g711.SAMPLE_RATE

    def trimmed(self, keep: float = 0.5) -> Recording:
        """The recording without its trailing silence (``keep`` seconds of it stay)."""
        frame = 2 * FRAME_SAMPLES
        end = len(self.pcm) - len(self.pcm) % frame
        while end > 0 and g711.level(self.pcm[end - frame : end]) < SPEECH_LEVEL:
            end -= frame
        end = min(len(self.pcm), end + int(keep * g711.SAMPLE_RATE) * 2) if end else 0
        return attrs.evolve(self, pcm=self.pcm[:end])


class _Protocol(DatagramProtocol):
    def __init__(self, endpoint: RtpEndpoint) -> None:
        self.endpoint = endpoint

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.endpoint.datagram_received(datagram, (addr[0], addr[1]))


class _Recorder:
    """One recording in progress."""

    def __init__(self, max_samples: int, silence_samples: int, stop_digits: str) -> None:
        self.pcm = bytearray()
        self.max_samples = max_samples
        self.silence_samples = silence_samples
        self.stop_digits = stop_digits
        self.first_timestamp: int | None = None
        self.ssrc: int | None = None
        self.offset = 0
        self.last_speech = 0
        self.done: defer.Deferred[Recording] = defer.Deferred()

    def add(self, ssrc: int, timestamp: int, pcm: bytes) -> str:
        """Place one packet's audio; why the recording ends now, or ""."""
        if self.ssrc != ssrc or self.first_timestamp is None:
            # A new stream continues where the recording is.
            self.ssrc = ssrc
            self.first_timestamp = timestamp
            self.offset = len(self.pcm) // 2
        position = self.offset + ((timestamp - self.first_timestamp) & 0xFFFFFFFF)
        if position >= self.max_samples or position * 2 > len(self.pcm) + 2 * 8 * g711.SAMPLE_RATE:
            # Past the limit, or a jump of more than 8 s (a broken timestamp): ignored.
            return "limit" if len(self.pcm) // 2 >= self.max_samples else ""
        room = (self.max_samples - position) * 2
        chunk = pcm[:room]
        start = position * 2
        if start > len(self.pcm):
            self.pcm.extend(bytes(start - len(self.pcm)))
        self.pcm[start : start + len(chunk)] = chunk
        end = position + len(chunk) // 2
        if g711.level(chunk) >= SPEECH_LEVEL:
            self.last_speech = max(self.last_speech, end)
        if len(self.pcm) // 2 >= self.max_samples:
            return "limit"
        if len(self.pcm) // 2 - self.last_speech >= self.silence_samples:
            return "silence"
        return ""


class RtpEndpoint:
    """
    One call's media terminated by Warden.

    Args:
        clock: paces the packets sent and times recordings and digit waits.
        listen_udp: binds a UDP socket ``(port, protocol, interface)``; port 0
            lets the system choose.
        host: the address to bind and to announce in SDP.
        ssrc: the SSRC sent (random by default).
    """

    log = Logger()

    def __init__(
        self, clock: IReactorTime, listen_udp: ListenUDP, host: str, ssrc: int | None = None
    ) -> None:
        self.clock = clock
        self.host = host
        self._port = listen_udp(0, _Protocol(self), host)
        self.port: int = self._port.getHost().port  # type: ignore[attr-defined]
        self.ssrc = ssrc if ssrc is not None else int.from_bytes(os.urandom(4), "big")
        self.sequence = int.from_bytes(os.urandom(2), "big")
        self.timestamp = int.from_bytes(os.urandom(4), "big")
        self.codec = "PCMU"
        self.payload_type = 0
        self.event_type: int | None = None
        self.remote: tuple[str, int] | None = None
        self.closed = False
        #: Packets received and sent, digits dropped in a flood.
        self.packets_in = 0
        self.packets_out = 0
        self.digits_dropped = 0
        self._digits: deque[str] = deque()
        self._digit_waiter: defer.Deferred[str] | None = None
        self._digit_timer: IDelayedCall | None = None
        self._event_key: tuple[int, int] | None = None
        self._frames: bytes = b""
        self._play_done: defer.Deferred[str] | None = None
        self._interrupt = ""
        self._loop: LoopingCall | None = None
        self._last_sent_at: float | None = None
        self._marker = True
        self._recorder: _Recorder | None = None
        self._record_check: LoopingCall | None = None
        self._record_started = 0.0
        self._last_packet_at = 0.0

    # -- SDP ---------------------------------------------------------------------------

    def answer(self, offer: bytes) -> bytes:
        """
        The SDP answer to ``offer``: its first RTP/AVP audio stream with PCMU or
        PCMA (first offered) and telephone-event at 8 kHz when offered; every
        other stream refused (port 0, RFC 3264 §6).

        Raises:
            SdpError: no plain RTP audio stream with G.711 at an IP address.
        """
        parsed = sdplib.parse_sdp(offer)
        index = sdplib.relayed_stream(parsed)
        if index is None or parsed.media[index].proto.upper() != "RTP/AVP":
            raise SdpError("no plain RTP/AVP stream to answer")
        media = parsed.media[index]
        formats = sdplib.payload_formats(media)
        codec = next((c for c in formats if c.name.upper() in g711.CODECS), None)
        if codec is None or codec.clock_rate != g711.SAMPLE_RATE:
            raise SdpError("no G.711 (PCMU/PCMA) offered")
        connection = parsed.connection_for(index)
        if connection is None or ip_of(connection.address) is None:
            raise SdpError("the offer names no IP address")
        self.remote = (connection.address, media.port)
        self.codec = codec.name.upper()
        self.payload_type = codec.payload_type
        events = [e for e in sdplib.telephone_events(media) if e.clock_rate == g711.SAMPLE_RATE]
        self.event_type = events[0].payload_type if events else None
        addrtype = "IP6" if ":" in self.host else "IP4"
        session = int.from_bytes(os.urandom(4), "big") >> 1
        lines = [
            "v=0",
            f"o=warden {session} 1 IN {addrtype} {self.host}",
            "s=warden",
            f"c=IN {addrtype} {self.host}",
            "t=0 0",
        ]
        for i, other in enumerate(parsed.media):
            if i != index:
                fmt = other.formats[0] if other.formats else "0"
                lines.append(f"m={other.media} 0 {other.proto} {fmt}")
                continue
            types = [str(self.payload_type)]
            if self.event_type is not None:
                types.append(str(self.event_type))
            lines.append(f"m=audio {self.port} RTP/AVP {' '.join(types)}")
            lines.append(f"a=rtpmap:{self.payload_type} {self.codec}/8000")
            if self.event_type is not None:
                lines.append(f"a=rtpmap:{self.event_type} telephone-event/8000")
                lines.append(f"a=fmtp:{self.event_type} 0-15")
            lines.append("a=ptime:20")
            lines.append("a=sendrecv")
        return "".join(line + "\r\n" for line in lines).encode("ascii")

    # -- playing -----------------------------------------------------------------------

    def play(self, pcm: bytes, interrupt: str = "") -> defer.Deferred[str]:
        """
        Send ``pcm`` (16-bit, 8 kHz); fires with "" when it was all sent, or with
        the digit of ``interrupt`` that stopped it (taken: it is not read again;
        a digit already waiting stops it at once). Fails with L{HungUp} when the
        call ends.
        """
        if self.closed:
            return defer.fail(HungUp())
        self.stop_playing()
        if interrupt and self._digits and self._digits[0] in interrupt:
            return defer.succeed(self._digits.popleft())
        self._frames = g711.encode(self.codec, pcm)
        self._interrupt = interrupt
        done: defer.Deferred[str] = defer.Deferred()
        self._play_done = done
        now = self.clock.seconds()
        if self._last_sent_at is not None:
            gap = max(0.0, now - self._last_sent_at - FRAME_SECONDS)
            self.timestamp = (self.timestamp + int(gap * g711.SAMPLE_RATE)) & 0xFFFFFFFF
        self._marker = True
        loop = LoopingCall.withCount(self._tick)
        loop.clock = self.clock
        self._loop = loop
        loop.start(FRAME_SECONDS, now=True).addErrback(
            lambda f: self.log.failure("RTP endpoint playback stopped", f)
        )
        return done

    def stop_playing(self, digit: str = "") -> None:
        """Stop sending; the pending L{play} fires with ``digit``."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._frames = b""
        done, self._play_done = self._play_done, None
        if done is not None:
            done.callback(digit)

    def _tick(self, count: int) -> None:
        for _ in range(min(count, MAX_CATCH_UP)):
            frame, self._frames = self._frames[:FRAME_SAMPLES], self._frames[FRAME_SAMPLES:]
            if frame:
                self._send(frame)
            if not self._frames:
                self.stop_playing()  # the last packet is on its way
                return

    def _send(self, payload: bytes) -> None:
        if self.remote is None or self.closed:
            return
        second = (0x80 if self._marker else 0) | self.payload_type
        self._marker = False
        header = _HEADER.pack(0x80, second, self.sequence, self.timestamp, self.ssrc)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + len(payload)) & 0xFFFFFFFF
        self._last_sent_at = self.clock.seconds()
        try:
            self._port.write(header + payload, self.remote)  # type: ignore[attr-defined]
        except OSError as e:
            self.log.debug("RTP endpoint send failed: {error}", error=e)
            return
        self.packets_out += 1

    # -- receiving ---------------------------------------------------------------------

    def datagram_received(self, data: bytes, source: tuple[str, int]) -> None:
        """An RTP packet from the far end (anything else is ignored)."""
        if self.closed or self.remote is None or source != self.remote:
            return
        try:
            header = parse_rtp(data)
        except RtpParseError:
            return
        self.packets_in += 1
        self._last_packet_at = self.clock.seconds()
        payload = header.payload(data)
        if self.event_type is not None and header.payload_type == self.event_type:
            try:
                event = parse_telephone_event(payload)
            except RtpParseError:
                return
            key = (header.ssrc, header.timestamp)
            if key != self._event_key and event.event < len(DIGITS):
                self._event_key = key
                self.digit_received(DIGITS[event.event])
            return
        if header.payload_type == self.payload_type and self._recorder is not None:
            why = self._recorder.add(
                header.ssrc, header.timestamp, g711.decode(self.codec, payload)
            )
            if why:
                self._finish_recording(why)

    def digit_received(self, digit: str) -> None:
        """A DTMF digit (RFC 4733 or SIP INFO): stops a recording or a prompt, or waits."""
        if self.closed:
            return
        recorder = self._recorder
        if recorder is not None and digit in recorder.stop_digits:
            self._finish_recording("digit", digit)
            return
        if self._play_done is not None and digit in self._interrupt:
            self.stop_playing(digit)
            return
        waiter = self._digit_waiter
        if waiter is not None:
            self._digit_waiter = None
            self._cancel_digit_timer()
            waiter.callback(digit)
            return
        if len(self._digits) >= MAX_PENDING_DIGITS:
            self.digits_dropped += 1
            return
        self._digits.append(digit)

    def next_digit(self, timeout: float) -> defer.Deferred[str]:
        """The next digit, or "" after ``timeout`` seconds without one."""
        if self.closed:
            return defer.fail(HungUp())
        if self._digits:
            return defer.succeed(self._digits.popleft())
        if self._digit_waiter is not None:
            raise RuntimeError("one digit wait at a time")
        waiter: defer.Deferred[str] = defer.Deferred()
        self._digit_waiter = waiter
        self._digit_timer = self.clock.callLater(timeout, self._digit_timeout)
        return waiter

    def _digit_timeout(self) -> None:
        self._digit_timer = None
        waiter, self._digit_waiter = self._digit_waiter, None
        if waiter is not None:
            waiter.callback("")

    def _cancel_digit_timer(self) -> None:
        if self._digit_timer is not None and self._digit_timer.active():
            self._digit_timer.cancel()
        self._digit_timer = None

    def clear_digits(self) -> None:
        """Forget the digits waiting (before asking a new question)."""
        self._digits.clear()

    async def read_digits(self, limit: int, timeout: float, terminator: str = "#") -> str:
        """
        Up to ``limit`` digits, ended by ``terminator`` (not included) or by
        ``timeout`` seconds without a digit.
        """
        text = ""
        while len(text) < limit:
            digit = await self.next_digit(timeout)
            if not digit or digit in terminator:
                break
            text += digit
        return text

    # -- recording ---------------------------------------------------------------------

    def record(
        self, max_seconds: float, silence_seconds: float, stop_digits: str = "#"
    ) -> defer.Deferred[Recording]:
        """
        Record what the far end sends until a digit of ``stop_digits``,
        ``silence_seconds`` of silence (or without packets), or ``max_seconds``
        of audio; the recording is never longer. One recording at a time.
        """
        if self.closed:
            return defer.fail(HungUp())
        if self._recorder is not None:
            raise RuntimeError("one recording at a time")
        self.clear_digits()
        recorder = _Recorder(
            int(max_seconds * g711.SAMPLE_RATE),
            max(1, int(silence_seconds * g711.SAMPLE_RATE)),
            stop_digits,
        )
        self._recorder = recorder
        self._record_started = self._last_packet_at = self.clock.seconds()
        check = LoopingCall(self._check_recording, max_seconds, silence_seconds)
        check.clock = self.clock
        self._record_check = check
        check.start(0.5, now=False)
        return recorder.done

    def _check_recording(self, max_seconds: float, silence_seconds: float) -> None:
        """Wall-clock limits: no packets for a while, or far past the length limit."""
        now = self.clock.seconds()
        if now - self._last_packet_at >= silence_seconds:
            self._finish_recording("silence")
        elif now - self._record_started >= max_seconds + 5.0:
            self._finish_recording("limit")

    def _finish_recording(self, why: str, digit: str = "") -> None:
        recorder, self._recorder = self._recorder, None
        check, self._record_check = self._record_check, None
        if check is not None and check.running:
            check.stop()
        if recorder is not None:
            recorder.done.callback(Recording(bytes(recorder.pcm), why, digit))

    # -- end ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything, close the socket, fail what is waiting with L{HungUp}."""
        if self.closed:
            return
        recorder = self._recorder
        self.closed = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        play, self._play_done = self._play_done, None
        self._recorder = None
        if self._record_check is not None and self._record_check.running:
            self._record_check.stop()
        self._record_check = None
        self._cancel_digit_timer()
        waiter, self._digit_waiter = self._digit_waiter, None
        try:
            self._port.stopListening()
        except OSError as e:
            self.log.debug("RTP endpoint close: {error}", error=e)
        for d in (play, waiter):
            if d is not None:
                d.errback(HungUp())
        if recorder is not None:
            recorder.done.callback(Recording(bytes(recorder.pcm), "hangup"))
