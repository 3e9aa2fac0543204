"""
Making backups: database, configuration and files into one directory with a
manifest, published atomically, optionally sealed into an encrypted archive.

A backup is built in ``<directory>/.<name>.partial`` and renamed to
``<directory>/<name>`` only once complete (the manifest is the last file
written), so a reader never sees half a backup; an encrypted one is written as
``.<name>.tar.aesgcm.partial`` and renamed the same way. Names carry the UTC
time and the type: ``warden-20261125T194640Z-full``.

The work is blocking (copies, hashes): ``twistd warden`` and ``wardenctl`` run
L{create_backup} in a thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

import warden
from warden.backup import crypto
from warden.backup.database import (
    POSTGRES_DUMP,
    SQLITE_DUMP,
    PostgresTarget,
    SQLiteTarget,
    Target,
    dump_sqlite,
    inspect_sqlite,
    live_target,
    sqlite_schema_version,
    stored_call_ids,
)
from warden.backup.manifest import (
    MANIFEST_NAME,
    BackupError,
    DatabaseInfo,
    Manifest,
    copy_regular_file,
    describe_files,
    irregular_entries,
    read_manifest,
)
from warden.backup.priority import BACKUP_NICENESS
from warden.backup.signing import (
    ManifestKeys,
    archive_manifest_key,
    ensure_signing_key,
    signing_key_path,
)
from warden.backup.spool import read_spool, write_spool_copy
from warden.config import WardenConfig
from warden.filemodes import tighten

NAME = re.compile(
    r"^warden-([0-9]{8}T[0-9]{6})Z-(full|database|config|files)(?:-[0-9]+)?(\.tar\.aesgcm)?$"
)
DEFAULT_FILE_DIRS = ("voicemail", "recordings")
_KEY_SUFFIXES = (".key", ".pem", ".p12", ".pfx")
_SECRET_WORDS = ("password", "secret", "key")
# The backup key itself never goes into a backup, encrypted or not.
_NEVER = ("backup.key_file",)


@attrs.frozen
class BackupSources:
    """
    What a backup reads.

    Attributes:
        database: the live database.
        config_path: the configuration file; None when Warden runs on defaults.
        data_dir: the data directory (file directories are relative to it).
        file_dirs: the directories of voicemail and recordings to back up.
        include_keys: back up private keys referenced by the configuration even
            without encryption (they are always included in encrypted backups).
        signing_key_file: the key plain backups' manifests are signed with
            ("" for ``<data_dir>/backup-signing.key``, created when missing).
    """

    database: Target
    config_path: str | None
    data_dir: str
    file_dirs: tuple[str, ...] = DEFAULT_FILE_DIRS
    include_keys: bool = False
    signing_key_file: str = ""

    def manifest_key(self, backup_key: bytes | None) -> bytes:
        """The key a new backup's manifest is signed with (see L{signing})."""
        if backup_key is not None:
            return archive_manifest_key(backup_key)
        return ensure_signing_key(signing_key_path(self.signing_key_file, self.data_dir))

    def file_dir_paths(self) -> list[tuple[str, Path]]:
        """``(name, absolute path)`` of every configured file directory."""
        result = []
        for entry in self.file_dirs:
            path = Path(entry) if os.path.isabs(entry) else Path(self.data_dir) / entry
            result.append((Path(entry).name, path.resolve()))
        return result


def sources_from_config(config: WardenConfig, config_path: str | None) -> BackupSources:
    """What the backups of the PBX configured by ``config`` read (``[backup]``)."""
    section = config.backup
    return BackupSources(
        live_target(config), config_path, config.server.data_dir, section.file_dirs,
        section.include_keys, section.signing_key_file,
    )  # fmt: skip


