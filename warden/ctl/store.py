"""
``wardenctl migrate-store``: copy Warden's durable data from one store to another::

    wardenctl migrate-store --from sqlite:/var/lib/warden/warden.db \\
        --to postgresql://warden@db.example.com/warden [--to-password-file FILE] [--merge]

Both ends are store URLs (L{warden.store.url}); either may be SQLite or
PostgreSQL. Both schemas are brought up to date first. Extensions and call
records are copied and the counts verified (L{warden.store.copy}); the target
must be empty unless ``--merge`` is given. A PostgreSQL end's password comes
from its ``--from-password-file`` / ``--to-password-file``, else from
``WARDEN_STORE_PASSWORD``; never from the command line.

Exit status: 0 copied and verified, 1 failed (the message says why), 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from twisted.internet import task
from twisted.internet.defer import Deferred

from warden.config import WardenConfig
from warden.errors import StoreError
from warden.store.backend import Stores, check_store, open_stores
from warden.store.copy import copy_store
from warden.store.pgpool import one_line
from warden.store.url import StoreURL, parse_store_url

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _url_arg(text: str) -> StoreURL:
    try:
        return parse_store_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_commands(areas: Any) -> None:
    """Add ``migrate-store`` to wardenctl's sub-parsers."""
    migrate = areas.add_parser(
        "migrate-store", help="copy extensions and call records to another store"
    )
    migrate.add_argument(
        "--from", dest="source", metavar="URL", required=True, type=_url_arg,
        help="the store to copy (sqlite:/path or postgresql://user@host:port/db)",
    )  # fmt: skip
    migrate.add_argument(
        "--to", dest="target", metavar="URL", required=True, type=_url_arg,
        help="the store to copy into",
    )  # fmt: skip
    migrate.add_argument(
        "--from-password-file", metavar="FILE", default="",
        help="the source's PostgreSQL password (else $WARDEN_STORE_PASSWORD)",
    )  # fmt: skip
    migrate.add_argument(
        "--to-password-file", metavar="FILE", default="",
        help="the target's PostgreSQL password (else $WARDEN_STORE_PASSWORD)",
    )  # fmt: skip
    migrate.add_argument(
        "--merge", action="store_true", help="add to a target that already holds data"
    )
    migrate.set_defaults(store_migration=True)


async def run_on_store(
    reactor: Any, config: WardenConfig, work: Callable[[Stores], Awaitable[int]]
) -> int:
    """
    Open the store ``[store] url`` names (SQLite or PostgreSQL), bring its schema
    up to date, run ``work`` on it and close it; the exit status. A store that
    cannot be opened or fails is one line on standard error, never a traceback.
    """
    url = config.store_url
    try:
        check_store(url, config.store.password_file)
        stores = open_stores(url, reactor, config.store.password_file, pool_size=1)
    except StoreError as e:
        print(f"wardenctl: {e}", file=sys.stderr)
        return EXIT_FAILED
    try:
        await stores.migrate()
        return await work(stores)
    except (StoreError, stores.dialect_errors) as e:
        message = one_line(e)
        where = "" if message.startswith(f"store {url}") else f"store {url}: "
        print(f"wardenctl: {where}{message}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        stores.close()


def react_on_store(config: WardenConfig, work: Callable[[Any, Stores], Awaitable[int]]) -> int:
    """
    L{run_on_store} under ``task.react``: ``work`` gets the reactor and the
    open store; the exit status.
    """
    codes: list[int] = []

    async def main(reactor: Any) -> None:
        codes.append(await run_on_store(reactor, config, lambda stores: work(reactor, stores)))

    try:
        task.react(main)
    except SystemExit:
        pass
    return codes[0] if codes else EXIT_FAILED


def _environ(password_file: str) -> dict[str, str]:
    """A password file, when given, wins over WARDEN_STORE_PASSWORD."""
    return {} if password_file else dict(os.environ)


async def _migrate(reactor: Any, args: argparse.Namespace, out: TextIO) -> None:
    source_url: StoreURL = args.source
    target_url: StoreURL = args.target
    if str(source_url) == str(target_url):
        raise StoreError("--from and --to name the same store")
    opened: list[Stores] = []
    try:
        ends = []
        for url, password_file in (
            (source_url, args.from_password_file),
            (target_url, args.to_password_file),
        ):
            environ = _environ(password_file)
            check_store(url, password_file, environ)
            stores = open_stores(url, reactor, password_file, pool_size=2, environ=environ)
            opened.append(stores)
            await stores.migrate()
            ends.append(stores)
        source, target = ends
        report = await copy_store(
            source.directory,
            source.records,
            target.directory,
            target.records,
            merge=args.merge,
            progress=lambda line: print(line, file=out),
        )
    finally:
        for stores in opened:
            stores.close()
    print(
        f"migrated {report.extensions} extensions and {report.call_records} call records"
        f" from {source_url} to {target_url}; the target holds {report.target_extensions}"
        f" extensions and {report.target_call_records} call records (verified)",
        file=out,
    )


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run ``migrate-store`` on the global reactor; returns the exit status."""
    result = {"code": EXIT_OK}

    async def main(reactor: Any) -> None:
        try:
            await _migrate(reactor, args, out)
        except StoreError as e:
            print(f"wardenctl: {e}", file=err)
            result["code"] = EXIT_FAILED
        except Exception as e:
            # A database driver error: one line, never a traceback.
            print(f"wardenctl: migrate-store failed: {one_line(e)}", file=err)
            result["code"] = EXIT_FAILED

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
    except SystemExit:
        pass
    return result["code"]
