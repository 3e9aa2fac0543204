"""
``wardenctl``: manage Warden's extensions and read its call records from the
command line.

It reads the same configuration as the server (``--config``, ``--data-dir``,
``--domain``, through L{load_effective_config}), so the digests it stores are
for the realm the server uses; it brings the database schema up to date, and
then runs one command::

    wardenctl extension add 100 --name "Front Desk" [--qualify] [--ring-timeout S]
    wardenctl extension list [--json]
    wardenctl extension show 100 [--json]
    wardenctl extension set 100 [--name N] [--password PW | --new-password]
                                [--algorithms MD5,SHA-256] [--enable | --disable]
                                [--qualify | --no-qualify] [--ring-timeout S|default]
    wardenctl extension remove 100
    wardenctl extension import phones.csv
    wardenctl cdr list [--since WHEN] [--until WHEN] [--extension N]
                       [--disposition D] [--limit N] [--csv | --json]
    wardenctl cdr export FILE.csv [the same filters]
    wardenctl calls [--json]
    wardenctl registrations [EXTENSION] [--json] | nodes [--json]  (warden.ctl.cluster)
    wardenctl backup [--type T] [--to DIR] [--key-file FILE]      (warden.ctl.backup)
    wardenctl restore BACKUP [--to-database URL|PATH] [--data-dir DIR] [--force]
    wardenctl admin add NAME | list | reset-password NAME | token ACCOUNT NAME [--scopes ...]
    wardenctl drain [--timeout S] [--wait] [--token-file F]       (warden.ctl.admin)
    wardenctl trunks [--json] [--token-file F]                    (warden.ctl.admin)
    wardenctl voicemail pin NUMBER [--clear] | list NUMBER [--json] (warden.ctl.voicemail)
    wardenctl stir keygen --out key.pem | csr --key key.pem --subject S  (warden.ctl.stir)
    wardenctl location add NAME --civic "country=US,A1=CA,..." | list [--json] | remove NAME
    wardenctl location map NETWORK NAME | unmap NETWORK           (warden.ctl.location)
    wardenctl voicemail email NUMBER ADDRESS|--clear                (warden.ctl.voicemail)

WHEN is ISO-8601 (``2026-11-25T10:00``, local time unless it has an offset), a
date (``2026-11-25``) or a time ago (``30m``, ``1h``, ``7d``).

Exit status: 0 on success, 1 when the extension does not exist (or the database
fails), 2 for bad arguments, a bad configuration, a bad import file or an export
file that cannot be written.

The work is done by L{run_command}, which takes the stores as arguments and
returns a Deferred, so tests drive it with memory stores; L{main} wires it to
SQLite under ``task.react``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import tzinfo
from typing import Any, TextIO

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from warden import present
from warden.config import WardenConfig, load_effective_config
from warden.ctl import admin as admin_ctl
from warden.ctl import backup as backup_ctl
from warden.ctl import calls as ctl_calls
from warden.ctl import cluster as ctl_cluster
from warden.ctl import location as location_ctl
from warden.ctl import stir as stir_ctl
from warden.ctl import store as ctl_store
from warden.ctl import voicemail as voicemail_ctl
from warden.ctl.audit import CliAudit, action_of, audit_standalone
from warden.digits import parse_decimal
from warden.errors import ConfigError, ExtensionExists, ExtensionNotFound
from warden.filemodes import private_umask
from warden.interfaces import (
    IAuditLog,
    ICallRecordStore,
    ICivicLocationStore,
    IDirectory,
    ILiveCalls,
)
from warden.model import (
    MAX_RING_TIMEOUT,
    MIN_RING_TIMEOUT,
    CallRecord,
    Extension,
    ring_timeout_value,
)
from warden.store.backend import Stores, admin_stores
from warden.store.civic import SQLCivicLocationStore
from warden.store.credentials import (
    FIPS_MD5_REFUSED,
    display_name_problem,
    generate_password,
    make_extension,
    parse_algorithms,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_NUMBER = re.compile(r"^[0-9]{1,32}$")
_IMPORT_HEADERS = ("SEQUENTIAL", "RANDOM", "USER")


class CommandError(Exception):
    """A command cannot be carried out; ``message`` goes to stderr, ``code`` is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _number_problem(number: str) -> str | None:
    if _NUMBER.match(number):
        return None
    return f"an extension number must be 1 to 32 digits, got {number!r}"


