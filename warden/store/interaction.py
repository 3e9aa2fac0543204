"""
Named database interactions: the one place a store method meets ``adbapi``.

Every store method runs exactly one interaction through L{run_interaction}; the
interaction's name ("get_extension", "flush_bindings", ...) labels the metric
``warden_store_interactions_total{interaction, outcome}``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from prometheus_client import Counter, Histogram
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

_P = ParamSpec("_P")
_T = TypeVar("_T")

INTERACTIONS = Counter(
    "warden_store_interactions_total",
    "Database interactions run by the stores, by name and outcome.",
    ["interaction", "outcome"],
)


INTERACTION_SECONDS = Histogram(
    "warden_store_interaction_seconds",
    "Time each named database interaction took in the pool's thread",
    ["interaction"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)


@functools.lru_cache(maxsize=256)
def _timed(
    name: str, interaction: Callable[Concatenate[adbapi.Transaction, _P], _T]
) -> Callable[Concatenate[adbapi.Transaction, _P], _T]:
    """
    ``interaction``, timed by prometheus_client's timer where it runs (the
    pool's thread); made once per name and interaction (the stores pass the
    same functions every time).
    """
    histogram = INTERACTION_SECONDS.labels(name)

    @functools.wraps(interaction)
    def timed(txn: adbapi.Transaction, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with histogram.time():
            return interaction(txn, *args, **kwargs)

    return timed


@functools.lru_cache(maxsize=512)
def _counter(name: str, outcome: str) -> Counter:
    """The interactions counter's child for ``name`` and ``outcome``, looked up once."""
    return INTERACTIONS.labels(interaction=name, outcome=outcome)


def count_interaction(name: str, outcome: str) -> None:
    """Count one interaction named ``name`` that ended ``ok`` or in ``error``."""
    _counter(name, outcome).inc()


def run_interaction(
    pool: adbapi.ConnectionPool,
    name: str,
    interaction: Callable[Concatenate[adbapi.Transaction, _P], _T],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> Deferred[_T]:
    """
    Run ``interaction(txn, *args, **kwargs)`` in one transaction of ``pool``.

    The transaction commits when ``interaction`` returns and rolls back when it
    raises; the Deferred fires with its result or its exception.

    Args:
        pool: the connection pool.
        name: the interaction's name, as it appears in metrics.
        interaction: the function run in the pool's thread.
    """
    d: Deferred[_T] = pool.runInteraction(  # type: ignore[no-untyped-call]
        _timed(name, interaction), *args, **kwargs
    )

    def ok(result: _T) -> _T:
        count_interaction(name, "ok")
        return result

    def failed(reason: Failure) -> Failure:
        count_interaction(name, "error")
        return reason

    d.addCallbacks(ok, failed)
    return d
