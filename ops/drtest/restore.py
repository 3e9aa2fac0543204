"""
Reading and restoring backups: open (decrypt), verify, and put the database,
configuration and files back.

L{open_backup} gives the root directory of a backup (unpacking an encrypted
archive into a scratch directory first); L{check_backup} verifies the manifest,
every checksum and the schema version; the ``restore_*`` functions write the
parts to their destinations, refusing to overwrite a live database unless told
to. A backup from an older Warden is migrated forward as it is restored; one
from a newer Warden is refused.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any, cast

from warden.errors import StoreError
from warden.ops.drtest import crypto
from warden.ops.drtest.database import (
    PostgresTarget,
    SQLiteTarget,
    Target,
    has_data,
    newest_schema_version,
)
from warden.ops.drtest.manifest import (
    BackupError,
    Manifest,
    read_manifest,
    sha256_file,
    verify_files,
)
from warden.ops.drtest.spool import check_spool_copy
from warden.store.migrate import _migrate_sqlite_txn, load_migrations


def is_archive(path: Path) -> bool:
    """Whether ``path`` is an encrypted backup archive (rather than a directory)."""
    return path.is_file() and path.name.endswith(crypto.SUFFIX)


def open_backup(path: Path, key: bytes | None, scratch: Path) -> Path:
    """
    The root directory of the backup at ``path``.

    A directory is used as it is; an encrypted archive is unpacked into
    ``scratch/backup`` (``key`` required).

    Raises:
        BackupError: missing, not a backup, no key for an archive, or an
            archive that fails authentication.
    """
    if path.is_dir():
        return path
    if not path.exists():
        raise BackupError(f"{path}: no such backup")
    if not is_archive(path):
        raise BackupError(f"{path}: neither a backup directory nor a {crypto.SUFFIX} archive")
    if key is None:
        raise BackupError(f"{path}: the backup is encrypted; give its key file")
    root = scratch / "backup"
    root.mkdir(parents=True)
    crypto.open_archive(path, key, root)
    return root


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


def check_backup(root: Path) -> tuple[Manifest | None, list[str]]:
    """
    Read the manifest and verify every file, the schema version and the CDR
    spool's pending records (readable, as many as the manifest says).

    Returns:
        ``(manifest, problems)``; the manifest is None when it cannot be read
        (the first problem says why).
    """
    try:
        manifest = read_manifest(root)
    except BackupError as e:
        return None, [str(e)]
    problems = verify_files(root, manifest)
    problem = schema_problem(manifest)
    if problem is not None:
        problems.append(problem)
    if manifest.database is not None and manifest.database.file not in {
        f.path for f in manifest.files
    }:
        problems.append(f"{manifest.database.file}: the database dump is not in the manifest")
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
        from warden.ops.drtest import postgres

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
    dump = root / manifest.database.file
    if isinstance(target, PostgresTarget):
        from warden.ops.drtest import postgres

        return postgres.restore(dump, target.url)
    destination = Path(target.path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(destination.name + ".restoring")
    try:
        shutil.copyfile(dump, temporary)
        applied = migrate_sqlite_file(temporary)
        for suffix in ("-wal", "-shm"):
            Path(str(destination) + suffix).unlink(missing_ok=True)
        os.replace(temporary, destination)
    except OSError as e:
        raise BackupError(f"{destination}: cannot restore: {e}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return applied


def restore_files(root: Path, manifest: Manifest, data_dir: Path, force: bool) -> int:
    """
    Copy the backed-up file directories (voicemail, recordings) into
    ``data_dir``; returns the number of files written.

    Raises:
        BackupError: a file exists with other content and ``force`` is not set.
    """
    entries = [f for f in manifest.files if f.path.startswith("files/")]
    if not force:
        for entry in entries:
            existing = data_dir / entry.path.removeprefix("files/")
            if existing.exists() and sha256_file(existing)[0] != entry.sha256:
                raise BackupError(
                    f"{existing} exists with other content; pass --force to overwrite it"
                )
    for entry in entries:
        destination = data_dir / entry.path.removeprefix("files/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / entry.path, destination)
    return len(entries)


def restore_config(root: Path, manifest: Manifest, destination: Path) -> list[Path]:
    """
    Copy the backed-up configuration file and the files it names into
    ``destination`` (the referenced files under their original relative names
    when those are relative). Returns the files written.
    """
    config = manifest.config or {}
    written: list[Path] = []
    if not config.get("file"):
        return written
    destination.mkdir(parents=True, exist_ok=True)
    main = root / str(config["file"])
    shutil.copy2(main, destination / main.name)
    written.append(destination / main.name)
    for stored, original in dict(config.get("referenced") or {}).items():
        relative = Path(str(original))
        target = (
            destination / "files" / Path(stored).name
            if relative.is_absolute() or ".." in relative.parts
            else destination / relative
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / stored, target)
        written.append(target)
    return written