def _name_arg(text: str) -> str:
    problem = display_name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _number_arg(text: str) -> str:
    problem = _number_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _algorithms_arg(text: str) -> tuple[str, ...]:
    if text.strip().lower() == "default":
        return ()
    try:
        return parse_algorithms(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_call_commands(areas: Any) -> None:
    filters = ctl_calls.filter_arguments()
    cdr = areas.add_parser("cdr", help="call records")
    commands = cdr.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", parents=[filters], help="list call records")
    listing.add_argument(
        "--limit",
        metavar="N",
        type=ctl_calls.limit_arg,
        default=100,
        help="at most this many (default 100)",
    )
    output = listing.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="print CSV (RFC 4180)")
    output.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_cdr_list)
    export = commands.add_parser("export", parents=[filters], help="write call records as CSV")
    export.add_argument("file", metavar="FILE")
    export.add_argument(
        "--limit", metavar="N", type=ctl_calls.limit_arg, help="at most this many (default: all)"
    )
    export.set_defaults(handler=_cdr_export)

    calls = areas.add_parser("calls", help="list the calls in progress")
    calls.add_argument("--json", action="store_true", help="print JSON")
    calls.set_defaults(handler=_calls)


def build_parser() -> argparse.ArgumentParser:
    """The ``wardenctl`` argument parser."""
    parser = argparse.ArgumentParser(prog="wardenctl", description="Manage a Warden PBX.")
    parser.add_argument("--config", metavar="FILE", help="the TOML configuration file")
    parser.add_argument("--data-dir", metavar="DIR", help="overrides [server] data_dir")
    parser.add_argument(
        "--domain",
        metavar="NAME",
        action="append",
        default=[],
        help="a domain of the PBX, as for twistd warden --domain (repeatable): the first"
        " is the digest realm when [server] realm and domains are unset",
    )
    areas = parser.add_subparsers(dest="area", required=True, metavar="AREA")
    extension = areas.add_parser("extension", help="manage extensions")
    commands = extension.add_subparsers(dest="command", required=True, metavar="COMMAND")
    algorithms_help = "digest algorithms offered, e.g. MD5,SHA-256 ('default': the registrar's)"
    qualify_help = "send OPTIONS to its phones periodically; skip unreachable ones when ringing"
    ring_help = (
        "seconds its phones ring before the call counts as unanswered (voicemail, forward"
        " on no answer), 1 to 600, or 'default'"
    )

    add = commands.add_parser("add", help="add an extension")
    add.add_argument("number", metavar="NUMBER", type=_number_arg)
    add.add_argument("--name", default="", type=_name_arg, help="display name")
    add.add_argument(
        "--password",
        help="SIP password (default: generate and print one); other local users can"
        " see command lines, so prefer the generated one",
    )
    add.add_argument("--algorithms", type=_algorithms_arg, default=(), help=algorithms_help)
    add.add_argument("--qualify", action="store_true", help=qualify_help)
    add.add_argument(
        "--ring-timeout", metavar="SECONDS", type=_ring_timeout_arg, default=0.0,
        help=ring_help,
    )  # fmt: skip
    add.set_defaults(handler=_add)

    listing = commands.add_parser("list", help="list extensions")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

    show = commands.add_parser("show", help="show one extension (never its secrets)")
    show.add_argument("number", metavar="NUMBER", type=_number_arg)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)

    change = commands.add_parser("set", help="change an extension")
    change.add_argument("number", metavar="NUMBER", type=_number_arg)
    change.add_argument("--name", type=_name_arg, help="display name")
    secret = change.add_mutually_exclusive_group()
    secret.add_argument("--password", help="new SIP password")
    secret.add_argument(
        "--new-password", action="store_true", help="generate and print a new password"
    )
    change.add_argument("--algorithms", type=_algorithms_arg, help=algorithms_help)
    state = change.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_const", const=True)
    state.add_argument("--disable", dest="enabled", action="store_const", const=False)
    qualify = change.add_mutually_exclusive_group()
    qualify.add_argument(
        "--qualify", dest="qualify", action="store_const", const=True, help=qualify_help
    )
    qualify.add_argument("--no-qualify", dest="qualify", action="store_const", const=False)
    change.add_argument(
        "--location", metavar="NAME",
        help="its dispatchable location for emergency calls (wardenctl location; '' clears)",
    )  # fmt: skip
    change.add_argument(
        "--ring-timeout", metavar="SECONDS", type=_ring_timeout_arg, help=ring_help
    )
    change.set_defaults(handler=_set)

    remove = commands.add_parser("remove", help="remove an extension")
    remove.add_argument("number", metavar="NUMBER", type=_number_arg)
    remove.set_defaults(handler=_remove)

    bulk = commands.add_parser(
        "import", help="add or replace extensions from a 'number;password[;name]' file"
    )
    bulk.add_argument("file", metavar="FILE")
    bulk.set_defaults(handler=_import)
    _add_call_commands(areas)
    ctl_cluster.add_commands(areas)
    backup_ctl.add_commands(areas)
    ctl_store.add_commands(areas)
    admin_ctl.add_commands(areas)
    voicemail_ctl.add_commands(areas)
    stir_ctl.add_commands(areas)
    location_ctl.add_commands(areas)
    return parser


