"""
The backup manifest: what a backup holds and how to tell it is intact.

A backup is a directory (or an encrypted archive of one, see
L{warden.backup.crypto}) with ``manifest.json`` at its root::

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
      "files": [{"path": "database/warden.db", "sha256": "...", "size": 4096}, ...],
      "signature": "hmac-sha256:..."
    }

Every file of the backup except the manifest itself is listed with its SHA-256
and size; L{verify_files} checks them and names the first problems it finds.

The manifest is authenticated: ``signature`` is the HMAC-SHA256 of the
manifest's canonical JSON (every other field, sorted keys, no spaces) under the
backup's manifest key (L{warden.backup.signing}). L{read_manifest}
checks it before it looks at any field, so a backup that is unsigned, signed
with another key or modified is refused before anything else is read from it.
Every path the manifest names must then be a plain relative path under
``database/``, ``config/`` or ``files/`` (no absolute path, no ``..``, no
empty or ``.`` component, each file listed once), and every file it names must
be a regular file reached without symbolic links.

``database.spool`` describes the call records that were still pending in the CDR
spool (L{warden.store.spool}) and are not in the database copy: ``row_counts``
count the copy alone, ``spool.records`` those pending records, and
``last_cdr_at`` is the newest end time of either. Manifests without it (older
backups) read as a spool with nothing pending.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

MANIFEST_NAME = "manifest.json"
FORMAT = 1
BACKUP_TYPES = ("full", "database", "config", "files")
_CHUNK = 1 << 20
SIGNATURE = "signature"
_SIGNATURE_PREFIX = "hmac-sha256:"
#: The largest manifest read (about 200,000 files).
MAX_MANIFEST_BYTES = 64 << 20
#: The top-level directories a backup's files live in.
PARTS = ("database", "config", "files")


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

    def to_json(self, key: bytes) -> str:
        """The manifest as indented JSON, signed with ``key`` (see L{sign})."""
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
        data[SIGNATURE] = sign(data, key)
        return json.dumps(data, indent=2, sort_keys=False) + "\n"


def _canonical(data: dict[str, Any]) -> bytes:
    """The bytes a signature covers: every field but the signature, canonically."""
    unsigned = {k: v for k, v in data.items() if k != SIGNATURE}
    return json.dumps(
        unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def sign(data: dict[str, Any], key: bytes) -> str:
    """The signature of a manifest's fields: ``hmac-sha256:<hex>``."""
    return _SIGNATURE_PREFIX + hmac.new(key, _canonical(data), hashlib.sha256).hexdigest()


def verify_signature(data: dict[str, Any], key: bytes) -> None:
    """
    Check the manifest's signature against ``key``.

    Raises:
        BackupError: unsigned, or signed with another key, or modified.
    """
    signature = data.get(SIGNATURE)
    if not isinstance(signature, str) or not signature.startswith(_SIGNATURE_PREFIX):
        raise BackupError(
            f"{MANIFEST_NAME}: not signed; Warden restores only backups whose manifest"
            " is signed with its manifest key"
        )
    try:
        expected = sign(data, key)
    except ValueError:
        expected = ""
    if not hmac.compare_digest(signature.encode("ascii", "replace"), expected.encode("ascii")):
        raise BackupError(
            f"{MANIFEST_NAME}: the signature does not match the manifest key (signed with"
            " another key, or modified); give the key the backup was made with"
            " (--signing-key FILE, or --key-file for an encrypted backup)"
        )


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


def safe_path(value: Any, field: str, part: str | None = None) -> str:
    """
    ``value`` when it is a plain relative path (POSIX, no empty, ``.`` or ``..``
    component, no NUL) under one of L{PARTS} (or under ``part``).

    Raises:
        BackupError: naming ``field`` and the problem.
    """
    if not isinstance(value, str) or not value:
        raise BackupError(f"{MANIFEST_NAME}: {field}: missing or not a string")
    shown = json.dumps(value)[:200]
    if value.startswith("/"):
        raise BackupError(f"{MANIFEST_NAME}: {field}: {shown} is an absolute path")
    parts = value.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\0" in value or len(value) > 4096:
        raise BackupError(
            f"{MANIFEST_NAME}: {field}: {shown} is not a plain relative path"
            " (empty, '.' or '..' components)"
        )
    allowed = (part,) if part is not None else PARTS
    if len(parts) < 2 or parts[0] not in allowed:
        raise BackupError(
            f"{MANIFEST_NAME}: {field}: {shown} is not under {' or '.join(allowed)}/"
        )
    return value


def _parse_files(data: dict[str, Any]) -> tuple[FileEntry, ...]:
    files: dict[str, FileEntry] = {}
    for entry in _need(data, "files", list):
        if not isinstance(entry, dict):
            raise BackupError(f"{MANIFEST_NAME}: files: entries must be objects")
        path = safe_path(entry.get("path"), "files.path")
        if path in files:
            raise BackupError(f"{MANIFEST_NAME}: files: {path} is listed twice")
        size = _need(entry, "size", int)
        if size < 0:
            raise BackupError(f"{MANIFEST_NAME}: files: {path}: negative size")
        files[path] = FileEntry(path, _need(entry, "sha256", str), size)
    return tuple(files.values())


def _listed(path: Any, field: str, part: str, listed: set[str]) -> str:
    """``path`` when it is a safe path under ``part`` that the manifest lists."""
    checked = safe_path(path, field, part)
    if checked not in listed:
        raise BackupError(f"{MANIFEST_NAME}: {field}: {checked} is not listed in files")
    return checked


