"""
PostgreSQL backups: ``pg_dump --format=custom`` and ``pg_restore`` (Debian's
``postgresql-client``), with psycopg2 for the row counts and checks.

The dump and the manifest's row counts come from one snapshot: a REPEATABLE
READ transaction exports it (``pg_export_snapshot()``), counts the rows, and
``pg_dump --snapshot`` dumps exactly that state while the PBX keeps writing.

Backups yield to the PBX: ``pg_dump`` runs niced, and the server processes that
do the dump's real work (counting, and formatting every row for ``COPY``) get a
lower CPU and I/O priority when the server runs on this host and we may change
them (L{warden.backup.priority}). ``pg_dump``'s session is found through its
``application_name`` (``warden-backup-<random>``) in ``pg_stat_activity``.

Passwords never appear on a command line or in a URL: they come from
``$WARDEN_STORE_PASSWORD`` (as for Warden itself) and reach the client tools
through ``PGPASSWORD`` in their environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import psycopg2

from warden.backup.database import POSTGRES_DUMP
from warden.backup.manifest import BackupError, DatabaseInfo
from warden.backup.priority import ServerPriority
from warden.errors import StoreError
from warden.runlock import STORE_LOCK_KEY
from warden.store.migrate import load_migrations
from warden.store.url import StoreURL, parse_store_url, read_password

_MIGRATION_LOCK = 0x5741_5244_454E
#: pg_dump's session is found in pg_stat_activity by this name and a random suffix.
APPLICATION_NAME = "warden-backup"
_FIND_ATTEMPTS = 100
_FIND_INTERVAL = 0.02


def _url(url: str) -> StoreURL:
    try:
        return parse_store_url(url)
    except ValueError as e:
        raise BackupError(f"{url}: {e}") from None


def _password() -> str | None:
    try:
        return read_password("")
    except StoreError as e:
        raise BackupError(str(e)) from None


def _connect(url: str, database: str | None = None) -> Any:
    parsed = _url(url)
    kwargs = parsed.connect_kwargs(_password())
    if database is not None:
        kwargs["dbname"] = database
    try:
        return psycopg2.connect(**kwargs)
    except psycopg2.Error as e:
        raise BackupError(f"{parsed}: cannot connect: {str(e).strip()}") from None


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed (apt-get install postgresql-client)")
    return path


def _run_tool(args: list[str], what: str) -> None:
    env = dict(os.environ)
    password = _password()
    if password is not None:
        env["PGPASSWORD"] = password
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{what} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


def _counts(cursor: Any) -> tuple[dict[str, int], float | None, int | None]:
    cursor.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
    )
    tables = [str(row[0]) for row in cursor.fetchall()]
    counts = {}
    for table in tables:
        cursor.execute(f'SELECT count(*) FROM "{table}"')
        counts[table] = int(cursor.fetchone()[0])
    last = None
    if "call_records" in counts:
        cursor.execute("SELECT max(ended_at) FROM call_records")
        value = cursor.fetchone()[0]
        last = float(value) if value is not None else None
    version = None
    if "schema_version" in counts:
        cursor.execute("SELECT max(version) FROM schema_version")
        value = cursor.fetchone()[0]
        version = int(value) if value is not None else None
    return counts, last, version


def _backend_started_at(cursor: Any, where: str, value: object) -> tuple[int, float] | None:
    """``(pid, backend_start)`` of the session ``where`` selects in pg_stat_activity."""
    cursor.execute("SELECT pg_stat_clear_snapshot()")
    cursor.execute(
        f"SELECT pid, extract(epoch FROM backend_start) FROM pg_stat_activity WHERE {where}",
        (value,),
    )
    row = cursor.fetchone()
    return (int(row[0]), float(row[1])) if row and row[1] is not None else None


def _run_pg_dump(args: list[str], cursor: Any, priority: ServerPriority) -> None:
    """
    Run ``pg_dump`` under a unique ``application_name``; while it runs, find the
    server process serving it and lower that process's priority.
    """
    name = f"{APPLICATION_NAME}-{uuid.uuid4().hex[:12]}"
    env = dict(os.environ, PGAPPNAME=name)
    password = _password()
    if password is not None:
        env["PGPASSWORD"] = password
    with subprocess.Popen(
        args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    ) as process:  # fmt: skip
        for _ in range(_FIND_ATTEMPTS):
            if process.poll() is not None:
                break
            found = _backend_started_at(cursor, "application_name = %s", name)
            if found is not None:
                priority.lower(*found, role="the backend streaming rows to pg_dump")
                break
            time.sleep(_FIND_INTERVAL)
        _, stderr = process.communicate()
    if process.returncode != 0:
        raise BackupError(f"pg_dump failed ({process.returncode}): {stderr.strip()[-2000:]}")


def dump(
    url: str,
    destination: Path,
    call_ids: Collection[str] = (),
    priority: ServerPriority | None = None,
) -> tuple[DatabaseInfo, int | None, set[str]]:
    """
    Dump the database at ``url`` to ``destination`` (custom format) and describe
    it; returns ``(info, schema_version, stored)``, ``stored`` being those of
    ``call_ids`` (the CDR spool's) that the dumped snapshot holds.

    The server processes doing the work (the one counting rows for the manifest,
    the one streaming rows to ``pg_dump``) get a lower CPU and I/O priority when
    they run on this host and ``priority`` may change them (L{ServerPriority}).
    """
    pg_dump = _tool("pg_dump")
    priority = priority if priority is not None else ServerPriority()
    connection = _connect(url)
    try:
        connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = str(cursor.fetchone()[0])
            own = _backend_started_at(cursor, "pid = %s", connection.get_backend_pid())
            if own is not None:
                priority.lower(*own, role="the backend counting rows for the manifest")
            counts, last, version = _counts(cursor)
            stored: set[str] = set()
            if call_ids and "call_records" in counts:
                cursor.execute(
                    "SELECT call_id FROM call_records WHERE call_id = ANY(%s)", (list(call_ids),)
                )
                stored = {str(row[0]) for row in cursor.fetchall()}
            _run_pg_dump(
                [pg_dump, "--format=custom", f"--snapshot={snapshot}", "--no-owner",
                 f"--file={destination}", f"--dbname={_url(url)}"],
                cursor, priority,
            )  # fmt: skip
        connection.rollback()
    except psycopg2.Error as e:
        raise BackupError(f"{_url(url)}: {str(e).strip()}") from None
    finally:
        connection.close()
    return DatabaseInfo("postgresql", POSTGRES_DUMP, counts, last), version, stored


def stored_call_ids(url: str, call_ids: Collection[str]) -> set[str]:
    """Which of ``call_ids`` the database at ``url`` holds in ``call_records``."""
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT call_id FROM call_records WHERE call_id = ANY(%s)", (list(call_ids),)
            )
            found = {str(row[0]) for row in cursor.fetchall()}
        connection.rollback()
    except psycopg2.Error as e:
        raise BackupError(f"{_url(url)}: {str(e).strip()}") from None
    finally:
        connection.close()
    return found


def voicemail_messages(url: str) -> list[tuple[str, str, float]]:
    """
    ``(message_id, audio, duration)`` of every voicemail message in the database
    at ``url`` (none in a database from before voicemail).
    """
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('voicemail_messages') IS NOT NULL")
            rows: list[tuple[Any, ...]] = []
            if cursor.fetchone()[0]:
                cursor.execute("SELECT message_id, audio, duration FROM voicemail_messages")
                rows = cursor.fetchall()
        connection.rollback()
    except psycopg2.Error as e:
        raise BackupError(f"{_url(url)}: {str(e).strip()}") from None
    finally:
        connection.close()
    return [(str(m), str(a), float(d)) for m, a, d in rows]


def has_data(url: str) -> bool:
    """Whether the database at ``url`` has any table."""
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
            return int(cursor.fetchone()[0]) > 0
    finally:
        connection.close()


def _migrate(url: str) -> list[str]:
    migrations = load_migrations("postgresql")
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cursor.execute("SELECT version FROM schema_version")
            done = {int(row[0]) for row in cursor.fetchall()}
            newest = max((m.version for m in migrations), default=0)
            if done and max(done) > newest:
                raise BackupError(
                    f"the database has schema version {max(done):04d}, newer than this"
                    f" Warden knows (up to {newest:04d})"
                )
            applied = []
            for migration in migrations:
                if migration.version not in done:
                    cursor.execute(migration.sql)
                    cursor.execute(
                        "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                    applied.append(migration.name)
        connection.commit()
        return applied
    except psycopg2.Error as e:
        raise BackupError(f"{_url(url)}: cannot migrate: {str(e).strip()}") from None
    finally:
        connection.close()


def restore(dump_file: Path, url: str) -> list[str]:
    """
    ``pg_restore`` the dump into the database at ``url`` (in one transaction,
    replacing what is there), then migrate it forward; returns the migrations
    applied.
    """
    pg_restore = _tool("pg_restore")
    _run_tool(
        [pg_restore, "--clean", "--if-exists", "--no-owner", "--no-privileges",
         "--single-transaction", "--exit-on-error", f"--dbname={_url(url)}", str(dump_file)],
        "pg_restore",
    )  # fmt: skip
    return _migrate(url)


def lock_for_restore(url: str) -> Any:
    """
    Take the store's run lock exclusively (L{warden.runlock}); returns the
    connection holding it (close it when the restore is done).

    Raises:
        BackupError: a running Warden holds the store (naming its sessions and
            what to do), or the database cannot be reached.
    """
    connection = _connect(url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (STORE_LOCK_KEY,))
            if cursor.fetchone()[0]:
                return connection
            cursor.execute(
                "SELECT a.application_name, a.pid, host(a.client_addr) FROM pg_locks l"
                " JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
                " AND l.classid = %s AND l.objid = %s AND l.database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())"
                " ORDER BY a.pid",
                (STORE_LOCK_KEY >> 32, STORE_LOCK_KEY & 0xFFFFFFFF),
            )
            holders = [
                f"{name or 'a Warden'} (backend {pid}{f' from {host}' if host else ''})"
                for name, pid, host in cursor.fetchall()[:5]
            ]
    except psycopg2.Error as e:
        connection.close()
        raise BackupError(f"{_url(url)}: {str(e).strip()}") from None
    connection.close()
    raise BackupError(
        f"{_url(url)} is in use by {', '.join(holders) or 'a running Warden'}; stop every"
        " Warden on this store first (systemctl stop warden on each node) and restore again"
    )


def create_scratch(live_url: str) -> str:
    """Create an empty scratch database next to the live one; returns its URL."""
    name = f"warden_drtest_{uuid.uuid4().hex[:12]}"
    connection = _connect(live_url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    except psycopg2.Error as e:
        raise BackupError(f"cannot create a scratch database: {str(e).strip()}") from None
    finally:
        connection.close()
    parsed = _url(live_url)
    return str(StoreURL("postgresql", host=parsed.host, port=parsed.port, database=name,
                        user=parsed.user, params=parsed.params))  # fmt: skip


def drop_scratch(url: str) -> None:
    """Drop a scratch database made by L{create_scratch}."""
    parsed = _url(url)
    if not parsed.database.startswith("warden_drtest_"):
        raise BackupError(f"{parsed}: not a scratch database; not dropping it")
    connection = _connect(url, database="postgres")
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    except psycopg2.Error as e:
        raise BackupError(f"cannot drop {parsed}: {str(e).strip()}") from None
    finally:
        connection.close()


def inspect(url: str) -> tuple[DatabaseInfo, int | None, list[str]]:
    """Row counts, schema version, and constraints left unvalidated (problems)."""
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            counts, last, version = _counts(cursor)
            cursor.execute(
                "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid ="
                " c.connamespace WHERE n.nspname = current_schema() AND NOT c.convalidated"
            )
            problems = [f"constraint {row[0]} is not validated" for row in cursor.fetchall()]
        connection.rollback()
    finally:
        connection.close()
    return DatabaseInfo("postgresql", POSTGRES_DUMP, counts, last), version, problems


def prepare_scratch(url: str) -> list[tuple[Any, ...]]:
    """
    Forget live registrations and calls; the first two enabled extensions as
    ``(number, realm, ha1_md5, ha1_sha256)`` rows.
    """
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM bindings")
            cursor.execute("DELETE FROM live_calls")
            cursor.execute(
                "SELECT number, realm, ha1_md5, ha1_sha256 FROM extensions WHERE enabled"
                " ORDER BY length(number), number LIMIT 2"
            )
            rows: list[tuple[Any, ...]] = cursor.fetchall()
        connection.commit()
    finally:
        connection.close()
    return rows