class _Context:
    """What a command handler works with."""

    def __init__(
        self,
        args: argparse.Namespace,
        config: WardenConfig,
        directory: IDirectory,
        clock: IReactorTime,
        out: TextIO,
        err: TextIO,
        call_records: ICallRecordStore | None = None,
        live_calls: ILiveCalls | None = None,
        tz: tzinfo | None = None,
        audit: CliAudit | None = None,
        civic_locations: ICivicLocationStore | None = None,
    ) -> None:
        self.args = args
        self.civic_locations = civic_locations
        self.audit = audit if audit is not None else CliAudit(None, clock)
        self.config = config
        self.directory = directory
        self.clock = clock
        self.out = out
        self.err = err
        self._call_records = call_records
        self._live_calls = live_calls
        self.tz = tz

    @property
    def call_records(self) -> ICallRecordStore:
        if self._call_records is None:
            raise CommandError("no call record store", EXIT_FAILED)
        return self._call_records

    @property
    def live_calls(self) -> ILiveCalls:
        if self._live_calls is None:
            raise CommandError("no live-call store", EXIT_FAILED)
        return self._live_calls

    def print(self, text: str) -> None:
        print(text, file=self.out)

    async def existing(self, number: str) -> Extension:
        extension = await self.directory.get_extension(number)
        if extension is None:
            raise CommandError(f"no extension {number}", EXIT_FAILED)
        return extension


_Handler = Callable[[_Context], Coroutine[Deferred[Any], Any, None]]


def _ring_timeout_arg(text: str) -> float:
    """``--ring-timeout``: seconds (1 to 600), or ``default`` (or 0) to clear it."""
    if text.strip().lower() == "default":
        return 0.0
    value = parse_decimal(text.strip(), MAX_RING_TIMEOUT)
    number = -1.0 if value is None else ring_timeout_value(value)
    if number < 0:
        raise argparse.ArgumentTypeError(
            f"the ring timeout is seconds from {MIN_RING_TIMEOUT:g} to {MAX_RING_TIMEOUT:g},"
            f" or 'default', got {text!r}"
        )
    return number


