"""
SQL storage of the callfeatures plugin, one layer for SQLite and PostgreSQL:
each extension's forwarding and do-not-disturb (L{ICallFeatureStore}); table
from schema ``0010_call_features``. A row is kept only while a feature is set.

Each method is one named interaction (``warden_store_interactions_total``; see
L{warden.store.dialect}).
"""

from __future__ import annotations

import builtins
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.interfaces import ICallFeatureStore
from warden.model.features import CallFeatures
from warden.store.dialect import Cursor, database
from warden.store.pgpool import PostgreSQLPool

__all__ = ["SQLCallFeatureStore"]

_COLUMNS = "number, forward_all, forward_busy, forward_no_answer, dnd"


def _features(row: tuple[Any, ...]) -> CallFeatures:
    number, forward_all, forward_busy, forward_no_answer, dnd = row
    return CallFeatures(number, forward_all, forward_busy, forward_no_answer, bool(dnd))


async def _get_txn(cursor: Cursor, number: str) -> CallFeatures:
    await cursor.execute(f"SELECT {_COLUMNS} FROM call_features WHERE number = ?", (number,))
    row = cursor.fetchone()
    return CallFeatures(number) if row is None else _features(row)


async def _set_txn(cursor: Cursor, f: CallFeatures) -> None:
    if f.is_default:
        await cursor.execute("DELETE FROM call_features WHERE number = ?", (f.number,))
        return
    await cursor.execute(
        f"INSERT INTO call_features ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (number) DO UPDATE SET forward_all = excluded.forward_all,"
        " forward_busy = excluded.forward_busy,"
        " forward_no_answer = excluded.forward_no_answer, dnd = excluded.dnd",
        (f.number, f.forward_all, f.forward_busy, f.forward_no_answer, f.dnd),
    )


async def _remove_txn(cursor: Cursor, number: str) -> bool:
    await cursor.execute("DELETE FROM call_features WHERE number = ?", (number,))
    return bool(cursor.rowcount)


async def _list_txn(cursor: Cursor) -> list[CallFeatures]:
    await cursor.execute(f"SELECT {_COLUMNS} FROM call_features ORDER BY number")
    return [_features(row) for row in cursor.fetchall()]


@implementer(ICallFeatureStore)
class SQLCallFeatureStore:
    """L{ICallFeatureStore} on the shared SQLite or PostgreSQL pool."""

    def __init__(self, pool: adbapi.ConnectionPool | PostgreSQLPool) -> None:
        self._db = database(pool)

    def get_features(self, number: str) -> Deferred[CallFeatures]:
        """See L{ICallFeatureStore.get_features}."""
        return self._db.run("get_call_features", _get_txn, number)

    def set_features(self, features: CallFeatures) -> Deferred[None]:
        """See L{ICallFeatureStore.set_features}."""
        return self._db.run("set_call_features", _set_txn, features)

    def remove_features(self, number: str) -> Deferred[bool]:
        """See L{ICallFeatureStore.remove_features}."""
        return self._db.run("remove_call_features", _remove_txn, number)

    def list_features(self) -> Deferred[builtins.list[CallFeatures]]:
        """See L{ICallFeatureStore.list_features}."""
        return self._db.run("list_call_features", _list_txn)
