"""
Fuzz the whole request path on UDP: transport, transaction layer, core checks,
registrar and call controller with digest authentication, as the composition
root builds them, over memory stores and a memory reactor
(L{warden.testing.sipstack.FakeSipStack}). Every datagram must get its answer
or be dropped without a logged error or traceback, and once every timer has run
no transaction may be left (a leak grows with every packet). Anything else is a
crash.
"""

from __future__ import annotations

from typing import Any

import _harness
import atheris

with atheris.instrument_imports(include=["warden"]):
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher

    from warden.sip.timers import TimerSettings
    from warden.testing.sipstack import FakeSipStack

#: Long enough for every server transaction to end: Timer C, then Timer H.
_LONGEST = TimerSettings().timer_c + TimerSettings().timer_h
#: Datagrams one stack serves before a fresh one (the auth throttle would block).
_STACK_LIFETIME = 200
_errors: list[dict[str, Any]] = []
_state: dict[str, Any] = {"stack": None, "served": 0}


def _observe(event: dict[str, Any]) -> None:
    if event.get("log_failure") is not None or event.get("log_level") in (
        LogLevel.error,
        LogLevel.critical,
    ):
        _errors.append(event)


def _stack() -> FakeSipStack:
    if _state["stack"] is None or _state["served"] >= _STACK_LIFETIME:
        _state["stack"], _state["served"] = FakeSipStack(), 0
    _state["served"] += 1
    stack: FakeSipStack = _state["stack"]
    return stack


def check(data: bytes) -> None:
    """The fuzz target: one datagram from a phone, then every timer."""
    stack = _stack()
    stack.udp.datagramReceived(data, ("192.0.2.10", 5062))
    stack.clock.advance(_LONGEST)
    if _errors:
        event = _errors[0]
        _errors.clear()
        raise AssertionError(f"logged: {formatEvent(event)} {event.get('log_failure')}")
    if len(stack.transactions):
        raise AssertionError(f"{len(stack.transactions)} transactions left after every timer")


def seeds() -> list[bytes]:
    """The torture corpus messages."""
    return _harness.corpus_messages()


if __name__ == "__main__":
    globalLogPublisher.addObserver(_observe)
    _harness.run(check, seeds())
