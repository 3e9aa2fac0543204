"""
Named database interactions: the one place a store method meets ``adbapi``.

Every store method runs exactly one interaction through L{run_interaction}; the
interaction's name ("get_extension", "flush_bindings", ...) labels the metric
``warden_store_interactions_total{interaction, outcome}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from prometheus_client import Counter
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


def _count(name: str, outcome: str) -> None:
    INTERACTIONS.labels(interaction=name, outcome=outcome).inc()


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
        interaction, *args, **kwargs
    )

    def ok(result: _T) -> _T:
        _count(name, "ok")
        return result

    def failed(reason: Failure) -> Failure:
        _count(name, "error")
        return reason

    d.addCallbacks(ok, failed)
    return d
