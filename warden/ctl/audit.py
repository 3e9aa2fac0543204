"""
Audit entries for ``wardenctl``: what the command line changes (admin accounts
and tokens, extensions, backups and restores) and every CDR export is appended
to the same append-only audit log as the admin API's requests
(L{warden.interfaces.IAuditLog}).

The actor is ``cli:<user>``, the local operating-system user running the
command; the source is ``local``; the action is ``wardenctl <area> <command>``;
the status is the command's exit status (0 done). The detail never holds a
password or token.
"""

from __future__ import annotations

import os
import pwd
from typing import Any, TextIO

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from warden.backup.database import SQLiteTarget, has_data, live_target, parse_target
from warden.config import WardenConfig
from warden.errors import StoreError
from warden.interfaces import IAuditLog
from warden.model.admin import AuditEntry
from warden.store.backend import admin_stores, open_stores

#: The source of every command-line entry (the API records the client address).
SOURCE = "local"


def cli_actor() -> str:
    """``cli:<user name>`` of the effective user (``cli:uid<N>`` without a name)."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid{uid}"
    return f"cli:{name}"


def action_of(args: Any) -> str:
    """``wardenctl extension add``: the area and command that ``args`` ran."""
    command = getattr(args, "command", None)
    return " ".join(["wardenctl", args.area, *([command] if command else [])])


@attrs.define
class CliAudit:
    """
    One command's audit entry: handlers set ``target`` and ``detail``; the
    runner calls L{record} with the exit status once the command has ended.

    Attributes:
        log: where entries go; None records nothing (a command with no store).
        clock: the time of the entry.
        actor: who ran it.
    """

    log: IAuditLog | None
    clock: IReactorTime
    actor: str = attrs.field(factory=cli_actor)
    target: str = ""
    detail: dict[str, Any] = attrs.field(factory=dict)

    async def record(self, action: str, status: int) -> None:
        """Append the entry for ``action`` ending with exit ``status``."""
        if self.log is None:
            return
        entry = AuditEntry(
            self.clock.seconds(), self.actor, SOURCE, action, self.target, status, self.detail
        )
        await self.log.append(entry)


def _store_holds_data(config: WardenConfig) -> bool:
    """Whether the configured store already holds a database (tables)."""
    target = live_target(config)
    if isinstance(target, SQLiteTarget):
        return has_data(target.path)
    from warden.backup import postgres

    return postgres.has_data(target.url)


def _standalone_entry(args: Any, config: WardenConfig) -> tuple[str, dict[str, Any]]:
    """The target and detail of a ``backup`` or ``restore`` entry."""
    if args.area == "backup":
        kind = args.type or config.backup.type
        encrypted = bool(args.key_file or config.backup.key_file)
        return args.to or config.backup.directory, {"type": kind, "encrypted": encrypted}
    try:
        to_database = parse_target(args.to_database).describe() if args.to_database else ""
    except ValueError:
        to_database = "(invalid)"
    detail = {
        "to_database": to_database, "force": bool(args.force),
        "data_dir": args.restore_data_dir or config.server.data_dir,
        "config_to": args.config_to or "",
    }  # fmt: skip
    return os.path.abspath(args.backup), detail


def audit_standalone(args: Any, config: WardenConfig, code: int, err: TextIO) -> None:
    """
    Record a finished ``wardenctl backup`` or ``restore`` (with its exit status)
    in the audit log of the configured store. Skipped, with a note, when that
    store holds no database yet: creating one would make it look live to the
    next restore.
    """
    try:
        if not _store_holds_data(config):
            print("wardenctl: no audit entry: the configured store is empty", file=err)
            return
    except (OSError, ValueError, StoreError) as e:
        print(f"wardenctl: no audit entry: {e}", file=err)
        return
    target, detail = _standalone_entry(args, config)

    async def write(reactor: Any) -> None:
        stores = open_stores(config.store_url, reactor, config.store.password_file, pool_size=1)
        try:
            await stores.migrate()
            audit = CliAudit(admin_stores(stores.pool)[1], reactor, target=target, detail=detail)
            await audit.record(action_of(args), code)
        except Exception as e:  # the command line: one line, not a traceback
            print(f"wardenctl: the audit entry could not be written: {e}", file=err)
        finally:
            stores.close()

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(write(reactor)))
    except SystemExit:
        pass
