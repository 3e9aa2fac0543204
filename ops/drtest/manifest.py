"""
The backup manifest: what a backup holds and how to tell it is intact.

A backup is a directory (or an encrypted archive of one, see
L{warden.ops.drtest.crypto}) with ``manifest.json`` at its root::

    {
      "format": 1,
      "warden_version": "0.1.0",
      "schema_version": 3,
      "type": "full",
      "created_at": 1764100000.25,
      "created_at_iso": "2026-11-25T19:46:40Z",
      "database": {"dialect": "sqlite", "file": "database/warden.db",
                   "row_counts": {"extensions": 2, ...}, "last_cdr_at": 1764099990.0,
                   "spool": {"file": "database/cdr-spool.jsonl", "records": 1,
                             "last_cdr_at": 1764099990.0}},
      "config": {"source": "/etc/warden/warden.toml", "files": {...}, "excluded_keys": []},
      "files": [{"path": "database/warden.db", "sha256": "...", "size": 4096}, ...]
    }

Every file of the backup except the manifest itself is listed with its SHA-256
and size; L{verify_files} checks them and names the first problems it finds.

``database.spool`` describes the call records that were still pending in the CDR
spool (L{warden.store.spool}) and are not in the database copy: ``row_counts``
count the copy alone, ``spool.records`` those pending records, and
``last_cdr_at`` is the newest end time of either. Manifests without it (older
backups) read as a spool with nothing pending.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

MANIFEST_NAME = "manifest.json"
FORMAT = 1
BACKUP_TYPES = ("full", "database", "config", "files")
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup cannot be made, read or restored; the message says why."""


@attrs.frozen
class FileEntry:
    """One file of a backup: its path relative to the backup root, SHA-256 and size."""

    path: str
    sha256: str
    size: int


@attrs.frozen
class SpoolInfo:
    """
    The CDR spool's pending call records in a backup.

    Attributes:
        file: their copy (JSON lines, as in the spool) relative to the backup
            root; None when nothing was pending.
        records: how many records it holds.
        last_cdr_at: the newest one's end time, or None.
    """

    file: str | None = None
    records: int = 0
    last_cdr_at: float | None = None


@attrs.frozen
class DatabaseInfo:
    """
    What the database part of a backup holds.

    Attributes:
        dialect: ``sqlite`` or ``postgresql``.
        file: the dump, relative to the backup root.
        row_counts: rows per table at the moment of the backup.
        last_cdr_at: the newest call record's end time (seconds since the
            epoch), in the database or pending in the spool; None without any.
        spool: the spool's pending records (not counted in ``row_counts``).
    """

    dialect: str
    file: str
    row_counts: dict[str, int]
    last_cdr_at: float | None
    spool: SpoolInfo = SpoolInfo()


@attrs.frozen
class Manifest:
    """The parsed ``manifest.json`` (see the module docstring)."""

    warden_version: str
    schema_version: int | None
    type: str
    created_at: float
    files: tuple[FileEntry, ...]
    database: DatabaseInfo | None = None
    config: dict[str, Any] | None = None
    file_dirs: tuple[str, ...] = ()
    format: int = FORMAT

    @property
    def newest_data_at(self) -> float:
        """The newest data point captured: the last CDR, else the backup time."""
        if self.database is not None and self.database.last_cdr_at is not None:
            return self.database.last_cdr_at
        return self.created_at

    def to_json(self) -> str:
        """The manifest as indented JSON."""
        data: dict[str, Any] = {
            "format": self.format,
            "warden_version": self.warden_version,
            "schema_version": self.schema_version,
            "type": self.type,
            "created_at": self.created_at,
            "created_at_iso": iso_time(self.created_at),
            "database": attrs.asdict(self.database) if self.database else None,
            "config": self.config,
            "file_dirs": list(self.file_dirs),
            "files": [attrs.asdict(f) for f in self.files],
        }
        return json.dumps(data, indent=2, sort_keys=False) + "\n"


