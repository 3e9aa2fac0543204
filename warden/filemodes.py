"""
File modes of Warden's data: the database holds HA1 values (password
equivalents for SIP digest) and admin password hashes, the CDR spool and
backups hold the same, so everything Warden and ``wardenctl`` create is private
to their user (directories 0700, files 0600), whatever umask they start with.

L{private_umask} is set at the start of ``twistd warden`` and of ``wardenctl``;
L{tighten} removes group and other permissions from files an older Warden (or
a restore, or a copy) left open, and the server logs what it changed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from twisted.logger import Logger

from warden.config import WardenConfig

#: Group and other get nothing: new directories are 0700, new files 0600.
PRIVATE_UMASK = 0o077

_log = Logger()


def private_umask() -> None:
    """Make every file and directory this process creates private to its user."""
    os.umask(PRIVATE_UMASK)


def private_directories(config: WardenConfig) -> list[str]:
    """The directories whose contents are private: the data directory and backups."""
    data_dir = config.server.data_dir
    return [data_dir, config.backup.directory or os.path.join(data_dir, "backups")]


def _tighten_one(path: str, changed: list[str], failed: list[str]) -> None:
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode) or not mode & 0o077:
            return
        os.chmod(path, stat.S_IMODE(mode) & 0o700)
    except OSError:
        failed.append(path)
        return
    changed.append(path)


def tighten(roots: Iterable[str]) -> tuple[list[str], list[str]]:
    """
    Remove group and other permissions from each of ``roots`` and everything
    under it (symbolic links are neither followed nor changed). Missing roots
    are skipped.

    Returns:
        The paths changed, and the paths that could not be changed.
    """
    changed: list[str] = []
    failed: list[str] = []
    seen: set[str] = set()
    for root in roots:
        top = os.path.realpath(root)
        if top in seen or not os.path.isdir(top):
            continue
        seen.add(top)
        _tighten_one(top, changed, failed)
        for directory, dirs, files in os.walk(top, onerror=lambda e: failed.append(e.filename)):
            for name in [*dirs, *files]:
                _tighten_one(os.path.join(directory, name), changed, failed)
    return changed, failed


def secure_directories(roots: Iterable[str]) -> None:
    """L{tighten} ``roots`` and log a warning when anything was open to others."""
    roots = list(roots)
    changed, failed = tighten(roots)
    if changed:
        _log.warn(
            "Made {count} files and directories under {roots} private to Warden's user"
            " (they were open to other users; they hold password equivalents),"
            " e.g. {example}",
            count=len(changed), roots=", ".join(roots), example=changed[0],
        )  # fmt: skip
    if failed:
        _log.warn(
            "Could not make {count} paths under {roots} private (not Warden's files?),"
            " e.g. {example}: check their owner and mode",
            count=len(failed), roots=", ".join(roots), example=failed[0],
        )  # fmt: skip
