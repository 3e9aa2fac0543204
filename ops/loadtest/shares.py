"""
Splitting one load test between generator processes: share ``index`` of
``count`` takes a contiguous, disjoint slice of the users (together the shares
cover every user exactly once), ``1/count`` of each rate, and its part of each
count (``--total-calls``, ``--concurrent-calls``, ``--max-pending``: the
remainder goes one each to the first shares). A share's callers call its own
callees, so every process answers the calls it places (ADR 0030).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from .options import Settings


def part(total: int, count: int, index: int) -> int:
    """Share ``index``'s part of ``total`` split ``count`` ways (the first get the remainder)."""
    return total // count + (1 if index < total % count else 0)


def offset(total: int, count: int, index: int) -> int:
    """Where share ``index``'s part of ``total`` begins (the sum of the parts before it)."""
    return index * (total // count) + min(index, total % count)


@attrs.frozen
class Share:
    """
    What one generator process runs of the whole test.

    Attributes:
        index: this share (0-based).
        count: how many shares the test is split into.
        user_start: index of the first of its users in the whole list.
        user_end: one past its last user.
        register_rate, call_rate: its rates (per second).
        total_calls, concurrent_calls, max_pending: its counts.
    """

    index: int
    count: int
    user_start: int
    user_end: int
    register_rate: float
    call_rate: float
    total_calls: int
    concurrent_calls: int
    max_pending: int

    @classmethod
    def of(cls, settings: Settings, index: int, count: int) -> Share:
        """Share ``index`` of ``count`` of the whole run ``settings``."""
        return cls(
            index=index,
            count=count,
            user_start=offset(settings.users, count, index),
            user_end=offset(settings.users, count, index) + part(settings.users, count, index),
            register_rate=settings.register_rate / count,
            call_rate=settings.call_rate / count,
            total_calls=part(settings.total_calls, count, index),
            concurrent_calls=part(settings.concurrent_calls, count, index),
            max_pending=max(1, part(settings.max_pending, count, index)),
        )

    def apply(self, settings: Settings) -> Settings:
        """The settings this share runs with (its users, rates and counts)."""
        return attrs.evolve(
            settings,
            users=self.user_end - self.user_start,
            register_rate=self.register_rate,
            call_rate=self.call_rate,
            total_calls=self.total_calls,
            concurrent_calls=self.concurrent_calls,
            max_pending=self.max_pending,
        )

    def as_dict(self, first_user: str | None, last_user: str | None) -> dict[str, Any]:
        """JSON-ready, with the names of its first and last user."""
        return {**attrs.asdict(self), "first_user": first_user, "last_user": last_user}


def check_split(settings: Settings, count: int) -> str | None:
    """Why ``settings`` cannot be split ``count`` ways (None when it can)."""
    if count == 1:
        return None
    calls = settings.test_type != "registrations"
    least = 2 if calls else 1
    if settings.users // count < least:
        return f"--users: {settings.users} cannot give each of {count} shares {least}"
    if calls and settings.total_calls < count:
        return f"--total-calls: {settings.total_calls} cannot give each of {count} shares a call"
    if calls and settings.concurrent_calls < count:
        return (
            f"--concurrent-calls: {settings.concurrent_calls} cannot give each of "
            f"{count} shares one"
        )
    return None