def iso_time(seconds: float) -> str:
    """``seconds`` since the epoch as ISO-8601 UTC (``2026-11-25T19:46:40Z``)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _need(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BackupError(f"{MANIFEST_NAME}: {key}: missing or of the wrong type")
    return value


def _time(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _parse_spool(data: Any) -> SpoolInfo:
    if data is None:
        return SpoolInfo()
    if not isinstance(data, dict):
        raise BackupError(f"{MANIFEST_NAME}: database.spool: not a JSON object")
    file = data.get("file")
    if file is not None and not isinstance(file, str):
        raise BackupError(f"{MANIFEST_NAME}: database.spool.file: not a string")
    records = data.get("records")
    if not isinstance(records, int) or isinstance(records, bool) or records < 0:
        raise BackupError(f"{MANIFEST_NAME}: database.spool.records: missing or of the wrong type")
    return SpoolInfo(file, records, _time(data.get("last_cdr_at")))


def parse_manifest(text: str) -> Manifest:
    """
    Parse ``manifest.json``.

    Raises:
        BackupError: not JSON, a newer format, or a field missing or mistyped.
    """
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BackupError(f"{MANIFEST_NAME}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise BackupError(f"{MANIFEST_NAME}: not a JSON object")
    fmt = _need(data, "format", int)
    if fmt > FORMAT:
        raise BackupError(
            f"{MANIFEST_NAME}: backup format {fmt} is newer than this Warden reads ({FORMAT})"
        )
    kind = _need(data, "type", str)
    if kind not in BACKUP_TYPES:
        raise BackupError(f"{MANIFEST_NAME}: type: unknown backup type {kind!r}")
    files = []
    for entry in _need(data, "files", list):
        if not isinstance(entry, dict):
            raise BackupError(f"{MANIFEST_NAME}: files: entries must be objects")
        files.append(
            FileEntry(
                _need(entry, "path", str), _need(entry, "sha256", str), _need(entry, "size", int)
            )
        )
    database = None
    if data.get("database") is not None:
        db = _need(data, "database", dict)
        counts = _need(db, "row_counts", dict)
        last = db.get("last_cdr_at")
        database = DatabaseInfo(
            _need(db, "dialect", str),
            _need(db, "file", str),
            {str(k): int(v) for k, v in counts.items()},
            _time(last),
            _parse_spool(db.get("spool")),
        )
    schema = data.get("schema_version")
    return Manifest(
        warden_version=_need(data, "warden_version", str),
        schema_version=schema if isinstance(schema, int) else None,
        type=kind,
        created_at=float(_need(data, "created_at", (int, float))),
        files=tuple(files),
        database=database,
        config=data.get("config") if isinstance(data.get("config"), dict) else None,
        file_dirs=tuple(str(d) for d in data.get("file_dirs") or ()),
        format=fmt,
    )


def read_manifest(root: Path) -> Manifest:
    """
    Read ``root/manifest.json``.

    Raises:
        BackupError: missing or unreadable (see L{parse_manifest}).
    """
    try:
        text = (root / MANIFEST_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BackupError(f"{root}: no {MANIFEST_NAME}; not a Warden backup") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BackupError(f"{root / MANIFEST_NAME}: cannot read: {e}") from None
    return parse_manifest(text)


def sha256_file(path: Path) -> tuple[str, int]:
    """The SHA-256 (hex) and size of the file at ``path``."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def walk_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root``, in a stable order, except the manifest."""
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(names):
            path = Path(directory) / name
            if path.relative_to(root).as_posix() != MANIFEST_NAME:
                yield path


def describe_files(root: Path) -> tuple[FileEntry, ...]:
    """A L{FileEntry} for every file under ``root`` (the manifest left out)."""
    entries = []
    for path in walk_files(root):
        sha, size = sha256_file(path)
        entries.append(FileEntry(path.relative_to(root).as_posix(), sha, size))
    return tuple(entries)


def verify_files(root: Path, manifest: Manifest) -> list[str]:
    """
    Check every file the manifest lists (size, then SHA-256) and look for files
    it does not list.

    Returns:
        One line per problem (empty when the backup is intact), e.g.
        ``database/warden.db: SHA-256 mismatch (expected ab12..., got 9f3c...)``.
    """
    problems: list[str] = []
    listed = set()
    for entry in manifest.files:
        listed.add(entry.path)
        path = root / entry.path
        if not path.is_file():
            problems.append(f"{entry.path}: missing")
            continue
        sha, size = sha256_file(path)
        if size != entry.size:
            problems.append(
                f"{entry.path}: size {size}, the manifest says {entry.size} (truncated?)"
            )
        elif sha != entry.sha256:
            problems.append(
                f"{entry.path}: SHA-256 mismatch (expected {entry.sha256[:12]}...,"
                f" got {sha[:12]}...)"
            )
    for path in walk_files(root):
        relative = path.relative_to(root).as_posix()
        if relative not in listed:
            problems.append(f"{relative}: not listed in the manifest")
    return problems
