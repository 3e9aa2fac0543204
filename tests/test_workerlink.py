"""
The control channel between the SIP worker supervisor and its workers
(L{warden.workerlink}, ADR 0035): questions and answers both ways over a
L{StringTransport} on a L{Clock}, timeouts, hostile messages; and the
supervisor passing worker 0's questions on to every worker
(L{warden.workers.WorkerSupervisor.ask_all}) over in-memory pipes.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from warden.workerlink import ChannelError, ControlChannel
from warden.workers import WorkerSupervisor


def frame(message: Any) -> bytes:
    """One message as it travels: its length, then its JSON."""
    data = json.dumps(message).encode()
    return struct.pack("!I", len(data)) + data


def frames(data: bytes) -> list[Any]:
    """The messages in ``data``."""
    found = []
    while data:
        (length,) = struct.unpack("!I", data[:4])
        found.append(json.loads(data[4 : 4 + length]))
        data = data[4 + length :]
    return found


class ChannelTests(SynchronousTestCase):
    """One end of the channel."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.channel = ControlChannel(self.clock, self.answer, timeout=5.0)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def answer(self, op: str, args: dict[str, Any]) -> Any:
        self.asked.append((op, args))
        if op == "boom":
            raise ValueError("no such thing")
        return {"op": op, **args}

    def sent(self) -> list[Any]:
        data = self.transport.value()
        self.transport.clear()
        return frames(data)

    def test_ask_and_answer(self) -> None:
        """A question goes out with an id; its answer fires the Deferred; the timer is gone."""
        d = self.channel.ask("drain", {"timeout": 3})
        [request] = self.sent()
        self.assertEqual(request, {"id": 1, "op": "drain", "args": {"timeout": 3}})
        self.channel.dataReceived(frame({"re": 1, "result": {"draining": True}}))
        self.assertEqual(self.successResultOf(d), {"draining": True})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_error_answer(self) -> None:
        """An error answer fails the question with ChannelError carrying the text."""
        d = self.channel.ask("metrics")
        self.channel.dataReceived(frame({"re": 1, "error": "unknown operation"}))
        self.assertIn("unknown operation", str(self.failureResultOf(d, ChannelError).value))

    def test_timeout(self) -> None:
        """No answer within the timeout: ChannelError; a late answer is ignored."""
        d = self.channel.ask("metrics", timeout=2.0)
        self.clock.advance(2.0)
        self.failureResultOf(d, ChannelError)
        self.channel.dataReceived(frame({"re": 1, "result": "late"}))

    def test_answers_requests(self) -> None:
        """A request is answered with the handler's result; a failing one with its error."""
        self.channel.dataReceived(frame({"id": 7, "op": "drain_status", "args": {}}))
        self.channel.dataReceived(frame({"id": 8, "op": "boom", "args": {}}))
        self.assertEqual(self.sent(), [
            {"re": 7, "result": {"op": "drain_status"}},
            {"re": 8, "error": "no such thing"},
        ])  # fmt: skip

    def test_hostile_messages_ignored(self) -> None:
        """Not JSON, not an object, no id or op, args not an object: ignored, nothing asked."""
        for data in (b"\xff\xfe", b"[1]", b'{"op": "x"}', b'{"id": 1, "op": "x", "args": 3}'):
            self.channel.dataReceived(struct.pack("!I", len(data)) + data)
        self.assertEqual((self.asked, self.sent()), ([], []))

    def test_too_long_closes(self) -> None:
        """A length over the limit closes the channel; questions open fail."""
        d = self.channel.ask("metrics")
        self.channel.dataReceived(struct.pack("!I", 2**31))
        self.assertTrue(self.transport.disconnecting)
        self.channel.connectionLost()
        self.failureResultOf(d, ChannelError)
        self.failureResultOf(self.channel.ask("metrics"), ChannelError)


class _Loopback:
    """A pipe: what is written reaches ``deliver`` once the clock turns."""

    def __init__(self, clock: Clock, deliver: Any) -> None:
        self._clock = clock
        self._deliver = deliver
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        self._clock.callLater(0, self._deliver, data)

    def writeSequence(self, data: list[bytes]) -> None:  # noqa: N802
        self.write(b"".join(data))

    def loseConnection(self) -> None:  # noqa: N802
        self.disconnecting = True


