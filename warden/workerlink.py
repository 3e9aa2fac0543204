"""
The control channel between the SIP worker supervisor and its workers
(ADR 0035): a pair of pipes per worker, set up by the supervisor when it
spawns the worker (the worker's file descriptors 3, which it reads, and 4,
which it writes), carrying length-prefixed JSON messages both ways.

A message is a request ``{"id": N, "op": NAME, "args": {...}}`` or the answer
to one, ``{"re": N, "result": ...}`` or ``{"re": N, "error": TEXT}``. The
supervisor asks a worker to drain, for its drain status and for its metrics;
worker 0 (the one serving the admin API) asks the supervisor to put a
question to every worker (``op`` "all"), and gets each worker's answer.

Only the supervisor and its own children hold the pipes; still, every message
is bounded in size, must be a JSON object, and an unknown operation is
answered with an error, never a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

#: The longest message: a worker's whole metrics exposition fits with room.
MAX_MESSAGE = 32 * 1024 * 1024
#: Seconds to wait for an answer.
ANSWER_TIMEOUT = 5.0
#: The worker's end of the pipes.
WORKER_READ_FD = 3
WORKER_WRITE_FD = 4

#: Answers one request: (operation, arguments) -> a JSON value or its Deferred.
Handler = Callable[[str, dict[str, Any]], Any]


def _cancel(result: Any, call: IDelayedCall) -> Any:
    if call.active():
        call.cancel()
    return result


class ChannelError(Exception):
    """No answer: the other end answered an error, went away or was too slow."""


class ControlChannel(Int32StringReceiver):
    """
    One end of the channel: asks questions and answers them.

    Args:
        clock: times the answers out.
        handler: answers the other end's requests (an exception is sent back
            as an error message).
        timeout: seconds an answer may take.
    """

    MAX_LENGTH = MAX_MESSAGE
    log = Logger()

    def __init__(self, clock: IReactorTime, handler: Handler, timeout: float = ANSWER_TIMEOUT):
        self._clock = clock
        self._handler = handler
        self._timeout = timeout
        self._next = 0
        self._pending: dict[int, Deferred[Any]] = {}
        self.connected = False

    def connectionMade(self) -> None:
        """Ready to ask."""
        self.connected = True

    def ask(
        self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Deferred[Any]:
        """
        Ask the other end ``op`` with ``args``; fires with its result, or fails
        with L{ChannelError} (after ``timeout`` seconds, or the channel's).
        """
        if not self.connected:
            return defer.fail(ChannelError("not connected"))
        self._next += 1
        ident = self._next
        d: Deferred[Any] = Deferred()
        self._pending[ident] = d
        wait = self._timeout if timeout is None else timeout
        call = self._clock.callLater(wait, self._expire, ident, wait)
        d.addBoth(_cancel, call)
        self._send({"id": ident, "op": op, "args": args or {}})
        return d

    def _expire(self, ident: int, wait: float) -> None:
        d = self._pending.pop(ident, None)
        if d is not None:
            d.errback(ChannelError(f"no answer within {wait:g} s"))

    def _send(self, message: dict[str, Any]) -> None:
        if self.transport is not None and self.connected:
            self.sendString(json.dumps(message, separators=(",", ":")).encode())  # type: ignore[no-untyped-call]

    def stringReceived(self, string: bytes) -> None:
        """A request (answered) or an answer (fires its Deferred)."""
        try:
            message = json.loads(string)
        except ValueError:
            self.log.warn("Worker channel: a message that is not JSON, ignored")
            return
        if not isinstance(message, dict):
            self.log.warn("Worker channel: a message that is not an object, ignored")
            return
        if "re" in message:
            d = self._pending.pop(message["re"], None) if isinstance(message["re"], int) else None
            if d is None:
                return  # timed out already
            if "error" in message:
                d.errback(ChannelError(str(message["error"])))
            else:
                d.callback(message.get("result"))
            return
        ident, op, args = message.get("id"), message.get("op"), message.get("args")
        if not isinstance(ident, int) or not isinstance(op, str) or not isinstance(args, dict):
            self.log.warn("Worker channel: a malformed request, ignored")
            return
        d = defer.maybeDeferred(self._handler, op, args)
        d.addCallbacks(
            lambda result: self._send({"re": ident, "result": result}),
            lambda failure: self._failed(ident, op, failure),
        )

    def _failed(self, ident: int, op: str, failure: Failure) -> None:
        if not failure.check(ChannelError, ValueError):  # type: ignore[no-untyped-call]
            self.log.failure("Worker channel: {op} failed", failure, op=op)
        self._send({"re": ident, "error": str(failure.value) or type(failure.value).__name__})

    def lengthLimitExceeded(self, length: int) -> None:  # noqa: N802 (Twisted's name)
        """A message too long: the channel is closed (the sender is broken)."""
        self.log.error("Worker channel: a message of {length} bytes, closing", length=length)
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Every question still open fails."""
        self.connected = False
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(ChannelError("the channel closed"))


class WorkerLinkService(service.Service):
    """
    In a worker started by the supervisor: the channel on descriptors 3 and 4,
    opened when Warden starts. A worker started by hand (no such descriptors)
    runs without it.
    """

    log = Logger()

    def __init__(self, reactor: Any, channel: ControlChannel) -> None:
        self._reactor = reactor
        self.channel = channel

    def startService(self) -> None:
        """Open the channel."""
        service.Service.startService(self)  # type: ignore[no-untyped-call]
        try:
            os.fstat(WORKER_READ_FD)
            os.fstat(WORKER_WRITE_FD)
        except OSError:
            self.log.warn(
                "No channel to the worker supervisor: drain and /metrics are this worker's"
            )
            return
        from twisted.internet import stdio

        open_pipes: Any = stdio.StandardIO  # the POSIX one takes the descriptors
        open_pipes(
            self.channel, stdin=WORKER_READ_FD, stdout=WORKER_WRITE_FD, reactor=self._reactor
        )