def _ring_timeout_text(extension: Extension) -> str:
    return f"{extension.ring_timeout:g} s" if extension.ring_timeout else "default"


def _check_password(password: str) -> str:
    if not password:
        raise CommandError("the password must not be empty", EXIT_USAGE)
    return password


def _check_algorithms(ctx: _Context, algorithms: tuple[str, ...] | None) -> None:
    """No MD5 for an extension in FIPS mode."""
    if ctx.config.security.fips and "MD5" in (algorithms or ()):
        raise CommandError(f"--algorithms: {FIPS_MD5_REFUSED}", EXIT_USAGE)


async def _add(ctx: _Context) -> None:
    args = ctx.args
    _check_algorithms(ctx, args.algorithms)
    generated = args.password is None
    password = generate_password() if generated else _check_password(args.password)
    extension = make_extension(
        args.number, args.name, ctx.config.realm, password, args.algorithms,
        md5=not ctx.config.security.fips,
    )  # fmt: skip
    extension = attrs.evolve(extension, qualify=args.qualify, ring_timeout=args.ring_timeout)
    ctx.audit.target = args.number
    ctx.audit.detail = {"name": args.name, "generated_password": generated}
    try:
        await ctx.directory.add_extension(extension)
    except ExtensionExists:
        raise CommandError(f"extension {args.number} already exists", EXIT_FAILED) from None
    ctx.print(f"added extension {args.number}")
    if generated:
        ctx.print(f"password: {password}")


def _describe(extension: Extension) -> dict[str, Any]:
    """An extension as operators see it: never the HA1 values."""
    return {
        "number": extension.number,
        "name": extension.name,
        "realm": extension.realm,
        "algorithms": list(extension.algorithms),
        "enabled": extension.enabled,
        "qualify": extension.qualify,
        "ring_timeout": extension.ring_timeout or None,
    }


def _algorithms_text(extension: Extension) -> str:
    return ",".join(extension.algorithms) or "default"


