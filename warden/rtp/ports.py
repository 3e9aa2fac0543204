"""
The media relay's pool of RTP/RTCP port pairs.

RTP takes an even port and RTCP the next odd one (RFC 3550 §11). Free ports are
kept in a queue: a released port goes to the back, so a port is reused as late as
possible and stray packets of a finished call do not reach the next one; a port
that could not be bound goes to the back too, to be tried again later.
"""

from __future__ import annotations

from collections import deque

from warden.rtp.errors import MediaError


class PortPool:
    """
    Even RTP ports ``p`` with ``low <= p`` and ``p + 1 <= high``.

    Args:
        low: lowest port of the range (rounded up to even).
        high: highest port of the range (an RTCP port at most).

    Raises:
        ValueError: the range holds no pair or leaves 1-65535.
    """

    def __init__(self, low: int, high: int) -> None:
        first = low + (low % 2)
        if not 0 < low <= high <= 65535 or first + 1 > high:
            raise ValueError(f"port range {low}-{high} holds no RTP/RTCP pair")
        self.low = low
        self.high = high
        self._free = deque(range(first, high, 2))
        self._taken: set[int] = set()

    @property
    def size(self) -> int:
        """Pairs in the range."""
        return len(self._free) + len(self._taken)

    @property
    def free(self) -> int:
        """Pairs not taken."""
        return len(self._free)

    @property
    def in_use(self) -> int:
        """Pairs taken."""
        return len(self._taken)

    def take(self) -> int:
        """The next free RTP port; MediaError when every pair is taken."""
        if not self._free:
            raise MediaError(
                f"media port range {self.low}-{self.high} exhausted "
                f"({len(self._taken)} RTP/RTCP pairs in use)"
            )
        port = self._free.popleft()
        self._taken.add(port)
        return port

    def give_back(self, port: int) -> None:
        """Return a taken RTP port; ValueError for a port that is not taken."""
        if port not in self._taken:
            raise ValueError(f"port {port} is not taken from this pool")
        self._taken.remove(port)
        self._free.append(port)
