"""
``SyncPool``: a stand-in for ``adbapi.ConnectionPool`` that runs interactions in
the test's own thread, on a real SQLite database, when the test says so.

By default an interaction runs at once and its Deferred has fired when returned,
so write-behind logic can be tested with ``SynchronousTestCase``. With
``hold = True`` interactions queue up until ``run_next()``, so a test can act
while a transaction is "in progress"; ``fail_next`` makes the next one fail
(rolled back) with the given exception.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from warden.store.sqlite import configure_sqlite_connection


class SyncPool:
    """Runs ``runInteraction`` synchronously on one sqlite3 connection."""

    def __init__(self, path: str = ":memory:") -> None:
        self.connection = sqlite3.connect(path)
        configure_sqlite_connection(self.connection)
        self.hold = False
        self.queue: list[tuple[defer.Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []
        self.failures: list[BaseException] = []
        self.interactions: list[str] = []

    def runInteraction(self, interaction: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.queue.append((d, interaction, args))
        if not self.hold:
            self.run_next()
        return d

    def fail_next(self, exception: BaseException) -> None:
        """Make the next interaction that runs fail with ``exception``."""
        self.failures.append(exception)

    def run_next(self) -> None:
        """Run the oldest queued interaction in a transaction and fire its Deferred."""
        d, interaction, args = self.queue.pop(0)
        self.interactions.append(interaction.__name__)
        cursor = self.connection.cursor()
        try:
            if self.failures:
                raise self.failures.pop(0)
            result = interaction(cursor, *args)
            self.connection.commit()
        except BaseException as e:
            self.connection.rollback()
            d.errback(e)
        else:
            d.callback(result)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run a SELECT directly (outside any interaction) and return the rows."""
        return self.connection.execute(sql, params).fetchall()

    def close(self) -> None:
        self.connection.close()