def backup_name(kind: str, now: float, encrypted: bool, directory: Path) -> str:
    """A fresh name in ``directory`` for a backup of ``kind`` made at ``now``."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
    suffix = crypto.SUFFIX if encrypted else ""
    base = f"warden-{stamp}Z-{kind}"
    name, n = base, 1
    while (directory / (name + suffix)).exists() or (
        directory / f".{name}{suffix}.partial"
    ).exists():
        name = f"{base}-{n}"
        n += 1
    return name + suffix


def list_backups(directory: Path) -> list[tuple[float, Path]]:
    """The published backups in ``directory`` as ``(created_at, path)``, oldest first."""
    found: list[tuple[float, Path]] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        match = NAME.match(entry.name)
        if match is None:
            continue
        stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        found.append((stamp.timestamp(), Path(entry.path)))
    found.sort(key=lambda item: (item[0], item[1].name))
    return found


def is_authentic(path: Path, keys: ManifestKeys) -> bool:
    """
    Whether the backup at ``path`` was made with ``keys``: a directory whose
    manifest is signed with the signing key, or an archive sealed with the
    backup key. Only the manifest (or the first record) is read.
    """
    try:
        if path.is_dir() and not path.is_symlink():
            read_manifest(path, keys.for_backup(encrypted=False))
            return True
        if path.is_file() and not path.is_symlink() and path.name.endswith(crypto.SUFFIX):
            if keys.backup_key is None:
                return False
            crypto.check_archive_head(path, keys.backup_key)
            return True
    except BackupError:
        return False
    return False


def latest_backup(directory: Path, keys: ManifestKeys) -> Path:
    """
    The newest authentic backup in ``directory`` (see L{is_authentic}): a
    newer one that is unsigned, signed with another key or not a backup is
    passed over, so a planted "newest" backup is never chosen.

    Raises:
        BackupError: there is none (saying how many were passed over).
    """
    backups = list_backups(directory)
    for _, path in reversed(backups):
        if is_authentic(path, keys):
            return path
    if not backups:
        raise BackupError(f"{directory}: no backups found")
    raise BackupError(
        f"{directory}: none of the {len(backups)} backups is signed with this node's"
        " manifest key (give the right --signing-key or --key-file)"
    )


def prune_backups(directory: Path, keep_count: int, keep_seconds: float, now: float) -> list[Path]:
    """
    Delete backups beyond the newest ``keep_count`` and those older than
    ``keep_seconds`` (0: no limit); the newest backup is always kept.

    Returns:
        The paths deleted.
    """
    backups = list_backups(directory)
    doomed = []
    for index, (created, path) in enumerate(backups[:-1]):
        too_many = keep_count > 0 and len(backups) - index > keep_count
        too_old = keep_seconds > 0 and now - created > keep_seconds
        if too_many or too_old:
            doomed.append(path)
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return doomed


# -- configuration ---------------------------------------------------------------


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a TOML document, with the dotted key it sits under."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _strings(item, f"{key}.{name}" if key else name)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, key)


def _is_secret(key: str, path: Path) -> bool:
    """A private key or password file: named so, or holding a PEM private key."""
    name = key.rsplit(".", 1)[-1].lower()
    if any(word in name for word in _SECRET_WORDS):
        return True
    if path.suffix.lower() in _KEY_SUFFIXES and path.suffix.lower() != ".pem":
        return True
    try:
        with open(path, "rb") as f:
            return b"PRIVATE KEY" in f.read(65536)
    except OSError:
        return False


def _copy_config(sources: BackupSources, root: Path, encrypted: bool) -> dict[str, Any]:
    """Copy the configuration file and every file it names; returns the manifest part."""
    config_path = Path(sources.config_path or "").resolve()
    if not sources.config_path:
        return {"source": None, "file": None, "referenced": {}, "excluded_keys": []}
    try:
        text = config_path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BackupError(f"{config_path}: cannot read the configuration: {e}") from None
    folder = root / "config"
    folder.mkdir(parents=True)
    shutil.copy2(config_path, folder / config_path.name)
    referenced: dict[str, str] = {}
    excluded: list[str] = []
    database = (
        os.path.abspath(sources.database.path)
        if isinstance(sources.database, SQLiteTarget)
        else ""
    )
    for key, value in _strings(data):
        if not value or "\n" in value or len(value) > 4096 or key in _NEVER:
            continue
        candidate = Path(value) if os.path.isabs(value) else config_path.parent / value
        try:
            if not candidate.is_file() or str(candidate.resolve()) == database:
                continue
        except OSError:
            continue
        candidate = candidate.resolve()
        if _is_secret(key, candidate) and not (encrypted or sources.include_keys):
            excluded.append(value)
            continue
        stored = f"config/files/{len(referenced)}-{candidate.name}"
        (root / "config" / "files").mkdir(exist_ok=True)
        shutil.copy2(candidate, root / stored)
        referenced[stored] = value
    return {
        "source": str(config_path),
        "file": f"config/{config_path.name}",
        "referenced": referenced,
        "excluded_keys": excluded,
    }


# -- files ---------------------------------------------------------------------------


def _refuse_irregular(directory: str, names: list[str]) -> list[str]:
    """
    ``copytree``'s ``ignore`` hook: refuse symbolic links and special files
    (devices, pipes, sockets) in a copied directory instead of following or
    reading them. Nothing is ignored.
    """
    for name in names:
        path = os.path.join(directory, name)
        mode = os.lstat(path).st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
            raise BackupError(
                f"{path}: {kind}; backups copy regular files only (replace it with the"
                " file it stands for, or move it out of the directory)"
            )
    return []


def _copy_file_dirs(sources: BackupSources, root: Path) -> list[str]:
    """
    Copy the file directories (their own path may be a link, as configured);
    a symbolic link or special file inside them fails the backup, naming it.
    """
    copied = []
    for name, path in sources.file_dir_paths():
        if not path.is_dir():
            continue
        shutil.copytree(
            path,
            root / "files" / name,
            symlinks=True,
            ignore=_refuse_irregular,
            copy_function=copy_regular_file,
        )
        copied.append(name)
    return copied


# -- database -----------------------------------------------------------------------


def _dump_database(sources: BackupSources, root: Path) -> tuple[DatabaseInfo, int | None]:
    """
    Copy the database and the CDR spool's pending records (the spool first: see
    L{warden.backup.spool}); returns the manifest's part and the schema version.
    """
    (root / "database").mkdir()
    pending = read_spool(sources.data_dir)
    call_ids = [record.call_id for record, _ in pending]
    database = sources.database
    if isinstance(database, PostgresTarget):
        from warden.backup import postgres

        info, schema, stored = postgres.dump(database.url, root / POSTGRES_DUMP, call_ids)
    else:
        dump = root / SQLITE_DUMP
        dump_sqlite(database.path, dump)
        info, schema = inspect_sqlite(dump), sqlite_schema_version(dump)
        stored = stored_call_ids(dump, call_ids) if "call_records" in info.row_counts else set()
    spool = write_spool_copy(pending, stored, root)
    times = [t for t in (info.last_cdr_at, spool.last_cdr_at) if t is not None]
    return attrs.evolve(info, last_cdr_at=max(times, default=None), spool=spool), schema


def lower_priority(thread_id: int = 0) -> int:
    """
    Lower the CPU priority of this process (``thread_id`` 0) or of one thread
    (its native id; Linux schedules threads separately) to L{BACKUP_NICENESS};
    children started afterwards (``pg_dump``) inherit it. Returns the previous
    niceness, for L{restore_priority}.
    """
    previous = os.getpriority(os.PRIO_PROCESS, thread_id)
    try:
        os.setpriority(os.PRIO_PROCESS, thread_id, max(previous, BACKUP_NICENESS))
    except OSError:
        pass
    return previous


@contextlib.contextmanager
def idle_scheduling() -> Iterator[bool]:
    """
    Run the calling thread, and the threads and children (``pg_dump``) it starts,
    in the idle scheduling class (SCHED_IDLE: a core only when nothing else, such
    as SIP handling, wants it); the previous policy is restored afterwards when
    the kernel allows. Yields whether the class could be set.
    """
    try:
        previous = os.sched_getscheduler(0)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        yield False
        return
    try:
        yield True
    finally:
        try:
            os.sched_setscheduler(0, previous, os.sched_param(0))
        except OSError:
            pass


def restore_priority(previous: int, thread_id: int) -> None:
    """Undo L{lower_priority} for a thread (a pool thread serves other work later)."""
    try:
        os.setpriority(os.PRIO_PROCESS, thread_id, previous)
    except OSError:
        pass


def create_backup(
    sources: BackupSources,
    kind: str,
    directory: Path,
    now: float,
    key: bytes | None = None,
) -> Path:
    """
    Make a backup of ``kind`` (``full``, ``database``, ``config``, ``files``) in
    ``directory`` and return its path once it is published.

    Args:
        now: the time recorded as ``created_at`` (from the caller's clock).
        key: a 256-bit key: the backup is then one encrypted archive.

    Raises:
        BackupError: a source is missing or unreadable, or the directory cannot
            be written; nothing is published then.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = backup_name(kind, now, key is not None, directory)
    partial = directory / f".{name.removesuffix(crypto.SUFFIX)}.partial"
    sealed_partial = directory / f".{name}.partial"
    try:
        partial.mkdir()
        database, schema, config, file_dirs = None, None, None, []
        if kind in ("full", "database"):
            database, schema = _dump_database(sources, partial)
        if kind in ("full", "config"):
            config = _copy_config(sources, partial, encrypted=key is not None)
        if kind in ("full", "files"):
            file_dirs = _copy_file_dirs(sources, partial)
        irregular = irregular_entries(partial)
        if irregular:
            raise BackupError(f"{irregular[0]}: appeared as a symbolic link while copying")
        manifest = Manifest(
            warden_version=warden.__version__,
            schema_version=schema,
            type=kind,
            created_at=now,
            files=describe_files(partial),
            database=database,
            config=config,
            file_dirs=tuple(file_dirs),
        )
        signed = manifest.to_json(sources.manifest_key(key))
        (partial / MANIFEST_NAME).write_text(signed, encoding="utf-8")
        tighten([str(partial)])  # copies keep their source's mode: make them private
        if key is None:
            os.rename(partial, directory / name)
        else:
            crypto.seal_directory(partial, sealed_partial, key)
            os.rename(sealed_partial, directory / name)
            shutil.rmtree(partial)
    except OSError as e:
        raise BackupError(f"{directory}: cannot write the backup: {e}") from None
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
        if sealed_partial.exists():
            sealed_partial.unlink()
    return directory / name
