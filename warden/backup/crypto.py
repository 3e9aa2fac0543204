"""
Encrypted backups: a tar stream of the backup directory sealed with AES-256-GCM.

The key file holds 32 random bytes, raw or as 64 hexadecimal digits (create one
with ``head -c 32 /dev/urandom > backup.key``). The archive is a stream of records
so that gigabytes of voicemail never sit in memory::

    header:  b"WDNBAK1\\n" + 8-byte random nonce prefix
    record:  4-byte big-endian ciphertext length, 1 flag byte (1 = last), ciphertext

Record ``i`` is sealed with nonce ``prefix + i`` (4 bytes, big-endian) and
authenticates the header, its index and its flag, so records cannot be
reordered, dropped, or cut off after any record but the last without detection.
"""

from __future__ import annotations

import os
import struct
import tarfile
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from warden.backup.manifest import BackupError

MAGIC = b"WDNBAK1\n"
SUFFIX = ".tar.aesgcm"
RECORD_BYTES = 1 << 20
_HEAD = struct.Struct(">IB")
_MAX_RECORD = RECORD_BYTES + 16


def load_key(path: str | Path) -> bytes:
    """
    Read a 256-bit key file (32 raw bytes, or 64 hex digits).

    Raises:
        BackupError: unreadable, or not a 256-bit key.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BackupError(f"{path}: cannot read the key file: {e.strerror}") from None
    if len(data) == 32:
        return data
    text = data.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise BackupError(f"{path}: a key file must hold 32 bytes, raw or as 64 hex digits")


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(4, "big")


def _aad(prefix: bytes, index: int, last: bool) -> bytes:
    return MAGIC + prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class _SealingWriter:
    """A write-only file object that seals what it is given into records."""

    def __init__(self, out: BinaryIO, key: bytes) -> None:
        self._out = out
        self._aes = AESGCM(key)
        self._prefix = os.urandom(8)
        self._index = 0
        self._buffer = bytearray()
        out.write(MAGIC + self._prefix)

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) > RECORD_BYTES:
            self._seal(bytes(self._buffer[:RECORD_BYTES]), last=False)
            del self._buffer[:RECORD_BYTES]
        return len(data)

    def _seal(self, plain: bytes, last: bool) -> None:
        if self._index >= 2**32:
            raise BackupError("archive too large for one key and nonce prefix")
        sealed = self._aes.encrypt(
            _nonce(self._prefix, self._index), plain, _aad(self._prefix, self._index, last)
        )
        self._out.write(_HEAD.pack(len(sealed), int(last)) + sealed)
        self._index += 1

    def finish(self) -> None:
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()


class _OpeningReader:
    """A read-only file object returning the plaintext of a sealed archive."""

    def __init__(self, source: BinaryIO, key: bytes, name: str) -> None:
        self._in = source
        self._aes = AESGCM(key)
        self._name = name
        head = source.read(len(MAGIC) + 8)
        if len(head) < len(MAGIC) + 8 or not head.startswith(MAGIC):
            raise BackupError(f"{name}: not an encrypted Warden backup")
        self._prefix = head[len(MAGIC) :]
        self._index = 0
        self._buffer = b""
        self._done = False

    def _next_record(self) -> None:
        head = self._in.read(_HEAD.size)
        if len(head) < _HEAD.size:
            raise BackupError(f"{self._name}: truncated (record {self._index} missing)")
        length, flag = _HEAD.unpack(head)
        if length > _MAX_RECORD or flag not in (0, 1):
            raise BackupError(f"{self._name}: corrupt record header at record {self._index}")
        sealed = self._in.read(length)
        if len(sealed) < length:
            raise BackupError(f"{self._name}: truncated inside record {self._index}")
        last = flag == 1
        try:
            plain = self._aes.decrypt(
                _nonce(self._prefix, self._index), sealed, _aad(self._prefix, self._index, last)
            )
        except InvalidTag:
            raise BackupError(
                f"{self._name}: record {self._index} fails authentication"
                " (wrong key, or the archive was modified)"
            ) from None
        self._index += 1
        self._buffer += plain
        if last:
            self._done = True
            if self._in.read(1):
                raise BackupError(f"{self._name}: data after the last record")

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            self._next_record()
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def seal_directory(source: Path, archive: Path, key: bytes) -> None:
    """Write ``source`` (a finished backup directory) as a sealed tar archive."""
    with open(archive, "wb") as out:
        writer = _SealingWriter(out, key)
        with tarfile.open(fileobj=writer, mode="w|") as tar:  # type: ignore[call-overload]
            tar.add(source, arcname=".")
        writer.finish()
        out.flush()
        os.fsync(out.fileno())


def check_archive_head(archive: Path, key: bytes) -> None:
    """
    Check that the first record of ``archive`` authenticates with ``key``:
    the archive was sealed with this key (each archive's random nonce prefix is
    bound into every record, so records of other archives cannot be spliced in).

    Raises:
        BackupError: not a Warden archive, unreadable, or another key.
    """
    try:
        with open(archive, "rb") as source:
            _OpeningReader(source, key, archive.name).read(1)
    except OSError as e:
        raise BackupError(f"{archive}: cannot read: {e}") from None


def open_archive(archive: Path, key: bytes, destination: Path) -> None:
    """
    Decrypt and unpack ``archive`` into the existing directory ``destination``.

    Raises:
        BackupError: wrong key, modified, truncated, or not a Warden archive.
    """
    try:
        with open(archive, "rb") as source:
            reader = _OpeningReader(source, key, archive.name)
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                tar.extractall(destination, filter="data")
            reader.read()  # authenticate up to the last record
    except OSError as e:
        raise BackupError(f"{archive}: cannot read: {e}") from None
    except tarfile.TarError as e:
        raise BackupError(f"{archive}: damaged archive: {e}") from None
