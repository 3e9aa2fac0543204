"""
The media relay's pool of RTP/RTCP port pairs.

RTP takes an even port and RTCP the next odd one (RFC 3550 §11). A call's
ports are chosen at random among the free pairs, with the operating system's
cryptographic generator (``secrets``): seeing one call's ports tells nothing
about the next call's, so a stranger cannot aim packets at a call before its
phones do (the "RTP bleed" race, ADR 0013).

A released pair (or one that could not be bound) cools down in a queue before
it may be chosen again: it becomes free once half the range has been released
after it, or earlier when nothing else is free. Stray packets of a finished call
thus rarely reach the next call on the same ports. Taking and giving back cost
O(1) whatever the size of the range.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable

from warden.rtp.errors import MediaError


class PortPool:
    """
    Even RTP ports ``p`` with ``low <= p`` and ``p + 1 <= high``.

    Args:
        low: lowest port of the range (rounded up to even).
        high: highest port of the range (an RTCP port at most).
        choose: ``choose(n)`` returns an index ``0 <= i < n`` into the free
            pairs; by default ``secrets.randbelow``. The free pairs start in
            descending order, so ``lambda n: n - 1`` (what tests use) takes
            the lowest first.

    Raises:
        ValueError: the range holds no pair or leaves 1-65535.
    """

    def __init__(
        self, low: int, high: int, choose: Callable[[int], int] = secrets.randbelow
    ) -> None:
        first = low + (low % 2)
        if not 0 < low <= high <= 65535 or first + 1 > high:
            raise ValueError(f"port range {low}-{high} holds no RTP/RTCP pair")
        self.low = low
        self.high = high
        self._choose = choose
        self._free = list(range(first, high, 2))[::-1]
        self._cooling: deque[int] = deque()
        self._cooling_limit = len(self._free) // 2
        self._taken: set[int] = set()

    @property
    def size(self) -> int:
        """Pairs in the range."""
        return len(self._free) + len(self._cooling) + len(self._taken)

    @property
    def free(self) -> int:
        """Pairs not taken (cooling ones included)."""
        return len(self._free) + len(self._cooling)

    @property
    def in_use(self) -> int:
        """Pairs taken."""
        return len(self._taken)

    def take(self) -> int:
        """A free RTP port chosen at random; MediaError when every pair is taken."""
        free = self._free
        if not free:
            if not self._cooling:
                raise MediaError(
                    f"media port range {self.low}-{self.high} exhausted "
                    f"({len(self._taken)} RTP/RTCP pairs in use)"
                )
            free.append(self._cooling.popleft())
        index = self._choose(len(free))
        port = free[index]
        free[index] = free[-1]  # swap with the last and pop: O(1)
        free.pop()
        self._taken.add(port)
        return port

    def give_back(self, port: int) -> None:
        """Return a taken RTP port; ValueError for a port that is not taken."""
        if port not in self._taken:
            raise ValueError(f"port {port} is not taken from this pool")
        self._taken.remove(port)
        self._cooling.append(port)
        if len(self._cooling) > self._cooling_limit:
            self._free.append(self._cooling.popleft())


def split_ports(port_min: int, port_max: int, count: int) -> list[tuple[int, int]]:
    """
    ``port_min``..``port_max`` cut into ``count`` slices, one per media
    process: each starts on an even port (RTP) and holds at least four; the
    last takes what is left over.

    Raises:
        ValueError: when the range cannot give every slice four ports.
    """
    if count < 1:
        raise ValueError("at least one media process")
    size = (port_max - port_min + 1) // count & ~1
    if size < 4:
        raise ValueError(f"{port_min}-{port_max} cannot give {count} media processes 4 ports each")
    first = port_min + (port_min & 1)
    slices = [(first + i * size, first + (i + 1) * size - 1) for i in range(count)]
    slices[-1] = (slices[-1][0], port_max)
    if slices[-1][1] - slices[-1][0] < 3:
        raise ValueError(f"{port_min}-{port_max} cannot give {count} media processes 4 ports each")
    return slices