async def _list(ctx: _Context) -> None:
    extensions = await ctx.directory.list_extensions()
    if ctx.args.json:
        ctx.print(json.dumps([_describe(e) for e in extensions], indent=2))
        return
    rows = [("NUMBER", "NAME", "ALGORITHMS", "ENABLED")] + [
        (e.number, e.name, _algorithms_text(e), "yes" if e.enabled else "no") for e in extensions
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        ctx.print("  ".join([*cells, row[3]]))


async def _show(ctx: _Context) -> None:
    extension = await ctx.existing(ctx.args.number)
    if ctx.args.json:
        ctx.print(json.dumps(_describe(extension), indent=2))
        return
    realm = extension.realm
    if realm != ctx.config.realm:
        realm += f" (the configured realm is {ctx.config.realm}: set a new password)"
    ctx.print(f"number:     {extension.number}")
    ctx.print(f"name:       {extension.name}")
    ctx.print(f"realm:      {realm}")
    ctx.print(f"algorithms: {_algorithms_text(extension)}")
    ctx.print(f"enabled:    {'yes' if extension.enabled else 'no'}")
    ctx.print(f"qualify:    {'yes' if extension.qualify else 'no'}")
    ctx.print(f"ring:       {_ring_timeout_text(extension)}")


async def _set(ctx: _Context) -> None:
    args = ctx.args
    _check_algorithms(ctx, args.algorithms)
    fields = {
        "name": args.name, "algorithms": args.algorithms, "enabled": args.enabled,
        "qualify": args.qualify, "ring_timeout": args.ring_timeout,
    }  # fmt: skip
    changes = {key: value for key, value in fields.items() if value is not None}
    password = generate_password() if args.new_password else args.password
    location = args.location
    if not changes and password is None and location is None:
        raise CommandError(
            "nothing to change: give --name, --password, --new-password,"
            " --algorithms, --enable, --disable, --qualify, --no-qualify, --location"
            " or --ring-timeout",
            EXIT_USAGE,
        )
    ctx.audit.target = args.number
    ctx.audit.detail = {
        "fields": sorted(
            [
                *changes,
                *(["password"] if password else []),
                *(["location"] if location is not None else []),
            ]
        )
    }
    if location is not None:
        await _set_location(ctx, args.number, location)
        if not changes and password is None:
            return
    changed = attrs.evolve(await ctx.existing(args.number), **changes)
    if password is not None:
        kept = changed
        changed = make_extension(
            changed.number,
            changed.name,
            ctx.config.realm,
            _check_password(password),
            changed.algorithms,
            changed.enabled,
            md5=not ctx.config.security.fips,
        )
        changed = attrs.evolve(changed, qualify=kept.qualify, ring_timeout=kept.ring_timeout)
    try:
        await ctx.directory.update_extension(changed)
    except ExtensionNotFound:
        raise CommandError(f"no extension {args.number}", EXIT_FAILED) from None
    ctx.print(f"updated extension {args.number}")
    if args.new_password:
        ctx.print(f"password: {password}")


async def _set_location(ctx: _Context, number: str, name: str) -> None:
    """``extension set NUMBER --location NAME``: the e911 plugin's location store."""
    await ctx.existing(number)
    if ctx.civic_locations is None:
        raise CommandError("emergency locations are not available here", EXIT_FAILED)
    try:
        await location_ctl.set_extension_location(ctx.civic_locations, number, name, ctx.out)
    except KeyError:
        raise CommandError(
            f"no location {name} (add it with wardenctl location add)", EXIT_FAILED
        ) from None


async def _remove(ctx: _Context) -> None:
    ctx.audit.target = ctx.args.number
    if not await ctx.directory.remove_extension(ctx.args.number):
        raise CommandError(f"no extension {ctx.args.number}", EXIT_FAILED)
    ctx.print(f"removed extension {ctx.args.number}")


def _import_line(fields: list[str], realm: str, md5: bool) -> Extension:
    if len(fields) not in (2, 3):
        raise ValueError(
            f"expected number;password or number;password;name, got {len(fields)} fields"
        )
    number, password = fields[0].strip(), fields[1].strip()
    problem = _number_problem(number)
    if problem is not None:
        raise ValueError(problem)
    if not password:
        raise ValueError("the password is empty")
    name = fields[2].strip() if len(fields) == 3 else ""
    problem = display_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return make_extension(number, name, realm, password, md5=md5)


def read_import_file(path: str, realm: str, md5: bool = True) -> list[Extension]:
    """
    Read a SIPp-style injection file: ``number;password[;name]`` per line
    (``md5``: keep MD5 HA1 values too, as L{make_extension}).

    An optional first line ``SEQUENTIAL``, ``RANDOM`` or ``USER`` (SIPp's header)
    is skipped, as are blank lines and ``#`` comments.

    Raises:
        CommandError: the file cannot be read, or a line is bad (the message names
            ``file:line``); nothing is imported then.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise CommandError(f"{path}: cannot read: {e.strerror}", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise CommandError(f"{path}: not UTF-8 text", EXIT_USAGE) from None
    extensions: list[Extension] = []
    first_line: dict[str, int] = {}
    seen_data = False
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not seen_data and text.split(",")[0].strip().upper() in _IMPORT_HEADERS:
            seen_data = True
            continue
        seen_data = True
        try:
            extension = _import_line(text.split(";"), realm, md5)
        except ValueError as e:
            raise CommandError(f"{path}:{lineno}: {e}", EXIT_USAGE) from None
        if extension.number in first_line:
            raise CommandError(
                f"{path}:{lineno}: extension {extension.number} already given on line"
                f" {first_line[extension.number]}",
                EXIT_USAGE,
            )
        first_line[extension.number] = lineno
        extensions.append(extension)
    return extensions


async def _import(ctx: _Context) -> None:
    started = ctx.clock.seconds()
    ctx.audit.target = os.path.abspath(ctx.args.file)
    extensions = read_import_file(
        ctx.args.file, ctx.config.realm, md5=not ctx.config.security.fips
    )
    added, updated = await ctx.directory.upsert_extensions(extensions)
    ctx.audit.detail = {"count": len(extensions), "added": added, "updated": updated}
    elapsed = ctx.clock.seconds() - started
    ctx.print(
        f"imported {len(extensions)} extensions ({added} added, {updated} updated)"
        f" for realm {ctx.config.realm} in {elapsed:.2f}s"
    )


# -- call records and live calls -------------------------------------------------


def _call_filters_of(ctx: _Context) -> dict[str, Any]:
    """The store filters given on the command line; bad times exit 2."""
    now = ctx.clock.seconds()
    filters: dict[str, Any] = {
        "extension": ctx.args.extension,
        "disposition": ctx.args.disposition,
    }
    for name in ("since", "until"):
        text = getattr(ctx.args, name)
        try:
            filters[name] = None if text is None else present.parse_when(text, now, ctx.tz)
        except ValueError as e:
            raise CommandError(f"--{name}: {e}", EXIT_USAGE) from None
    since, until = filters["since"], filters["until"]
    if since is not None and until is not None and since >= until:
        raise CommandError("--since must be before --until", EXIT_USAGE)
    return filters


async def _cdr_list(ctx: _Context) -> None:
    limit: int = ctx.args.limit
    records = await ctx.call_records.list(**_call_filters_of(ctx), limit=limit + 1)
    more, records = len(records) > limit, records[:limit]
    if ctx.args.csv:
        present.CsvWriter(ctx.out, ctx.tz).write(records)
    elif ctx.args.json:
        ctx.print(json.dumps([present.record_json(r) for r in records], indent=2))
    elif records:
        for line in present.record_table(records, ctx.tz):
            ctx.print(line)
    else:
        ctx.print("no call records match")
    if more:
        print(
            f"wardenctl: showing the first {limit} matching calls; narrow the time"
            " with --since/--until or raise --limit",
            file=ctx.err,
        )


async def _pages(
    ctx: _Context, filters: dict[str, Any], limit: int | None
) -> AsyncIterator[list[CallRecord]]:
    """Every matching record, oldest first, a page at a time (keyset paging)."""
    cursor: str | None = None
    left = limit
    while left is None or left > 0:
        size = 1000 if left is None else min(1000, left)
        page: list[CallRecord] = await ctx.call_records.list(
            **filters, limit=size, after_call_id=cursor
        )
        yield page
        if len(page) < size:
            return
        cursor = page[-1].call_id
        left = None if left is None else left - len(page)


async def _cdr_export(ctx: _Context) -> None:
    path: str = ctx.args.file
    ctx.audit.target = os.path.abspath(path)
    filters = _call_filters_of(ctx)
    ctx.audit.detail = {"filters": {k: v for k, v in filters.items() if v is not None}}
    partial = path + ".part"
    count = 0
    try:
        with open(partial, "w", encoding="utf-8", newline="") as f:
            writer = present.CsvWriter(f, ctx.tz)
            async for page in _pages(ctx, filters, ctx.args.limit):
                count += writer.write(page)
        os.replace(partial, path)
    except OSError as e:
        raise CommandError(f"{path}: cannot write: {e.strerror}", EXIT_USAGE) from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    ctx.audit.detail["count"] = count
    ctx.print(f"exported {count} call records to {path}")


async def _calls(ctx: _Context) -> None:
    calls = await ctx.live_calls.list()
    now = ctx.clock.seconds()
    if ctx.args.json:
        ctx.print(json.dumps([present.live_json(c, now) for c in calls], indent=2))
    elif calls:
        for line in present.live_table(calls, now):
            ctx.print(line)
    else:
        ctx.print("no calls in progress")


#: The commands that change something, or export call records: each is audited.
_AUDITED = frozenset([_add, _set, _remove, _import, _cdr_export])


def run_command(
    args: argparse.Namespace,
    config: WardenConfig,
    directory: IDirectory,
    clock: IReactorTime,
    out: TextIO,
    err: TextIO,
    *,
    call_records: ICallRecordStore | None = None,
    live_calls: ILiveCalls | None = None,
    tz: tzinfo | None = None,
    audit_log: IAuditLog | None = None,
    civic_locations: ICivicLocationStore | None = None,
) -> Deferred[int]:
    """
    Run the command parsed into ``args`` against the stores.

    Args:
        args: from L{build_parser}.
        config: the effective configuration (its realm is used for new HA1s).
        directory: where extensions live.
        clock: times the import; "now" for relative times and call durations.
        out: where results go.
        err: where error messages and notes go.
        call_records: read by ``cdr``.
        live_calls: read by ``calls``.
        tz: the zone times are shown and read in; None is the local zone.
        audit_log: where changes and CDR exports are recorded (L{warden.ctl.audit}).
        civic_locations: where ``extension set --location`` assigns a location.

    Returns:
        A Deferred firing with the exit status.
    """
    handler: _Handler = args.handler

    async def run() -> int:
        audit = CliAudit(audit_log, clock)
        code = EXIT_OK
        try:
            await handler(
                _Context(args, config, directory, clock, out, err, call_records, live_calls, tz,
                         audit, civic_locations)
            )  # fmt: skip
        except CommandError as e:
            print(f"wardenctl: {e.message}", file=err)
            code = e.code
        if handler in _AUDITED:
            await audit.record(action_of(args), code)
        return code

    return Deferred.fromCoroutine(run())


async def _run_with_store(
    reactor: IReactorTime, args: argparse.Namespace, config: WardenConfig
) -> None:
    """Run the command on the store ``[store] url`` names (SQLite or PostgreSQL)."""

    async def work(stores: Stores) -> int:
        state = ctl_cluster.open_state(config, reactor)  # [state] url: live calls of every node
        try:
            return await run_command(
                args,
                config,
                stores.directory,
                reactor,
                sys.stdout,
                sys.stderr,
                call_records=stores.records,
                live_calls=stores.live if state is None else ctl_cluster.live_calls(state),
                audit_log=admin_stores(stores.pool)[1],
                civic_locations=SQLCivicLocationStore(stores.pool),
            )
        finally:
            if state is not None:
                await state.close()

    raise SystemExit(await ctl_store.run_on_store(reactor, config, work))


def main(argv: Sequence[str] | None = None) -> int:
    """The ``wardenctl`` console script; returns the exit status."""
    private_umask()  # the database, backups and exports it writes hold secrets
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        config = load_effective_config(args.config, data_dir=args.data_dir, domains=args.domain)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except ConfigError as e:
        print(f"wardenctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "admin_handler", None) is not None:  # admin, drain
        return admin_ctl.main(args, config)
    if getattr(args, "store_migration", False):  # migrate-store
        return ctl_store.run(args)
    if getattr(args, "stir", None) is not None:  # stir keygen, stir csr
        return stir_ctl.run(args)
    if getattr(args, "voicemail", False):  # voicemail pin, voicemail list
        return voicemail_ctl.run(args, config)
    if getattr(args, "civic_location", False):  # location add|list|remove|map|unmap
        return location_ctl.run(args, config)
    if getattr(args, "standalone", None) is not None:  # backup, restore
        from twisted.internet import reactor

        code = backup_ctl.run_standalone(args, config, reactor, sys.stdout, sys.stderr)
        audit_standalone(args, config, code, sys.stderr)
        return code
    try:
        task.react(_run_with_store, (args, config))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_FAILED
    return EXIT_OK  # pragma: no cover (react always exits)
