"""
The database side of backups: where the live database is, and copying and
inspecting SQLite databases.

SQLite is copied with its online backup API (``sqlite3.Connection.backup``),
which reads one consistent snapshot while Warden keeps writing (WAL mode: the
reader never blocks the writer). The copy is switched to the rollback journal so
that opening it later does not create ``-wal``/``-shm`` files next to it.
PostgreSQL lives in L{warden.backup.postgres}.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Collection
from pathlib import Path

import attrs

from warden.backup.manifest import BackupError, DatabaseInfo
from warden.config import WardenConfig
from warden.store.migrate import load_migrations
from warden.store.url import parse_store_url

SQLITE_DUMP = "database/warden.db"
POSTGRES_DUMP = "database/warden.pgdump"


@attrs.frozen
class SQLiteTarget:
    """An SQLite database file."""

    path: str
    dialect = "sqlite"

    def describe(self) -> str:
        """For messages and reports."""
        return f"sqlite://{os.path.abspath(self.path)}"


@attrs.frozen
class PostgresTarget:
    """A PostgreSQL database, by libpq URL (``postgresql://user@host:port/name``)."""

    url: str
    dialect = "postgresql"

    def describe(self) -> str:
        """The URL without its password."""
        return redact_url(self.url)


Target = SQLiteTarget | PostgresTarget


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (never log secrets)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def parse_target(text: str) -> Target:
    """
    A database given on the command line: a store URL (``postgresql://...``,
    ``sqlite:///PATH``, see L{warden.store.url}) or a plain file path.

    Raises:
        ValueError: a malformed URL (the message says why).
    """
    if not text.startswith(("sqlite:", "postgresql:", "postgres:")):
        return SQLiteTarget(text)
    parsed = parse_store_url(text)
    if parsed.dialect == "postgresql":
        return PostgresTarget(str(parsed))
    return SQLiteTarget(parsed.path)


def live_target(config: WardenConfig) -> Target:
    """The database the configuration points Warden at."""
    if config.store.url:
        return parse_target(config.store.url)
    return SQLiteTarget(config.database_path)


def newest_schema_version(dialect: str = "sqlite") -> int:
    """The newest schema version this Warden knows for ``dialect``."""
    migrations = load_migrations(dialect)
    return migrations[-1].version if migrations else 0


def _connect(path: str, read_only: bool = False) -> sqlite3.Connection:
    uri = f"file:{os.path.abspath(path)}" + ("?mode=ro" if read_only else "")
    connection = sqlite3.connect(uri, uri=True, timeout=30.0)
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


def dump_sqlite(source: str, destination: Path) -> None:
    """
    Copy the live SQLite database ``source`` to ``destination`` (a new file).

    Raises:
        BackupError: the source does not exist or cannot be read.
    """
    if not os.path.isfile(source):
        raise BackupError(f"{source}: no such database file")
    try:
        src = _connect(source)
        try:
            dst = sqlite3.connect(destination)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")
                dst.commit()
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as e:
        raise BackupError(f"{source}: cannot back up: {e}") from None


def _tables(connection: sqlite3.Connection) -> list[str]:
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name"
    ).fetchall()
    return [str(r[0]) for r in rows]


def inspect_sqlite(path: str | Path) -> DatabaseInfo:
    """
    Row counts per table, the newest call record's end time and (through
    L{sqlite_schema_version}) the schema version of the database file at ``path``.

    Raises:
        BackupError: not a readable SQLite database.
    """
    try:
        connection = _connect(str(path), read_only=True)
        try:
            counts = {
                table: int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
                for table in _tables(connection)
            }
            last = None
            if "call_records" in counts:
                value = connection.execute("SELECT max(ended_at) FROM call_records").fetchone()[0]
                last = float(value) if value is not None else None
        finally:
            connection.close()
    except sqlite3.Error as e:
        raise BackupError(f"{path}: not a readable SQLite database: {e}") from None
    return DatabaseInfo("sqlite", SQLITE_DUMP, counts, last)


def stored_call_ids(path: str | Path, call_ids: Collection[str]) -> set[str]:
    """
    Which of ``call_ids`` the ``call_records`` of the SQLite file at ``path`` hold.

    Raises:
        BackupError: not a readable SQLite database.
    """
    wanted = list(call_ids)
    found: set[str] = set()
    if not wanted:
        return found
    try:
        connection = _connect(str(path), read_only=True)
        try:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                rows = connection.execute(
                    f"SELECT call_id FROM call_records WHERE call_id IN ({marks})", chunk
                )
                found.update(str(row[0]) for row in rows)
        finally:
            connection.close()
    except sqlite3.Error as e:
        raise BackupError(f"{path}: not a readable SQLite database: {e}") from None
    return found


def voicemail_messages(path: str | Path) -> list[tuple[str, str, float]]:
    """
    ``(message_id, audio, duration)`` of every voicemail message in the SQLite
    file at ``path`` (none in a database from before voicemail).

    Raises:
        BackupError: not a readable SQLite database.
    """
    try:
        connection = _connect(str(path), read_only=True)
        try:
            known = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'voicemail_messages'"
            ).fetchone()
            rows = (
                connection.execute(
                    "SELECT message_id, audio, duration FROM voicemail_messages"
                ).fetchall()
                if known
                else []
            )
        finally:
            connection.close()
    except sqlite3.Error as e:
        raise BackupError(f"{path}: not a readable SQLite database: {e}") from None
    return [(str(m), str(a), float(d)) for m, a, d in rows]


def sqlite_schema_version(path: str | Path) -> int | None:
    """The highest applied schema version of the database, None without one."""
    try:
        connection = _connect(str(path), read_only=True)
        try:
            row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
        finally:
            connection.close()
    except sqlite3.OperationalError:
        return None
    except sqlite3.Error as e:
        raise BackupError(f"{path}: not a readable SQLite database: {e}") from None
    return int(row[0]) if row and row[0] is not None else None


def check_sqlite(path: str | Path) -> list[str]:
    """
    SQLite's own checks of a restored file: ``quick_check`` and
    ``foreign_key_check``. Returns one line per problem.
    """
    problems: list[str] = []
    try:
        connection = _connect(str(path), read_only=True)
        try:
            result = [r[0] for r in connection.execute("PRAGMA quick_check").fetchall()]
            if result != ["ok"]:
                problems.extend(f"integrity: {line}" for line in result[:5])
            for table, rowid, parent, _ in connection.execute("PRAGMA foreign_key_check"):
                problems.append(f"foreign key: {table} row {rowid} refers to a missing {parent}")
                if len(problems) > 10:
                    break
        finally:
            connection.close()
    except sqlite3.Error as e:
        problems.append(f"{path}: not a readable SQLite database: {e}")
    return problems


def has_data(path: str) -> bool:
    """Whether an SQLite file exists and holds any table (a live database)."""
    if not os.path.exists(path):
        return False
    if os.path.getsize(path) == 0:
        return False
    try:
        connection = _connect(path, read_only=True)
        try:
            return bool(_tables(connection))
        finally:
            connection.close()
    except sqlite3.Error:
        return True
