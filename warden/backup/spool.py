"""
The CDR spool in backups: call records accepted but not yet in the database.

Warden writes every call record to the spool (L{warden.store.spool}) before the
database; while the database refuses them (an outage) they wait there. A
database backup therefore also takes the spool:

1. L{read_spool} copies the spool's complete lines *before* the database
   snapshot is taken. Any record accepted before that moment is then either
   still pending in the copy or was stored before the snapshot, so it is in the
   backup either way. (Warden appends to the spool with ``O_APPEND`` and
   replaces it atomically when it compacts it; a line being appended while we
   read has no ``\\n`` yet and belongs after the backup.)
2. Records the snapshot already holds are dropped (the spool keeps stored lines
   until it compacts); the rest are written to ``database/cdr-spool.jsonl``,
   listed with their SHA-256 like every file, and counted in the manifest
   (L{warden.backup.manifest.SpoolInfo}).
3. L{restore_spool} appends them to the restored data directory's spool, which
   Warden replays into its database at start-up. Storing a record is idempotent
   by call_id, so a record that is stored twice is stored once.
"""

from __future__ import annotations

import os
from pathlib import Path

from warden.backup.manifest import BackupError, Manifest, SpoolInfo, regular_file
from warden.model import CallRecord
from warden.store.spool import decode_line, default_spool_path

#: Where a backup keeps the spool's pending records.
SPOOL_COPY = "database/cdr-spool.jsonl"

Pending = list[tuple[CallRecord, bytes]]
"""Spooled records with their lines (each ending in ``\\n``), oldest first."""


def read_spool(data_dir: str) -> Pending:
    """
    The complete, readable records in the spool of ``data_dir`` (see the module
    docstring); unreadable lines are left to Warden's own recovery.

    Raises:
        BackupError: the spool exists but cannot be read.
    """
    path = default_spool_path(data_dir)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise BackupError(f"{path}: cannot read the CDR spool: {e}") from None
    found: Pending = []
    complete = data[: data.rfind(b"\n") + 1]
    for line in complete.splitlines(keepends=True):
        try:
            found.append((decode_line(line.rstrip(b"\n")), line))
        except ValueError:
            continue
    return found


def write_spool_copy(pending: Pending, stored: set[str], root: Path) -> SpoolInfo:
    """
    Write the records of ``pending`` whose call_id is not in ``stored`` (the
    database copy's) to ``root/SPOOL_COPY``; returns what the manifest says of them.
    """
    kept: dict[str, tuple[CallRecord, bytes]] = {}
    for record, line in pending:
        if record.call_id not in stored:
            kept.setdefault(record.call_id, (record, line))
    if not kept:
        return SpoolInfo()
    (root / SPOOL_COPY).write_bytes(b"".join(line for _, line in kept.values()))
    last = max(record.ended_at for record, _ in kept.values())
    return SpoolInfo(SPOOL_COPY, len(kept), last)


def read_spool_copy(path: Path) -> tuple[list[CallRecord], list[str]]:
    """
    The records of a spool copy (in a backup or restored), and one problem
    (without the file's name) per line that is not a call record.
    """
    records: list[CallRecord] = []
    problems: list[str] = []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        problems.append("the last line is incomplete")
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            records.append(decode_line(line))
        except ValueError as e:
            problems.append(f"line {number} is not a call record ({e})")
    return records, problems


def check_spool_copy(root: Path, manifest: Manifest) -> list[str]:
    """
    The problems of a backup's spool copy: listed in the manifest, readable, and
    holding as many records as the manifest says.
    """
    if manifest.database is None:
        return []
    spool = manifest.database.spool
    if spool.file is None:
        return (
            []
            if spool.records == 0
            else [f"the manifest counts {spool.records} spooled call records but names no file"]
        )
    if spool.file not in {f.path for f in manifest.files}:
        return [f"{spool.file}: the CDR spool copy is not in the manifest"]
    copy = regular_file(root, spool.file)
    if copy is None:
        return []  # verify_files names it as missing or not a regular file
    try:
        records, problems = read_spool_copy(copy)
    except OSError as e:
        return [f"{spool.file}: cannot read: {e}"]
    problems = [f"{spool.file}: {problem}" for problem in problems]
    if len(records) != spool.records:
        problems.append(
            f"{spool.file}: {len(records)} readable call records, the manifest says"
            f" {spool.records}"
        )
    return problems


def restore_spool(root: Path, manifest: Manifest, data_dir: Path) -> int:
    """
    Append the backup's pending call records to the spool in ``data_dir``
    (created if needed; records already pending there are kept), durably.
    Warden replays them at its next start. Returns the number of records.

    Raises:
        BackupError: the spool cannot be written.
    """
    if manifest.database is None or manifest.database.spool.file is None:
        return 0
    copy = regular_file(root, manifest.database.spool.file)
    if copy is None:
        raise BackupError(f"{manifest.database.spool.file}: not a regular file inside the backup")
    data = copy.read_bytes()
    path = Path(default_spool_path(str(data_dir)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and _last_byte(path, size) != b"\n":
                data = b"\n" + data  # never glue a record to a torn line
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as e:
        raise BackupError(f"{path}: cannot restore the CDR spool: {e}") from None
    return manifest.database.spool.records


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)
