"""Test data for the backup and drill tests: a small Warden installation on disk."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from warden.backup.backup import BackupSources
from warden.backup.database import SQLiteTarget
from warden.backup.manifest import MANIFEST_NAME, SIGNATURE, Manifest, read_manifest, sign
from warden.backup.restore import check_backup, migrate_sqlite_file
from warden.backup.signing import (
    SIGNING_KEY_NAME,
    ManifestKeys,
    load_signing_key,
    signing_key_path,
)
from warden.store.credentials import make_extension

REALM = "drill.test"


def password(number: str) -> str:
    """The test password of extension ``number``."""
    return f"pw-{number}-secret"


def make_database(
    path: Path, extensions: int = 3, cdrs: int = 5, last_cdr_at: float = 1000.0
) -> None:
    """A migrated Warden database with extensions 100.. and some call records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    migrate_sqlite_file(path)
    connection = sqlite3.connect(path)
    try:
        for i in range(extensions):
            number = str(100 + i)
            e = make_extension(number, f"User {number}", REALM, password(number))
            connection.execute(
                "INSERT INTO extensions (number, name, realm, ha1_md5, ha1_sha256, algorithms,"
                " enabled, qualify) VALUES (?, ?, ?, ?, ?, '', 1, 0)",
                (e.number, e.name, e.realm, e.ha1_md5, e.ha1_sha256),
            )
        for i in range(cdrs):
            connection.execute(
                "INSERT INTO call_records (call_id, caller, callee, dialled, started_at,"
                " answered_at, ended_at, disposition, hangup_side) VALUES"
                " (?, '100', '101', '101', ?, ?, ?, 'ANSWERED', 'caller')",
                (f"call-{i}", last_cdr_at - 60 - i, last_cdr_at - 50 - i, last_cdr_at - i),
            )
        connection.execute(
            "INSERT INTO bindings (aor, key, contact, expires_at) VALUES"
            " ('100', 'k', 'sip:100@192.0.2.1:5060', 99999999999)"
        )
        connection.commit()
    finally:
        connection.close()


def make_installation(root: Path, voicemails: int = 3) -> BackupSources:
    """A configuration file, a database and voicemail files under ``root``."""
    data = root / "data"
    make_database(data / "warden.db")
    for i in range(voicemails):
        box = data / "voicemail" / str(100 + i)
        box.mkdir(parents=True)
        (box / "msg0001.wav").write_bytes(bytes([i]) * (1000 + i))
    (root / "store.pass").write_text("not-a-real-password\n")
    (root / "backup.key").write_bytes(bytes(range(32)))
    config = root / "warden.toml"
    config.write_text(
        f'[server]\ndata_dir = "{data}"\nrealm = "{REALM}"\n'
        '[store]\npassword_file = "store.pass"\n'
        f'[backup]\nkey_file = "{root / "backup.key"}"\n'
        "[calls]\nring_timeout = 30\n"
    )
    return BackupSources(SQLiteTarget(str(data / "warden.db")), str(config), str(data))


def keys_of(sources: BackupSources, backup_key: bytes | None = None) -> ManifestKeys:
    """The keys that authenticate the manifests of ``sources``' backups."""
    return ManifestKeys(backup_key, signing_key_path(sources.signing_key_file, sources.data_dir))


def signing_key(data_dir: Path) -> bytes:
    """The signing key the backups of the data directory ``data_dir`` were made with."""
    return load_signing_key(data_dir / SIGNING_KEY_NAME)


def manifest_of(path: Path, sources: BackupSources) -> Manifest:
    """The verified manifest of the plain backup directory ``path``."""
    return read_manifest(path, keys_of(sources).for_backup(encrypted=False))


def check(path: Path, sources: BackupSources) -> tuple[Manifest | None, list[str]]:
    """L{check_backup} of the plain backup directory ``path``."""
    return check_backup(path, keys_of(sources).for_backup(encrypted=False))


def rewrite_manifest(path: Path, data: dict[str, Any], key: bytes | None) -> None:
    """Write ``data`` as the manifest of ``path``, signed with ``key`` (None: unsigned)."""
    data = {k: v for k, v in data.items() if k != SIGNATURE}
    if key is not None:
        data[SIGNATURE] = sign(data, key)
    (path / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")


def edit_manifest(path: Path, sources: BackupSources, **changes: Any) -> None:
    """Change fields of the plain backup ``path``'s manifest and sign it again."""
    data = json.loads((path / MANIFEST_NAME).read_text())
    data.update(changes)
    rewrite_manifest(path, data, keys_of(sources).for_backup(encrypted=False))
