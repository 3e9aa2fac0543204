"""
Session timers (RFC 4028) on each leg of a call.

Each leg negotiates its own interval and refresher. When Warden is the
refresher it re-INVITEs the phone with the SDP it last sent it at half the
interval (§10); when the phone is, Warden expects a re-INVITE or UPDATE within
the interval and hangs the call up (BYE on both legs) if none comes, a little
before the interval runs out (§10: minus the smaller of 32 s and a third).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from warden.digits import parse_uint
from warden.errors import SipError
from warden.sip.headers import param_value, parse_params
from warden.sip.message import Message

MIN_SE = 90
DEFAULT_SE = 1800


def session_expires(message: Message) -> tuple[int, str | None] | None:
    """``(interval, refresher)`` from Session-Expires (compact ``x``), or None."""
    value = message.get("Session-Expires")
    if value is None:
        return None
    number, _, rest = value.partition(";")
    interval = parse_uint(number.strip(), 2**32 - 1, max_digits=10)
    if interval is None:
        raise SipError(400, "Bad Session-Expires")
    refresher = param_value(parse_params(";" + rest), "refresher") if rest else None
    return interval, refresher


def supports_timer(message: Message) -> bool:
    """True when the peer lists ``timer`` in Supported or Require."""
    tags = message.get_all("Supported") + message.get_all("Require")
    return "timer" in (t.strip().lower() for t in tags)


def check_interval(message: Message) -> None:
    """422 for an interval below our minimum (RFC 4028 §8.1)."""
    found = session_expires(message)
    if found is not None and found[0] < MIN_SE:
        raise SipError(422, "Session Interval Too Small", (("Min-SE", str(MIN_SE)),))


class SessionTimer:
    """
    One leg's timer.

    Args:
        clock: time source.
        interval: the negotiated session interval.
        we_refresh: True when Warden refreshes this leg.
        refresh: sends a refresh (when ``we_refresh``).
        expired: called when the phone failed to refresh in time.
    """

    def __init__(
        self,
        clock: IReactorTime,
        interval: int,
        we_refresh: bool,
        refresh: Callable[[], None],
        expired: Callable[[], None],
    ) -> None:
        self._clock = clock
        self.interval = interval
        self.we_refresh = we_refresh
        self._refresh = refresh
        self._expired = expired
        self._call: IDelayedCall | None = None
        self.restart()

    def restart(self) -> None:
        """The session was just refreshed: start the interval again."""
        self.cancel()
        if self.we_refresh:
            self._call = self._clock.callLater(self.interval / 2, self._fire_refresh)
        else:
            grace = min(32.0, self.interval / 3)
            self._call = self._clock.callLater(self.interval - grace, self._fire_expired)

    def _fire_refresh(self) -> None:
        self._call = None
        self._refresh()
        self.restart()

    def _fire_expired(self) -> None:
        self._call = None
        self._expired()

    def cancel(self) -> None:
        """Stop the timer."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