def _parse_config(value: Any, listed: set[str]) -> dict[str, Any] | None:
    """The ``config`` part, its stored paths checked (the original names are kept)."""
    if not isinstance(value, dict):
        return None
    if value.get("file"):
        _listed(value["file"], "config.file", "config", listed)
    referenced = value.get("referenced") or {}
    if not isinstance(referenced, dict):
        raise BackupError(f"{MANIFEST_NAME}: config.referenced: not a JSON object")
    for stored, original in referenced.items():
        _listed(stored, "config.referenced", "config", listed)
        if not isinstance(original, str):
            raise BackupError(f"{MANIFEST_NAME}: config.referenced: {stored}: not a string")
    return value


def parse_manifest(text: str, key: bytes) -> Manifest:
    """
    Parse ``manifest.json`` after checking its signature with ``key``.

    Raises:
        BackupError: not JSON, unsigned or wrongly signed, a newer format, a
            field missing or mistyped, or a path that is not a plain relative
            path inside the backup.
    """
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BackupError(f"{MANIFEST_NAME}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise BackupError(f"{MANIFEST_NAME}: not a JSON object")
    verify_signature(data, key)
    fmt = _need(data, "format", int)
    if fmt > FORMAT:
        raise BackupError(
            f"{MANIFEST_NAME}: backup format {fmt} is newer than this Warden reads ({FORMAT})"
        )
    kind = _need(data, "type", str)
    if kind not in BACKUP_TYPES:
        raise BackupError(f"{MANIFEST_NAME}: type: unknown backup type {kind!r}")
    files = _parse_files(data)
    listed = {f.path for f in files}
    database = None
    if data.get("database") is not None:
        db = _need(data, "database", dict)
        counts = _need(db, "row_counts", dict)
        last = db.get("last_cdr_at")
        spool = _parse_spool(db.get("spool"))
        if spool.file is not None:
            _listed(spool.file, "database.spool.file", "database", listed)
        database = DatabaseInfo(
            _need(db, "dialect", str),
            _listed(db.get("file"), "database.file", "database", listed),
            {str(k): int(v) for k, v in counts.items()},
            _time(last),
            spool,
        )
    schema = data.get("schema_version")
    return Manifest(
        warden_version=_need(data, "warden_version", str),
        schema_version=schema if isinstance(schema, int) else None,
        type=kind,
        created_at=float(_need(data, "created_at", (int, float))),
        files=files,
        database=database,
        config=_parse_config(data.get("config"), listed),
        file_dirs=tuple(str(d) for d in data.get("file_dirs") or ()),
        format=fmt,
    )


def read_manifest(root: Path, key: bytes) -> Manifest:
    """
    Read ``root/manifest.json`` (a regular file, not a link) and check its
    signature with ``key``.

    Raises:
        BackupError: missing, unreadable, too large, or refused by
            L{parse_manifest}.
    """
    path = root / MANIFEST_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BackupError(f"{root}: no {MANIFEST_NAME}; not a Warden backup") from None
    except OSError as e:
        raise BackupError(f"{path}: cannot read (a symbolic link?): {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BackupError(f"{path}: not a regular file")
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BackupError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BackupError(f"{path}: cannot read: {e}") from None
    return parse_manifest(text, key)


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


def regular_file(root: Path, relative: str) -> Path | None:
    """
    ``root/relative`` when it is a regular file reached without following a
    symbolic link (in any component), else None.
    """
    path = root / relative
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        if path.resolve(strict=True) != root.resolve(strict=True) / relative:
            return None
    except (OSError, RuntimeError):
        return None
    return path


def copy_regular_file(source: str | Path, destination: str | Path) -> str:
    """
    Copy the regular file ``source`` to ``destination`` (with its times and
    mode) without following a symbolic link at ``source``, even one swapped in
    after it was checked.

    Raises:
        BackupError: ``source`` is a link or not a regular file.
    """
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise BackupError(f"{source}: cannot copy (a symbolic link?): {e.strerror}") from None
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise BackupError(f"{source}: not a regular file; backups hold regular files only")
        with open(destination, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
    shutil.copystat(source, destination, follow_symlinks=False)
    return str(destination)


def irregular_entries(root: Path) -> list[str]:
    """
    Everything under ``root`` that is neither a directory nor a regular file
    (symbolic links, devices, pipes, sockets), relative to ``root``.
    """
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(subdirs + names):
            path = Path(directory) / name
            mode = os.lstat(path).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                found.append(path.relative_to(root).as_posix())
    return found


def verify_files(root: Path, manifest: Manifest) -> list[str]:
    """
    Check every file the manifest lists (a regular file, not reached through a
    symbolic link; size, then SHA-256) and look for files it does not list and
    for anything that is not a regular file or directory.

    Returns:
        One line per problem (empty when the backup is intact), e.g.
        ``database/warden.db: SHA-256 mismatch (expected ab12..., got 9f3c...)``.
    """
    problems: list[str] = []
    listed = set()
    for entry in manifest.files:
        listed.add(entry.path)
        path = regular_file(root, entry.path)
        if path is None:
            exists = os.path.lexists(root / entry.path)
            problems.append(
                f"{entry.path}: not a regular file (a symbolic link?)" if exists else
                f"{entry.path}: missing"
            )  # fmt: skip
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
    irregular = irregular_entries(root)
    problems += [
        f"{relative}: a symbolic link or special file; backups hold regular files only"
        for relative in irregular
        if relative not in listed
    ]
    for path in walk_files(root):
        relative = path.relative_to(root).as_posix()
        if relative not in listed and relative not in irregular:
            problems.append(f"{relative}: not listed in the manifest")
    return problems
