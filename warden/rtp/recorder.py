"""
Recording a call's media as the relay forwards it: a tap on the media session
(L{warden.interfaces.IMediaTap}) that hands both directions to a writer thread,
which lays them side by side in a stereo WAV file (left: the caller's phone,
side a; right: the callee's, side b; L{warden.rtp.wav}).

Relaying never waits for the disk: per packet the tap only appends a tuple to
a list; every L{RecorderLimits.batch_packets} packets the list goes to the
writer (one thread for every recording, so a recording's batches are written
in order), which decodes G.711, places each packet's samples and writes what
is final. A writer that falls behind (a stalled disk) gets no more batches
than L{RecorderLimits.max_batches} at a time: later ones are dropped and
counted, so memory stays bounded; the dropped audio becomes silence.

Where a packet's samples go (L{ChannelTimeline}): the first packet of a stream
(an SSRC) is placed where its arrival time says (seconds since the recording
started, times 8000); the packets after it where their RTP timestamps say,
relative to that first one (RFC 3550 §5.1). So lost packets and silence
suppression leave silence of the right length, jitter moves nothing, and the
two channels stay aligned as the relay heard them. A timestamp more than
L{RecorderLimits.skew} seconds away from its arrival time (a sender that
restarted its clock, or hostile input) places the stream anew by arrival.
Samples stay in memory for L{RecorderLimits.lag} seconds, for late packets,
and are then written; a packet later than that is cut to what is still open.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import BinaryIO, TypeVar

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from warden.interfaces import IMediaTap
from warden.rtp.wav import CHANNELS, RATE, SAMPLE_BYTES, StereoWavWriter, decode, interleave

__all__ = ["CallRecorder", "ChannelTimeline", "RecorderLimits", "StereoMixer", "WriterThread"]

#: One packet as the tap hands it on: channel (0 a, 1 b), SSRC, RTP timestamp,
#: payload type, payload, arrival time.
Packet = tuple[int, int, int, int, bytes, float]
Submit = Callable[[Callable[[], None]], None]
T = TypeVar("T")


@attrs.frozen
class RecorderLimits:
    """
    Bounds of one recording.

    Attributes:
        max_seconds: audio written at most; later audio is dropped.
        lag: seconds of audio held in memory for late packets.
        skew: how far (seconds) a packet's timestamp may place it from where
            its arrival time would before the stream is placed anew.
        batch_packets: packets per batch handed to the writer.
        max_batches: batches waiting for the writer at most.
    """

    max_seconds: float = 4 * 3600.0
    lag: float = 1.0
    skew: float = 2.0
    batch_packets: int = 50
    max_batches: int = 100

    @property
    def buffer_samples(self) -> int:
        """The most samples one channel holds in memory (past that: dropped)."""
        return int((self.lag + self.skew + 10.0) * RATE)


class ChannelTimeline:
    """Where one channel's packets go in the recording (see the module docstring)."""

    def __init__(self) -> None:
        self.ssrc: int | None = None
        self.anchor_timestamp = 0
        self.anchor_position = 0
        #: Times the channel was placed by arrival (new streams, big jumps).
        self.anchors = 0

    def position(self, ssrc: int, timestamp: int, expected: int, skew: int) -> int:
        """
        The sample position of a packet of ``ssrc`` with RTP ``timestamp``
        that arrived at sample position ``expected``.
        """
        if ssrc == self.ssrc:
            delta = (timestamp - self.anchor_timestamp) & 0xFFFFFFFF
            if delta >= 1 << 31:
                delta -= 1 << 32  # behind the anchor (reordered), modulo 2**32
            position = self.anchor_position + delta
            if abs(position - expected) <= skew:
                return position
        self.ssrc = ssrc
        self.anchor_timestamp = timestamp
        self.anchor_position = expected
        self.anchors += 1
        return expected


