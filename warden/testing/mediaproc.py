"""
A media process in the test's own process (L{warden.rtp.procrelay}): the
control channel's frames go straight to a L{MediaWorker} on a fake network and
back, synchronously, so tests drive the out-of-process relay with a Clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from warden.rtp.control import FrameReader, frame
from warden.rtp.mediaproc import MediaWorker
from warden.rtp.relay import ListenUDP

__all__ = ["LoopbackMediaProcess", "LoopbackSpawner"]


class LoopbackMediaProcess:
    """The transport Warden's protocol writes to; a worker reads it."""

    def __init__(self, protocol: ProcessProtocol, clock: Clock, listen_udp: ListenUDP) -> None:
        self.protocol = protocol
        self.reader = FrameReader()
        self.worker = MediaWorker(clock, listen_udp, self._send)
        self.ended = False
        #: Every command Warden sent, decoded.
        self.commands: list[dict[str, Any]] = []
        #: While True, commands are kept and not handled (a stuck process).
        self.stuck = False
        protocol.makeConnection(self)

    def _send(self, message: dict[str, Any]) -> None:
        if message["op"] == "stats":
            # The worker counts into this process's metrics already: forwarding
            # its totals too would count every packet twice.
            message = {k: v for k, v in message.items() if k != "metrics"}
        if not self.ended:
            self.protocol.outReceived(frame(message))

    def write(self, data: bytes) -> None:
        if self.ended:
            return
        for message in self.reader.feed(data):
            self.commands.append(message)
            if not self.stuck:
                self.worker.handle(message)

    def writeSequence(self, data: list[bytes]) -> None:  # noqa: N802 (Twisted's name)
        self.write(b"".join(data))

    def signalProcess(self, signal: str) -> None:  # noqa: N802 (Twisted's name)
        self.end(Failure(ProcessTerminated(signal=9)))

    def closeStdin(self) -> None:  # noqa: N802 (Twisted's name)
        self.end(Failure(ProcessDone(0)))

    def loseConnection(self) -> None:  # noqa: N802 (Twisted's name)
        self.closeStdin()

    def end(self, reason: Failure) -> None:
        """The process exits (its sockets close with it)."""
        if self.ended:
            return
        self.worker.close()
        self.ended = True
        self.protocol.processEnded(reason)


class LoopbackSpawner:
    """``spawn`` for L{warden.rtp.procrelay.ProcessRelay}: each start, a new loopback process."""

    def __init__(self, clock: Clock, listen_udp: ListenUDP) -> None:
        self.clock = clock
        self.listen_udp = listen_udp
        self.processes: list[LoopbackMediaProcess] = []
        #: When set, the next start raises it.
        self.fail: Exception | None = None

    def __call__(self, protocol: ProcessProtocol) -> LoopbackMediaProcess:
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail
        process = LoopbackMediaProcess(protocol, self.clock, self.listen_udp)
        self.processes.append(process)
        return process

    @property
    def current(self) -> LoopbackMediaProcess:
        """The last process started."""
        return self.processes[-1]
