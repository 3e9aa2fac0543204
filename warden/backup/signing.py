"""
Manifest keys: the secret every backup's manifest is signed with.

Every backup's ``manifest.json`` carries an HMAC-SHA256 signature
(L{warden.backup.manifest.sign}); restore and the drill refuse a backup
whose manifest is unsigned or signed with another key before reading anything
else from it. The key depends on the backup's form:

- An encrypted archive's manifest is signed with a key derived from the
  backup key (HKDF-SHA256), so the one key file that opens the archive also
  authenticates its manifest.
- A plain directory's manifest is signed with the installation's signing key:
  ``[backup] signing_key_file``, by default ``<data_dir>/backup-signing.key``,
  32 random bytes created (mode 0600) by the first backup.

Restoring a plain backup on another machine (disaster recovery) needs that
signing key: ``wardenctl restore --signing-key FILE`` or ``[backup]
signing_key_file``. Restore never creates a signing key.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from warden.backup import crypto
from warden.backup.manifest import BackupError

SIGNING_KEY_NAME = "backup-signing.key"
_KEY_BYTES = 32
_ARCHIVE_INFO = b"warden backup manifest signing key v1"


def signing_key_path(configured: str, data_dir: str) -> Path:
    """The signing key file: ``configured``, or ``<data_dir>/backup-signing.key``."""
    return Path(configured) if configured else Path(data_dir) / SIGNING_KEY_NAME


def ensure_signing_key(path: Path) -> bytes:
    """
    The signing key in ``path``, created first (32 random bytes, mode 0600, its
    directory 0700 when created) when there is none.

    Raises:
        BackupError: the file cannot be read or created, or is not a key.
    """
    if not path.exists():
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            pass  # made meanwhile by another backup: read that one
        except OSError as e:
            raise BackupError(f"{path}: cannot create the signing key: {e.strerror}") from None
        else:
            try:
                os.write(fd, os.urandom(_KEY_BYTES).hex().encode("ascii") + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
    return crypto.load_key(path)


def load_signing_key(path: Path) -> bytes:
    """
    The signing key in ``path`` (never created here).

    Raises:
        BackupError: no such file (saying how to give the key), or not a key.
    """
    if not path.exists():
        raise BackupError(
            f"{path}: no backup signing key; give the key the backups were made with"
            " (--signing-key FILE or [backup] signing_key_file)"
        )
    return crypto.load_key(path)


def archive_manifest_key(backup_key: bytes) -> bytes:
    """The manifest key of encrypted archives, derived from the backup key."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=_ARCHIVE_INFO)
    return hkdf.derive(backup_key)


@attrs.frozen
class ManifestKeys:
    """
    How to authenticate manifests while restoring.

    Attributes:
        backup_key: the key of encrypted archives, if given.
        signing_key_file: the signing key of plain backups (read when needed).
    """

    backup_key: bytes | None
    signing_key_file: Path

    def for_backup(self, encrypted: bool) -> bytes:
        """
        The manifest key of an encrypted archive or of a plain directory.

        Raises:
            BackupError: that key is not available.
        """
        if encrypted:
            if self.backup_key is None:
                raise BackupError("the backup is encrypted; give its key file")
            return archive_manifest_key(self.backup_key)
        return load_signing_key(self.signing_key_file)


def manifest_keys(backup_key_file: str, signing_key_file: str, data_dir: str) -> ManifestKeys:
    """
    The keys a restore or drill authenticates manifests with: the backup key
    (read now, when given) and the signing key file (read when a plain backup
    is opened; ``signing_key_file`` "" means the data directory's).

    Raises:
        BackupError: the backup key file cannot be read.
    """
    backup_key = crypto.load_key(backup_key_file) if backup_key_file else None
    return ManifestKeys(backup_key, signing_key_path(signing_key_file, data_dir))
