"""
Reading and restoring backups: open (decrypt), verify, and put the database,
configuration and files back.

L{open_backup} gives the root directory of a backup (unpacking an encrypted
archive into a scratch directory first) and the key its manifest must be signed
with; L{check_backup} verifies the manifest's signature (before anything else),
every checksum and the schema version; the ``restore_*`` functions write the
parts to their destinations, refusing to overwrite a live database unless told
to. A backup from an older Warden is migrated forward as it is restored; one
from a newer Warden is refused.

Every destination is confined: a file is written only to a path that, once
resolved, stays under the destination directory, and never through a symbolic
link.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from warden.backup import crypto
from warden.backup.database import (
    PostgresTarget,
    SQLiteTarget,
    Target,
    has_data,
    newest_schema_version,
)
from warden.backup.manifest import (
    BackupError,
    Manifest,
    copy_regular_file,
    read_manifest,
    regular_file,
    sha256_file,
    verify_files,
)
from warden.backup.signing import ManifestKeys
from warden.backup.spool import check_spool_copy
from warden.errors import StoreError
from warden.runlock import DirectoryLock, InUse, LockFailed, describe_process, lock_directories
from warden.store.migrate import _migrate_sqlite_txn, load_migrations


def is_archive(path: Path) -> bool:
    """Whether ``path`` is an encrypted backup archive (rather than a directory)."""
    return path.is_file() and path.name.endswith(crypto.SUFFIX)


def open_backup(path: Path, keys: ManifestKeys, scratch: Path) -> tuple[Path, bytes]:
    """
    The root directory of the backup at ``path`` (resolved), and the key its
    manifest must be signed with.

    A directory is used as it is (its manifest key is the signing key); an
    encrypted archive is unpacked into ``scratch/backup`` (the backup key
    required; the manifest key is derived from it).

    Raises:
        BackupError: missing, not a backup, the key it needs not given, or an
            archive that fails authentication.
    """
    if path.is_dir():
        return path.resolve(), keys.for_backup(encrypted=False)
    if not path.exists():
        raise BackupError(f"{path}: no such backup")
    if not is_archive(path):
        raise BackupError(f"{path}: neither a backup directory nor a {crypto.SUFFIX} archive")
    if keys.backup_key is None:
        raise BackupError(f"{path}: the backup is encrypted; give its key file")
    root = scratch / "backup"
    root.mkdir(parents=True)
    crypto.open_archive(path, keys.backup_key, root)
    return root.resolve(), keys.for_backup(encrypted=True)


def schema_problem(manifest: Manifest) -> str | None:
    """Why this Warden cannot restore the backup's schema, or None."""
    if manifest.schema_version is None or manifest.database is None:
        return None
    newest = newest_schema_version(manifest.database.dialect)
    if manifest.schema_version > newest:
        return (
            f"the backup has schema version {manifest.schema_version:04d}, newer than this"
            f" Warden {_version()} knows (up to {newest:04d}); restore it with Warden"
            f" {manifest.warden_version} or later"
        )
    return None


def _version() -> str:
    import warden

    return warden.__version__


def check_backup(root: Path, key: bytes) -> tuple[Manifest | None, list[str]]:
    """
    Read the manifest, check its signature with ``key`` and its paths, then
    verify every file, the schema version and the CDR spool's pending records
    (readable, as many as the manifest says).

    Returns:
        ``(manifest, problems)``; the manifest is None when it cannot be read
        or is not authentic (the only problem says why).
    """
    try:
        manifest = read_manifest(root, key)
    except BackupError as e:
        return None, [str(e)]
    problems = verify_files(root, manifest)
    problem = schema_problem(manifest)
    if problem is not None:
        problems.append(problem)
    problems += [p for p in check_spool_copy(root, manifest) if p not in problems]
    return manifest, problems


def migrate_sqlite_file(path: Path) -> list[str]:
    """
    Bring the SQLite file at ``path`` up to this Warden's schema; returns the
    migrations applied.

    Raises:
        BackupError: the file is newer than this Warden, or a migration fails.
    """
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        cursor = connection.cursor()
        try:
            applied = _migrate_sqlite_txn(cast(Any, cursor), load_migrations("sqlite"))
            connection.execute("COMMIT")
        except (StoreError, sqlite3.Error) as e:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise BackupError(f"{path}: cannot migrate: {e}") from None
        return applied
    finally:
        connection.close()


@contextlib.contextmanager
def exclusive_use(data_dir: Path, target: Target | None) -> Iterator[None]:
    """
    Hold the run locks (L{warden.runlock}) of ``data_dir`` and of ``target``
    exclusively while the block runs: a restore never writes under a running
    Warden, and no Warden starts there meanwhile.

    Raises:
        BackupError: a Warden (or another restore) holds one, naming the process
            and how to stop it.
    """
    sqlite = target.path if isinstance(target, SQLiteTarget) else None
    held: list[DirectoryLock] = []
    store: Any = None
    try:
        for directory in lock_directories(str(data_dir), sqlite):
            lock = DirectoryLock(directory)
            try:
                lock.acquire(exclusive=True, description=describe_process())
            except InUse as e:
                pid = re.match(r"pid ([0-9]+):", str(e))
                how = f"systemctl stop warden, or kill -TERM {pid.group(1)}" if pid else (
                    "systemctl stop warden"
                )  # fmt: skip
                raise BackupError(
                    f"{directory} is in use by a running Warden ({e}); stop it first ({how})"
                    " and restore again"
                ) from None
            except LockFailed as e:
                raise BackupError(str(e)) from None
            held.append(lock)
        if isinstance(target, PostgresTarget):
            from warden.backup import postgres

            store = postgres.lock_for_restore(target.url)
        yield
    finally:
        if store is not None:
            store.close()
        for lock in held:
            lock.release()


