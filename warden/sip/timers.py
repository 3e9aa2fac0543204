"""
RFC 3261 timer values (§17, Table 4), all derived from one ``TimerSettings``.

Nothing else in Warden writes 64*T1 or 32 s: ask this class.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class TimerSettings:
    """
    T1 (RTT estimate), T2 (maximum retransmit interval for non-INVITE requests and
    INVITE responses) and T4 (maximum time a message stays in the network), seconds.

    ``trying_delay`` is how long an INVITE server transaction waits for its TU
    before it sends "100 Trying" itself (RFC 3261 §17.2.1: 200 ms).

    ``timer_c`` bounds how long an INVITE server transaction waits for its TU's
    final response, as Timer C bounds a proxy's wait (RFC 3261 §16.6 step 11:
    "greater than 3 minutes"); L{lasting_ring} lengthens it past the ring time.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trying_delay: float = 0.2
    timer_c: float = 180.0

    def lasting_ring(self, ring_timeout: float) -> TimerSettings:
        """These settings with Timer C outlasting a ring of ``ring_timeout`` seconds."""
        return attrs.evolve(self, timer_c=max(self.timer_c, ring_timeout + self.timer_b))

    @property
    def server_limit_non_invite(self) -> float:
        """
        How long a non-INVITE server transaction waits for its TU's final response:
        the client gave up at Timer F, and a request the TU forwarded has met its
        own Timer F, T4 before this.
        """
        return self.timer_f + self.t4

    @property
    def timer_a(self) -> float:
        """INVITE request retransmit interval, initially (UDP only); doubles."""
        return self.t1

    @property
    def timer_b(self) -> float:
        """INVITE transaction timeout."""
        return 64 * self.t1

    def timer_d(self, reliable: bool) -> float:
        """Wait time for response retransmissions (INVITE client): >32 s, 0 reliable."""
        return 0.0 if reliable else max(32.0, 64 * self.t1)

    @property
    def timer_e(self) -> float:
        """Non-INVITE request retransmit interval, initially (UDP only)."""
        return self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE transaction timeout."""
        return 64 * self.t1

    @property
    def timer_g(self) -> float:
        """INVITE response retransmit interval, initially (UDP only)."""
        return self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for ACK receipt."""
        return 64 * self.t1

    def timer_i(self, reliable: bool) -> float:
        """Wait time for ACK retransmissions: T4 for UDP, 0 reliable."""
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        """Wait time for non-INVITE request retransmissions: 64*T1 UDP, 0 reliable."""
        return 0.0 if reliable else 64 * self.t1

    def timer_k(self, reliable: bool) -> float:
        """Wait time for non-INVITE response retransmissions: T4 UDP, 0 reliable."""
        return 0.0 if reliable else self.t4

    @property
    def timer_l(self) -> float:
        """Wait time for INVITE retransmissions after a 2xx (RFC 6026 §7.1, Accepted)."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """Wait time for 2xx retransmissions to an INVITE (RFC 6026 §7.2, Accepted)."""
        return 64 * self.t1
