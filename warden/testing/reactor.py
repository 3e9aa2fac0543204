"""
A reactor for building Warden in unit tests (L{warden.server.build_server}):
L{MemoryWardenReactor} is a C{MemoryReactorClock} that also provides what
L{warden.interfaces.IWardenReactor} adds to it: UDP ports bound on a
L{FakeNetwork}, and a thread pool that runs each task at once, in the caller;
L{seconds_until_changed} measures a wait on a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from warden.interfaces import IWardenReactor
from warden.testing.rtpnet import FakeNetwork


class ImmediateThreadPool(ThreadPool):
    """A thread pool that runs every task at once, in the calling thread."""

    def __init__(self) -> None:
        super().__init__(minthreads=0, maxthreads=1, name="immediate")

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, Any], object] | None,
        func: Callable[..., Any],
        *args: Any,
        **kw: Any,
    ) -> None:
        """Run ``func`` now; hand ``onResult`` its result or its failure."""
        try:
            result = func(*args, **kw)
        except BaseException:
            if onResult is not None:
                onResult(False, Failure())
            return
        if onResult is not None:
            onResult(True, result)


@implementer(IWardenReactor)
class MemoryWardenReactor(MemoryReactorClock):
    """
    A MemoryReactorClock with UDP (on ``network``), an immediate thread pool and
    Warden's media process (a loopback worker in this process).

    Attributes:
        network: where ``listenUDP`` binds its ports.
    """

    def __init__(self, network: FakeNetwork | None = None) -> None:
        super().__init__()
        self.network = network if network is not None else FakeNetwork()
        self._pool = ImmediateThreadPool()
        #: The media processes started (L{spawnProcess}).
        self.processes: list[Any] = []

    def listenUDP(
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> IListeningPort:
        """Bind ``port`` on the fake network."""
        return self.network.listen_udp(port, protocol, interface)

    def getThreadPool(self) -> ThreadPool:
        """The immediate pool."""
        return self._pool

    def callInThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``callable`` now."""
        callable(*args, **kwargs)

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``callable`` now (there is only one thread)."""
        callable(*args, **kwargs)

    def suggestThreadPoolSize(self, size: int) -> None:
        """Nothing to size."""

    def spawnProcess(  # noqa: N802 (Twisted's name)
        self, protocol: ProcessProtocol, executable: str, args: Sequence[str], **kw: Any
    ) -> Any:
        """
        Start Warden's media process (``-m warden.rtp.mediaproc``, ADR 0033) as
        a loopback worker on ``network``; no other program can be started.
        """
        from warden.testing.mediaproc import LoopbackMediaProcess

        if list(args[1:]) != ["-m", "warden.rtp.mediaproc"]:
            raise NotImplementedError(f"MemoryWardenReactor cannot run {list(args)!r}")
        process = LoopbackMediaProcess(protocol, self, self.network.listen_udp)
        self.processes.append(process)
        return process


def seconds_until_changed(clock: Clock, value: Callable[[], object], step: float) -> float:
    """
    Advance ``clock`` ``step`` seconds at a time until ``value()`` differs from
    what it was at the call; the seconds advanced (a multiple of ``step``).
    """
    before = value()
    waited = 0.0
    while value() == before:
        clock.advance(step)
        waited += step
    return waited
