"""
Opening the durable stores a store URL names: one place for ``twistd warden``,
``wardenctl`` and ``wardenctl migrate-store``.

L{check_store} runs before the reactor (at option parsing): it reads the password
and, for PostgreSQL, opens one blocking connection, so that a wrong URL, password
or database stops start-up with one clear line. L{open_stores} then builds the
pool and the stores on the reactor.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any

import attrs
import psycopg2
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from warden.errors import StoreError
from warden.interfaces import IAdminStore, IAuditLog, ICallRecordStore, IDirectory, ILiveCalls
from warden.store.cdr import SQLCallRecordStore, SQLLiveCalls
from warden.store.directory import SQLDirectory
from warden.store.location import SQLLocationService
from warden.store.migrate import apply_migrations
from warden.store.pgpool import PostgreSQLPool, connect_txpostgres, one_line
from warden.store.sqlite import open_sqlite_pool
from warden.store.url import StoreURL, read_password, redact_dsn

__all__ = ["Stores", "admin_stores", "check_store", "connect_kwargs", "open_stores"]

# Seconds libpq may take to connect; keep-alives notice a dead server within ~15 s;
# no statement may run longer than 30 s (a hung query never holds a connection).
_CONNECT_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "application_name": "warden",
    "options": "-c statement_timeout=30000",
}


def connect_kwargs(
    url: StoreURL, password_file: str = "", environ: dict[str, str] | None = None
) -> dict[str, str]:
    """
    libpq parameters for ``url``: Warden's defaults, the URL's own parameters
    (which win), and the password (L{read_password} with ``environ``, by
    default the process environment).

    Raises:
        StoreError: the password file cannot be read.
    """
    kwargs = dict(_CONNECT_DEFAULTS)
    kwargs.update(url.connect_kwargs(read_password(password_file, environ)))
    return kwargs


def check_store(
    url: StoreURL, password_file: str = "", environ: dict[str, str] | None = None
) -> None:
    """
    Fail now, with one line, if the store cannot be used: an SQLite file whose
    directory cannot be created, an unreadable password file, or a PostgreSQL
    server that refuses the connection (wrong host, password, database).

    Runs before the reactor starts; blocks for at most libpq's connect timeout.

    Raises:
        StoreError: what is wrong, naming the URL (never the password).
    """
    if url.dialect == "sqlite":
        directory = os.path.dirname(os.path.abspath(url.path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise StoreError(f"store {url}: cannot create {directory}: {e.strerror}") from None
        return
    kwargs = connect_kwargs(url, password_file, environ)
    try:
        connection = psycopg2.connect(**kwargs)
    except psycopg2.Error as e:
        raise StoreError(f"store {url}: cannot connect: {redact_dsn(one_line(e))}") from None
    connection.close()


@attrs.define
class Stores:
    """
    The durable stores of one database, and what manages them.

    Attributes:
        url: where they live.
        directory: extensions.
        data_version: a change counter of the directory (for the snapshot).
        records: call records (the spool wraps it).
        live: live-call summaries.
        location: bindings, in memory with write-behind to the database.
        migrate: applies pending schema migrations; fires with their names.
        close: closes the pool.
        dialect_errors: the database driver's error class, for callers that
            report failures.
    """

    url: StoreURL
    directory: IDirectory
    data_version: Callable[[], Deferred[int]]
    records: ICallRecordStore
    live: ILiveCalls
    location: SQLLocationService
    migrate: Callable[[], Deferred[list[str]]]
    close: Callable[[], None]
    pool: Any
    dialect_errors: type[Exception]


def open_stores(
    url: StoreURL,
    reactor: Any,
    password_file: str = "",
    pool_size: int = 4,
    environ: dict[str, str] | None = None,
) -> Stores:
    """
    Build the pool and the stores for ``url`` on ``reactor``. Nothing connects
    before the reactor runs; call ``migrate()`` first.

    Raises:
        StoreError: the password file cannot be read.
    """
    pool: adbapi.ConnectionPool | PostgreSQLPool
    if url.dialect == "sqlite":
        pool = open_sqlite_pool(url.path)
        errors: type[Exception] = sqlite3.Error
    else:
        pool = PostgreSQLPool(
            reactor,
            connect_txpostgres(reactor, connect_kwargs(url, password_file, environ)),
            size=pool_size,
            description=f"store {url}",
        )
        errors = psycopg2.Error
    directory = SQLDirectory(pool)
    return Stores(
        url=url,
        directory=directory,
        data_version=directory.data_version,
        records=SQLCallRecordStore(pool),
        live=SQLLiveCalls(pool),
        location=SQLLocationService(pool, reactor),
        migrate=lambda: apply_migrations(pool),
        close=pool.close,
        pool=pool,
        dialect_errors=errors,
    )


def admin_stores(pool: Any) -> tuple[IAdminStore, IAuditLog]:
    """The admin plugin's account/token store and audit log on ``pool`` (either dialect)."""
    from warden.store.admin import SQLAdminStore, SQLAuditLog

    return SQLAdminStore(pool), SQLAuditLog(pool)
