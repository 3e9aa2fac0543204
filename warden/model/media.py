"""Value objects shared by every L{warden.interfaces.IMediaRelay} implementation."""

from __future__ import annotations

import attrs

SIDES = ("a", "b")


@attrs.frozen
class MediaSide:
    """
    Where the relay receives one side's media: what the *other* phone is told.

    Side ``a`` faces the caller and side ``b`` the callee: the caller sends to
    side a, whose address the callee never sees; the callee's SDP is rewritten to
    side a's address and ports before it reaches the caller, and the other way
    round.

    Attributes:
        address: the relay's advertised IP address (IPv4 or IPv6).
        rtp_port: even RTP port.
        rtcp_port: RTCP port, ``rtp_port + 1``.
    """

    address: str
    rtp_port: int
    rtcp_port: int


@attrs.frozen
class HoldState:
    """
    The direction each phone last declared for the relayed stream (RFC 3264 §8.4).

    Attributes:
        a: direction in the caller's last SDP (``sendrecv`` before any).
        b: direction in the callee's last SDP.
    """

    a: str = "sendrecv"
    b: str = "sendrecv"

    @property
    def on_hold(self) -> bool:
        """
        Whether media may legitimately stop: a phone declared ``sendonly``,
        ``recvonly`` or ``inactive`` (hold and its answer), ``c=0.0.0.0`` or a
        disabled stream.
        """
        return self.a != "sendrecv" or self.b != "sendrecv"