def refuse_live(target: Target, force: bool) -> None:
    """
    Raise L{BackupError} when ``target`` holds data and ``force`` is not set.
    """
    if force:
        return
    if isinstance(target, SQLiteTarget) and has_data(target.path):
        raise BackupError(
            f"{target.path} holds a live database; stop Warden and pass --force to"
            " overwrite it, or restore elsewhere (--to-database)"
        )
    if isinstance(target, PostgresTarget):
        from warden.backup import postgres

        if postgres.has_data(target.url):
            raise BackupError(
                f"{target.describe()} holds a live database; pass --force to overwrite it,"
                " or restore into an empty database (--to-database)"
            )


def restore_database(root: Path, manifest: Manifest, target: Target, force: bool) -> list[str]:
    """
    Restore the backup's database into ``target`` and migrate it forward.

    SQLite is restored into a temporary file next to the target, migrated, and
    renamed over it, so the target is either untouched or complete.

    Returns:
        The migrations applied to bring the backup up to date.

    Raises:
        BackupError: no database in the backup, a live target without
            ``force``, a dialect mismatch, or a failure to restore.
    """
    if manifest.database is None:
        raise BackupError("the backup holds no database (it is a config or files backup)")
    if manifest.database.dialect != target.dialect:
        raise BackupError(
            f"the backup holds a {manifest.database.dialect} database; it cannot be restored"
            f" into {target.describe()}"
        )
    refuse_live(target, force)
    dump = _source(root, manifest.database.file)
    if isinstance(target, PostgresTarget):
        from warden.backup import postgres

        return postgres.restore(dump, target.url)
    destination = Path(target.path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(destination.name + ".restoring")
    try:
        copy_regular_file(dump, temporary)
        applied = migrate_sqlite_file(temporary)
        for suffix in ("-wal", "-shm"):
            Path(str(destination) + suffix).unlink(missing_ok=True)
        os.replace(temporary, destination)
    except OSError as e:
        raise BackupError(f"{destination}: cannot restore: {e}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return applied


def _source(root: Path, relative: str) -> Path:
    """A file of the backup, refused unless it is a regular file inside it."""
    path = regular_file(root, relative)
    if path is None:
        raise BackupError(f"{relative}: not a regular file inside the backup")
    return path


def confined(destination: Path, relative: str | Path) -> Path:
    """
    ``destination/relative`` when that path, resolved, stays under the
    resolved ``destination`` and is not itself a symbolic link.

    Raises:
        BackupError: it would leave the destination.
    """
    base = destination.resolve()
    path = base / relative
    if path.is_symlink() or not path.resolve().is_relative_to(base) or path == base:
        raise BackupError(f"{path}: outside {base} (or a symbolic link); refusing to write it")
    return path


def _copy_in(source: Path, target: Path, destination: Path) -> None:
    """Copy ``source`` to ``target`` (confined to ``destination``), directories made."""
    target.parent.mkdir(parents=True, exist_ok=True)
    confined(destination, target.relative_to(destination.resolve()))
    copy_regular_file(source, target)


def restore_files(root: Path, manifest: Manifest, data_dir: Path, force: bool) -> int:
    """
    Copy the backed-up file directories (voicemail, recordings) into
    ``data_dir``; returns the number of files written.

    Raises:
        BackupError: a file exists with other content and ``force`` is not set,
            or a destination would leave ``data_dir``.
    """
    entries = [f for f in manifest.files if f.path.startswith("files/")]
    targets = [
        (_source(root, e.path), confined(data_dir, e.path.removeprefix("files/")), e)
        for e in entries
    ]
    if not force:
        for _, existing, entry in targets:
            if existing.exists() and sha256_file(existing)[0] != entry.sha256:
                raise BackupError(
                    f"{existing} exists with other content; pass --force to overwrite it"
                )
    for source, destination, _ in targets:
        _copy_in(source, destination, data_dir)
    return len(entries)


def restore_config(root: Path, manifest: Manifest, destination: Path) -> list[Path]:
    """
    Copy the backed-up configuration file and the files it names into
    ``destination`` (the referenced files under their original relative names
    when those are relative and stay inside ``destination``, else under
    ``files/``). Returns the files written.

    Raises:
        BackupError: a file of the backup is not a regular file inside it.
    """
    config = manifest.config or {}
    written: list[Path] = []
    if not config.get("file"):
        return written
    destination.mkdir(parents=True, exist_ok=True)
    main = _source(root, str(config["file"]))
    target = confined(destination, main.name)
    _copy_in(main, target, destination)
    written.append(target)
    for stored, original in dict(config.get("referenced") or {}).items():
        source = _source(root, stored)
        relative = Path(str(original))
        if relative.is_absolute() or ".." in relative.parts or not relative.name:
            relative = Path("files") / source.name
        target = confined(destination, relative)
        _copy_in(source, target, destination)
        written.append(target)
    return written
