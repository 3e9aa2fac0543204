"""In-memory L{ICallCounters} and L{IAuthFailureCounter}."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from warden.interfaces import IAuthFailureCounter, ICallCounters


@implementer(ICallCounters)
class MemoryCallCounters:
    """
    Call counts held in this process; several instances given the same
    ``shared`` dict behave like nodes sharing one store.
    """

    def __init__(self, node_id: str = "", shared: dict[str, Counter[str]] | None = None) -> None:
        self._node_id = node_id
        self._by_node: dict[str, Counter[str]] = shared if shared is not None else {}

    def _total(self, number: str) -> int:
        return sum(counts[number] for counts in self._by_node.values())

    def acquire(self, numbers: Sequence[str], limit: int) -> Deferred[bool]:
        """Count a call for each number unless one is at ``limit``."""
        if any(self._total(n) >= limit for n in numbers):
            return defer.succeed(False)
        mine = self._by_node.setdefault(self._node_id, Counter())
        for number in numbers:
            mine[number] += 1
        return defer.succeed(True)

    def release(self, numbers: Sequence[str]) -> Deferred[None]:
        """Count a call less for each number (never below zero)."""
        mine = self._by_node.get(self._node_id, Counter())
        for number in numbers:
            if mine[number] > 1:
                mine[number] -= 1
            else:
                mine.pop(number, None)
        return defer.succeed(None)

    def active(self, number: str) -> Deferred[int]:
        """Fire with the calls ``number`` takes part in, on every node."""
        return defer.succeed(self._total(number))

    def clear_node(self, node_id: str) -> Deferred[int]:
        """Forget the counts of ``node_id``."""
        gone = self._by_node.pop(node_id, Counter())
        return defer.succeed(sum(gone.values()))


@implementer(IAuthFailureCounter)
class MemoryAuthFailureCounter:
    """Failure windows held in this process, timed by ``clock``."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    def record_failure(self, source: str, window: float) -> Deferred[int]:
        """Count a failure of ``source``; fire with its count in the window."""
        now = self._clock.seconds()
        start, count = self._windows.get(source, (now, 0))
        if now - start >= window:
            start, count = now, 0
        self._windows[source] = (start, count + 1)
        return defer.succeed(count + 1)