class MemoryWorker:
    """A spawned worker whose channel answers with ``answer`` through in-memory pipes."""

    def __init__(self, clock: Clock, index: int, protocol: ProcessProtocol, answer: Any) -> None:
        self.index = index
        self.protocol = protocol
        self.signals: list[str] = []
        self.channel = ControlChannel(clock, answer)
        self.channel.makeConnection(
            _Loopback(clock, lambda data: protocol.childDataReceived(4, data))
        )
        self._clock = clock

    def writeToChild(self, fd: int, data: bytes) -> None:  # noqa: N802
        assert fd == 3
        self._clock.callLater(0, self.channel.dataReceived, data)

    def closeChildFD(self, fd: int) -> None:  # noqa: N802
        pass

    def signalProcess(self, name: str) -> None:  # noqa: N802
        self.signals.append(name)


class MemoryPbx:
    """
    A supervisor of ``count`` in-memory workers; ``answers(index)`` makes
    worker ``index``'s handler.
    """

    def __init__(self, clock: Clock, count: int, answers: Any) -> None:
        self.clock = clock
        self.workers: list[MemoryWorker] = []
        self._answers = answers
        self.supervisor = WorkerSupervisor(clock, count, self.spawn)  # type: ignore[arg-type]
        self.supervisor.startService()

    def spawn(self, index: int, protocol: ProcessProtocol) -> MemoryWorker:
        worker = MemoryWorker(self.clock, index, protocol, self._answers(index))
        self.workers.append(worker)
        return worker

    def current(self, index: int) -> MemoryWorker:
        """The latest process of worker ``index``."""
        return [w for w in self.workers if w.index == index][-1]

    def settle(self) -> None:
        for _ in range(20):
            self.clock.advance(0)


class ForwardingTests(SynchronousTestCase):
    """Worker 0 asks the supervisor; the supervisor asks every worker."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.asked: list[tuple[int, str, dict[str, Any]]] = []

        def answers(index: int) -> Any:
            def answer(op: str, args: dict[str, Any]) -> Any:
                self.asked.append((index, op, args))
                return {"worker": index, "op": op}

            return answer

        self.pbx = MemoryPbx(self.clock, 2, answers)

    def test_all_through_worker_0(self) -> None:
        """Worker 0's "all" reaches both workers, and each answer comes back to it."""
        d = self.pbx.current(0).channel.ask("all", {"op": "drain_status", "args": {}})
        self.pbx.settle()
        answer = self.successResultOf(d)
        self.assertEqual((answer["count"], answer["up"]), (2, 2))
        self.assertEqual(
            [(e["worker"], e["up"], e["result"]["op"]) for e in answer["workers"]],
            [(0, True, "drain_status"), (1, True, "drain_status")],
        )

    def test_only_worker_0_and_known_operations(self) -> None:
        """Worker 1 may not ask; nor may worker 0 ask for an unknown operation."""
        for index, op in ((1, "drain"), (0, "shutdown")):
            d = self.pbx.current(index).channel.ask("all", {"op": op, "args": {}})
            self.pbx.settle()
            self.failureResultOf(d, ChannelError)
        self.assertEqual(self.asked, [])

    def test_worker_down_and_silent(self) -> None:
        """A worker not running is reported down; one that does not answer, with an error."""
        self.pbx.supervisor.ended(1, None, 9)
        d = self.pbx.supervisor.ask_all("metrics", {})
        self.pbx.settle()
        answer = self.successResultOf(d)
        self.assertEqual(answer["up"], 1)
        self.assertEqual(answer["workers"][1], {"worker": 1, "up": False, "error": "not running"})
        self.clock.advance(1.0)  # the restart
        self.pbx.current(1).writeToChild = lambda fd, data: None  # type: ignore[method-assign]
        d = self.pbx.supervisor.ask_all("metrics", {})
        self.clock.advance(5.0)
        self.assertIn("no answer", self.successResultOf(d)["workers"][1]["error"])

    def test_restarted_worker_drains(self) -> None:
        """A worker started after a drain was asked is told to drain, with the time left."""
        d = self.pbx.supervisor.ask_all("drain", {"timeout": 30})
        self.pbx.settle()
        self.successResultOf(d)
        self.clock.advance(10.0)
        self.pbx.supervisor.ended(1, None, 9)
        self.clock.advance(1.0)  # restarted
        self.pbx.settle()
        self.assertEqual(self.asked[-1], (1, "drain", {"timeout": 19.0}))

    def test_worker_pipe_closed(self) -> None:
        """A worker whose pipe is already closed (ending) is asked in vain: an error, no crash."""

        def closed(fd: int, data: bytes) -> None:
            raise KeyError(fd)

        self.pbx.current(1).writeToChild = closed  # type: ignore[method-assign]
        d = self.pbx.supervisor.ask_all("drain_status", {})
        self.pbx.settle()
        self.clock.advance(5.0)
        answer = self.successResultOf(d)
        self.assertIn("result", answer["workers"][0])
        self.assertIn("no answer", answer["workers"][1]["error"])
