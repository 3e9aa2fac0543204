"""
``wardenctl backup`` and ``wardenctl restore``::

    wardenctl backup [--type full|database|config|files] [--to DIR] [--key-file FILE]
    wardenctl restore BACKUP [--to-database URL|PATH] [--data-dir DIR]
                             [--config-to DIR] [--key-file FILE]
                             [--signing-key FILE] [--force]

``backup`` prints the path of the new backup. ``restore`` verifies the backup
(the manifest's signature first, then its paths, every SHA-256 and the schema
version) before writing anything, migrates a
backup from an older Warden forward, refuses one from a newer Warden, and
refuses to overwrite a database that holds data unless ``--force`` is given.
Call records that were pending in the CDR spool when the backup was taken are
appended to the spool in the data directory; Warden replays them at its next
start. ``restore`` refuses while a Warden runs on that data directory or on the
target database (L{warden.runlock}), naming the process.

Exit status: 0 done, 1 failed (the message says why), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any, TextIO

from twisted.internet.interfaces import IReactorTime

from warden.backup import restore
from warden.backup.backup import (
    create_backup,
    idle_scheduling,
    lower_priority,
    sources_from_config,
)
from warden.backup.crypto import load_key
from warden.backup.database import Target, live_target, parse_target
from warden.backup.manifest import BackupError
from warden.backup.signing import manifest_keys
from warden.backup.spool import restore_spool
from warden.config import BACKUP_TYPES, WardenConfig

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_commands(areas: Any) -> None:
    """Add ``backup`` and ``restore`` to wardenctl's sub-parsers."""
    backup = areas.add_parser("backup", help="make a backup now")
    backup.add_argument("--type", choices=BACKUP_TYPES, default=None,
                        help="what to back up (default: [backup] type)")  # fmt: skip
    backup.add_argument("--to", metavar="DIR", help="where (default: [backup] directory)")
    backup.add_argument("--key-file", metavar="FILE", help="encrypt with this 256-bit key")
    backup.set_defaults(standalone=_backup)

    rest = areas.add_parser("restore", help="restore a backup (verified first)")
    rest.add_argument("backup", metavar="BACKUP", help="a backup directory or encrypted archive")
    rest.add_argument(
        "--to-database", metavar="URL|PATH", help="restore the database here (default: its own)"
    )
    rest.add_argument(
        "--data-dir", dest="restore_data_dir", metavar="DIR",
        help="restore voicemail, recordings and the CDR spool here (default: data_dir)",
    )  # fmt: skip
    rest.add_argument("--config-to", metavar="DIR", help="also restore the configuration here")
    rest.add_argument("--key-file", metavar="FILE", help="key of an encrypted backup")
    rest.add_argument(
        "--signing-key", metavar="FILE",
        help="key the manifests of unencrypted backups are signed with"
        " (default: [backup] signing_key_file, else <data_dir>/backup-signing.key)",
    )  # fmt: skip
    rest.add_argument(
        "--force", action="store_true", help="overwrite a database with data, and changed files"
    )
    rest.set_defaults(standalone=_restore)


def _key(args: argparse.Namespace, config: WardenConfig) -> bytes | None:
    key_file = args.key_file or config.backup.key_file
    return load_key(key_file) if key_file else None


def _backup(
    args: argparse.Namespace, config: WardenConfig, clock: IReactorTime, out: TextIO
) -> int:
    section = config.backup
    sources = sources_from_config(config, args.config)
    directory = Path(args.to or section.directory or Path(config.server.data_dir) / "backups")
    lower_priority()
    started = clock.seconds()
    with idle_scheduling():
        path = create_backup(
            sources, args.type or section.type, directory, started, _key(args, config)
        )
    print(f"backup {path} made in {clock.seconds() - started:.2f}s", file=out)
    return EXIT_OK


def _restore(
    args: argparse.Namespace, config: WardenConfig, clock: IReactorTime, out: TextIO
) -> int:
    try:
        target: Target = (
            parse_target(args.to_database) if args.to_database else live_target(config)
        )
    except ValueError as e:
        raise _Usage(f"--to-database: {e}") from None
    data_dir = Path(args.restore_data_dir or config.server.data_dir)
    with restore.exclusive_use(data_dir, target):
        return _restore_stopped(args, config, target, data_dir, out)


def _restore_stopped(
    args: argparse.Namespace, config: WardenConfig, target: Target, data_dir: Path, out: TextIO
) -> int:
    """The restore itself, once no Warden runs on ``data_dir`` and ``target``."""
    scratch = Path(tempfile.mkdtemp(prefix="warden-restore-"))
    try:
        keys = manifest_keys(
            args.key_file or config.backup.key_file,
            args.signing_key or config.backup.signing_key_file,
            config.server.data_dir,
        )
        root, manifest_key = restore.open_backup(Path(args.backup), keys, scratch)
        manifest, problems = restore.check_backup(root, manifest_key)
        if problems or manifest is None:
            raise BackupError(f"{args.backup}: " + "; ".join(problems[:10]))
        if manifest.database is not None:
            applied = restore.restore_database(root, manifest, target, args.force)
            note = f" (migrated: {', '.join(applied)})" if applied else ""
            print(f"restored the database into {target.describe()}{note}", file=out)
            spooled = restore_spool(root, manifest, data_dir)
            if spooled:
                print(
                    f"put {spooled} pending call records into the CDR spool in {data_dir};"
                    " Warden stores them in the database when it next starts",
                    file=out,
                )
        if any(f.path.startswith("files/") for f in manifest.files):
            count = restore.restore_files(root, manifest, data_dir, args.force)
            print(f"restored {count} files into {data_dir}", file=out)
        if args.config_to:
            written = restore.restore_config(root, manifest, Path(args.config_to))
            print(f"restored {len(written)} configuration files into {args.config_to}", file=out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return EXIT_OK


class _Usage(Exception):
    pass


def run_standalone(
    args: argparse.Namespace, config: WardenConfig, clock: IReactorTime, out: TextIO, err: TextIO
) -> int:
    """Run ``backup`` or ``restore``; returns the exit status."""
    try:
        code: int = args.standalone(args, config, clock, out)
    except _Usage as e:
        print(f"wardenctl: {e}", file=err)
        return EXIT_USAGE
    except BackupError as e:
        print(f"wardenctl: {e}", file=err)
        return EXIT_FAILED
    except OSError as e:
        print(f"wardenctl: {e}", file=err)
        return EXIT_FAILED
    return code
