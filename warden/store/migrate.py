"""
Schema migrations: numbered SQL files per dialect, applied at start-up.

Files live in ``warden/store/schema/<dialect>/NNNN_name.sql`` (found with
``importlib.resources``, so they work from an installed wheel). Every pending file
is applied, in order, inside one transaction together with the rows that record
it in ``schema_version``: a failure leaves the database as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import attrs
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from warden.errors import StoreError
from warden.store.dialect import Cursor, database, split_sqlite_script, sqlite_interaction
from warden.store.pgpool import PostgreSQLPool

__all__ = [
    "CREATE_SCHEMA_VERSION",
    "Migration",
    "apply_migrations",
    "load_migrations",
    "pending_migrations",
    "split_sqlite_script",
]

_log = Logger()

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@attrs.frozen
class Migration:
    """
    One schema file.

    Attributes:
        version: its number (``0001_init.sql`` -> 1).
        name: its file name without ``.sql`` (``0001_init``).
        sql: its text.
    """

    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """
    Read every migration of ``dialect``, ordered by version.

    Raises:
        StoreError: the dialect has no schema directory, or two files share a
            number.
    """
    folder = resources.files("warden.store").joinpath("schema", dialect)
    if not folder.is_dir():
        raise StoreError(f"no schema files for dialect {dialect!r}")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILENAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise StoreError(f"{entry.name} and {found[version].name}.sql share a number")
        found[version] = Migration(version, entry.name[: -len(".sql")], entry.read_text("utf-8"))
    return [found[v] for v in sorted(found)]


# Both dialects keep the applied versions in this table.
CREATE_SCHEMA_VERSION = (
    "CREATE TABLE IF NOT EXISTS schema_version"
    " (version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL)"
)


def pending_migrations(
    rows: Iterable[Sequence[Any]], migrations: list[Migration]
) -> list[Migration]:
    """
    The migrations still to apply, given the ``schema_version`` rows already
    there; raises L{StoreError} when the database is newer than this code.
    """
    done = {int(row[0]) for row in rows}
    known = {m.version for m in migrations}
    unknown = sorted(done - known)
    if unknown:
        raise StoreError(
            f"the database has schema version {unknown[-1]:04d}, newer than this"
            f" Warden knows (up to {max(known, default=0):04d})"
        )
    return [m for m in migrations if m.version not in done]


async def _migrate_txn(cursor: Cursor, migrations: list[Migration]) -> list[str]:
    # One process at a time: the others wait here, then find the files applied.
    await cursor.execute(cursor.dialect.migration_lock)
    await cursor.execute(CREATE_SCHEMA_VERSION)
    await cursor.execute("SELECT version FROM schema_version")
    applied: list[str] = []
    for migration in pending_migrations(cursor.fetchall(), migrations):
        await cursor.execute_script(migration.sql)
        await cursor.execute(
            "INSERT INTO schema_version (version, name) VALUES (?, ?)",
            (migration.version, migration.name),
        )
        applied.append(migration.name)
    return applied


#: The migration on a sqlite3 cursor, for a caller holding its own connection.
_migrate_sqlite_txn = sqlite_interaction(_migrate_txn)


def apply_migrations(pool: adbapi.ConnectionPool | PostgreSQLPool) -> Deferred[list[str]]:
    """
    Bring the database behind ``pool`` (SQLite or PostgreSQL) up to the newest
    schema, in one transaction.

    Fires with the names of the migrations applied (``["0001_init"]`` on a fresh
    database, ``[]`` when it was up to date); fails with L{StoreError} when the
    database is newer than this code, and rolls everything back on any error.
    """
    db = database(pool)
    try:
        migrations = load_migrations(db.dialect.name)
    except StoreError as e:
        return defer.fail(e)

    def report(applied: list[str]) -> list[str]:
        if applied:
            _log.info("applied schema migrations {applied}", applied=applied)
        return applied

    return db.run("migrate", _migrate_txn, migrations).addCallback(report)