class StereoMixer:
    """
    The writer's side of a recording: places packets on the two channels and
    writes the frames that are final. Runs in the writer thread only (tests run
    it directly).

    Args:
        open_file: opens the new WAV file (called on the first write).
        started_at: when the recording started (the relay clock's seconds).
        limits: the recording's bounds.
    """

    log = Logger()

    def __init__(
        self, open_file: Callable[[], BinaryIO], started_at: float, limits: RecorderLimits
    ) -> None:
        self._open = open_file
        self.started_at = started_at
        self.limits = limits
        self._writer: StereoWavWriter | None = None
        self._timelines = (ChannelTimeline(), ChannelTimeline())
        self._buffers = (bytearray(), bytearray())
        self._skew = int(limits.skew * RATE)
        self._room = limits.buffer_samples * SAMPLE_BYTES
        #: Samples of each channel written so far (the same for both).
        self.flushed = 0
        self.batches_done = 0
        self.packets = [0, 0]
        self.unsupported = 0
        self.late_samples = 0
        self.dropped_packets = 0
        self.error: str | None = None
        self.closed = False

    @property
    def frames(self) -> int:
        """Stereo frames in the file."""
        return self._writer.frames if self._writer is not None else 0

    def _position(self, arrival: float) -> int:
        return round((arrival - self.started_at) * RATE)

    def feed(self, packets: Sequence[Packet], now: float) -> None:
        """Place ``packets``; write what is older than ``now`` minus the lag."""
        try:
            if self.error is None and not self.closed:
                for packet in packets:
                    self._place(*packet)
                self._flush(self._position(now - self.limits.lag))
        except OSError as e:
            self._failed(e)
        finally:
            self.batches_done += 1

    def _place(
        self, channel: int, ssrc: int, timestamp: int, payload_type: int, payload: bytes,
        arrival: float,
    ) -> None:  # fmt: skip
        samples = decode(payload_type, payload)
        if samples is None:
            self.unsupported += 1
            return
        self.packets[channel] += 1
        position = self._timelines[channel].position(
            ssrc, timestamp, self._position(arrival), self._skew
        )
        if position < self.flushed:
            cut = (self.flushed - position) * SAMPLE_BYTES
            self.late_samples += min(cut, len(samples)) // SAMPLE_BYTES
            samples = samples[cut:]
            position = self.flushed
            if not samples:
                return
        offset = (position - self.flushed) * SAMPLE_BYTES
        if offset + len(samples) > self._room:
            self.dropped_packets += 1
            return
        buffer = self._buffers[channel]
        if len(buffer) < offset:
            buffer.extend(bytes(offset - len(buffer)))
        buffer[offset : offset + len(samples)] = samples

    def _flush(self, upto: int) -> None:
        count = upto - self.flushed
        if count <= 0:
            return
        size = count * SAMPLE_BYTES
        channels = []
        for buffer in self._buffers:
            chunk = bytes(buffer[:size])
            del buffer[:size]
            channels.append(chunk + bytes(size - len(chunk)))
        if self._writer is None:
            limit = int(self.limits.max_seconds * RATE) * CHANNELS * SAMPLE_BYTES
            self._writer = StereoWavWriter(self._open(), limit)
        self._writer.write(interleave(*channels))
        self.flushed = upto

    def close(self) -> None:
        """Write everything still held and finish the file. Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.error is None:
                held = max(len(b) for b in self._buffers) // SAMPLE_BYTES
                self._flush(self.flushed + held)
                if self._writer is None:  # nothing was heard: an empty file says so
                    self._writer = StereoWavWriter(self._open(), 0)
        except OSError as e:
            self._failed(e)
        finally:
            if self._writer is not None:
                try:
                    self._writer.close()
                except OSError as e:
                    self._failed(e)

    def _failed(self, error: OSError) -> None:
        if self.error is None:
            self.error = f"{type(error).__name__}: {error.strerror or error}"
            self.log.warn("Recording stopped: {error}", error=self.error)


def open_recording(path: str) -> BinaryIO:
    """Create ``path`` (and its directories) for a new recording, private to Warden."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


@implementer(IMediaTap)
class CallRecorder:
    """
    The tap on a media session (the reactor's side): collects packets in
    batches for the writer.

    Args:
        path: the WAV file to create.
        started_at: when the recording starts (the relay clock's seconds).
        submit: runs a callable in the writer thread, in order.
        limits: the recording's bounds.
        open_file: opens the file (default L{open_recording}).
    """

    def __init__(
        self,
        path: str,
        started_at: float,
        submit: Submit,
        limits: RecorderLimits | None = None,
        open_file: Callable[[str], BinaryIO] = open_recording,
    ) -> None:
        self.path = path
        self.limits = limits or RecorderLimits()
        self.mixer = StereoMixer(lambda: open_file(path), started_at, self.limits)
        self._submit = submit
        self._batch: list[Packet] = []
        self._submitted = 0
        #: Packets dropped because the writer was too far behind.
        self.overflow_packets = 0
        self.closed = False

    def rtp(
        self, side: str, ssrc: int, timestamp: int, payload_type: int, payload: bytes, now: float
    ) -> None:
        """One RTP packet relayed from ``side``'s phone (see L{IMediaTap})."""
        if self.closed:
            return
        self._batch.append((side == "b", ssrc, timestamp, payload_type, payload, now))
        if len(self._batch) >= self.limits.batch_packets:
            self._send(now)

    def _send(self, now: float) -> None:
        batch, self._batch = self._batch, []
        if self._submitted - self.mixer.batches_done >= self.limits.max_batches:
            self.overflow_packets += len(batch)
            return
        self._submitted += 1
        mixer = self.mixer
        self._submit(lambda: mixer.feed(batch, now))

    def close(self, now: float) -> None:
        """The session ended (or the recording was stopped): finish the file."""
        if self.closed:
            return
        self._send(now)
        self.closed = True
        self._submit(self.mixer.close)


class WriterThread:
    """
    The one thread every recording writes in (a Twisted thread pool of one
    thread, so work runs in the order submitted). Before L{start} and after
    L{stop} work runs at once in the caller's thread (so files are finished
    at shutdown).

    Args:
        reactor: where L{run}'s results are delivered (None: L{run} only
            runs work in the caller's thread).
        name: the thread's name.
    """

    def __init__(
        self, reactor: IReactorFromThreads | None = None, name: str = "warden-recording"
    ) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)
        self.running = False

    def run(self, work: Callable[[], T]) -> Deferred[T]:
        """Run ``work`` like L{submit}; fire with its result in the reactor thread."""
        if self.running and self._reactor is not None:
            return deferToThreadPool(self._reactor, self._pool, work)
        return maybeDeferred(work)

    def submit(self, work: Callable[[], None]) -> None:
        """Run ``work`` in the writer thread, after the work submitted before."""
        if self.running:
            self._pool.callInThread(work)
        else:
            work()

    def start(self) -> None:
        """Start the thread."""
        if not self.running:
            self._pool.start()
            self.running = True

    def stop(self) -> None:
        """Finish the work submitted, then stop the thread (blocks until done)."""
        if self.running:
            self.running = False
            self._pool.stop()
