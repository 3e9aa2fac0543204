"""
The embedded SQLite database: its connection pool.

One ``adbapi`` connection (``cp_min=cp_max=1``) in WAL mode serves every store, so
interactions run one at a time, in the order they were issued. The stores on it
are the SQL layer's (L{warden.store.directory}, L{warden.store.location},
L{warden.store.cdr}), shared with PostgreSQL through L{warden.store.dialect}.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.enterprise import adbapi

__all__ = ["configure_sqlite_connection", "open_sqlite_pool"]


def configure_sqlite_connection(connection: sqlite3.Connection) -> None:
    """Set the pragmas every Warden connection uses (WAL, busy timeout, foreign keys)."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")
    connection.execute("PRAGMA foreign_keys=ON")


def open_sqlite_pool(path: str) -> adbapi.ConnectionPool:
    """
    Open the connection pool for the SQLite database at ``path``.

    Creates the parent directory if needed. One connection, usable from the pool's
    thread, in WAL mode with ``synchronous=NORMAL``, a 5 s busy timeout and foreign
    keys enforced. The pool connects once the reactor runs; the caller closes it.
    """
    if path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return adbapi.ConnectionPool(  # type: ignore[no-untyped-call]
        "sqlite3",
        path,
        cp_min=1,
        cp_max=1,
        check_same_thread=False,
        cp_openfun=configure_sqlite_connection,
    )
