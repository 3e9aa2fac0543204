"""
``wardenctl admin``, ``wardenctl drain`` and ``wardenctl trunks``::

    wardenctl admin add NAME                 # prints a one-time password
    wardenctl admin list
    wardenctl admin token ACCOUNT NAME --scopes read,write   # prints the token once
    wardenctl admin disable NAME | enable NAME | remove NAME
    wardenctl drain [--timeout S] [--wait] [--url URL]
    wardenctl trunks [--json] [--url URL]

``admin`` works on the database directly (like ``extension``); ``drain`` and
``trunks`` (registration state, last error and calls in progress of each
trunk: live state only the server holds) ask the running server through the
admin API, authenticated by an API token (``drain``: the ``write`` scope;
``trunks``: ``read``) from ``$WARDEN_ADMIN_TOKEN`` or ``--token-file``. It trusts
the server's generated certificate from the data directory (or the configured
one), never an unverified connection.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
from typing import Any, TextIO

import attrs
from twisted.internet import defer, ssl, task
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from warden.admin import auth as admin_auth
from warden.admin.service import CERT_FILE
from warden.config import WardenConfig
from warden.ctl.audit import CliAudit, action_of
from warden.errors import AdminAccountExists
from warden.interfaces import IAdminStore, IAuditLog
from warden.model.admin import SCOPES

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_ACCOUNT = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_POLL_INTERVAL = 1.0


def _account_arg(text: str) -> str:
    if not _ACCOUNT.match(text):
        raise argparse.ArgumentTypeError(
            f"an account name is 1..64 letters, digits, '.', '_', '@' or '-', got {text!r}"
        )
    return text


def _scopes_arg(text: str) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not scopes or any(s not in SCOPES for s in scopes):
        raise argparse.ArgumentTypeError(f"scopes are a comma list from {','.join(SCOPES)}")
    return scopes


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"a number of seconds 0..86400, got {text!r}")
    return value


def add_commands(areas: Any) -> None:
    """Register ``admin`` and ``drain`` on wardenctl's sub-parsers."""
    admin = areas.add_parser("admin", help="admin API accounts and tokens")
    commands = admin.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = commands.add_parser("add", help="add an account; prints its one-time password")
    add.add_argument("name", metavar="NAME", type=_account_arg)
    add.set_defaults(admin_handler=_add)
    listing = commands.add_parser("list", help="list accounts")
    listing.set_defaults(admin_handler=_list)
    token = commands.add_parser("token", help="create an API token; prints it once")
    token.add_argument("account", metavar="ACCOUNT", type=_account_arg)
    token.add_argument("name", metavar="NAME", help="what the token is for")
    token.add_argument("--scopes", type=_scopes_arg, default=("read",),
                       help="comma list from read,write,calls (default read)")  # fmt: skip
    token.set_defaults(admin_handler=_token)
    reset = commands.add_parser(
        "reset-password",
        help="give an account a new one-time password (prints it); its sessions and"
        " tokens stop working",
    )
    reset.add_argument("name", metavar="NAME", type=_account_arg)
    reset.set_defaults(admin_handler=_change)
    for command, text in (
        ("disable", "disable an account: no login; its sessions and tokens stop working"),
        ("enable", "enable a disabled account again"),
        ("remove", "remove an account; its sessions and tokens stop working"),
    ):
        change = commands.add_parser(command, help=text)
        change.add_argument("name", metavar="NAME", type=_account_arg)
        change.set_defaults(admin_handler=_change)

    drain = areas.add_parser("drain", help="drain the running server (no new calls)")
    drain.add_argument("--timeout", type=_seconds_arg, help="seconds to wait for calls")
    drain.add_argument("--wait", action="store_true", help="wait until drained")
    drain.add_argument("--url", help="admin API base (default: from [admin] listen)")
    drain.add_argument("--token-file", help="file holding the API token")
    drain.set_defaults(admin_handler=_drain)

    trunks = areas.add_parser(
        "trunks", help="the running server's trunks: registration, last error, calls"
    )
    trunks.add_argument("--json", action="store_true", help="print JSON")
    trunks.add_argument("--url", help="admin API base (default: from [admin] listen)")
    trunks.add_argument("--token-file", help="file holding the API token (read scope)")
    trunks.set_defaults(admin_handler=_trunks)


async def _add(args: argparse.Namespace, ctx: _Ctx) -> int:
    ctx.audit.target = args.name
    try:
        password = await admin_auth.add_account(
            ctx.store(), ctx.clock, args.name, ctx.config.security.fips
        )
    except AdminAccountExists:
        print(f"wardenctl: admin account {args.name} already exists", file=ctx.err)
        return EXIT_FAILED
    _print_password(ctx, f"added admin account {args.name}", password)
    return EXIT_OK


def _print_password(ctx: _Ctx, heading: str, password: str) -> None:
    print(heading, file=ctx.out)
    print(f"one-time password: {password}", file=ctx.out)
    print("it is shown only now; change it with POST /api/v1/auth/password", file=ctx.out)


async def _list(args: argparse.Namespace, ctx: _Ctx) -> int:
    for account in await ctx.store().list_accounts():
        mfa = "mfa" if account.mfa_enabled else "no-mfa"
        state = "  disabled" if account.disabled else ""
        print(f"{account.name}  {mfa}{state}", file=ctx.out)
    return EXIT_OK


async def _token(args: argparse.Namespace, ctx: _Ctx) -> int:
    store = ctx.store()
    ctx.audit.detail = {"owner": args.account, "name": args.name, "scopes": list(args.scopes)}
    owner = await store.get_account(args.account)
    if owner is None:
        print(f"wardenctl: no admin account {args.account}", file=ctx.err)
        return EXIT_FAILED
    full, token = await admin_auth.issue_token(
        store, ctx.clock, owner, args.name, args.scopes, ctx.config.admin.token_seconds
    )
    ctx.audit.target = token.token_id
    ctx.audit.detail["expires_at"] = token.expires_at
    print(full, file=ctx.out)
    return EXIT_OK


async def _change(args: argparse.Namespace, ctx: _Ctx) -> int:
    ctx.audit.target = args.name
    store = ctx.store()
    account = await store.get_account(args.name)
    if account is None:
        print(f"wardenctl: no admin account {args.name}", file=ctx.err)
        return EXIT_FAILED
    if args.command == "reset-password":
        password = await admin_auth.reset_password(store, account, ctx.config.security.fips)
        _print_password(ctx, f"new password of admin account {args.name}", password)
    elif args.command == "remove":
        await store.remove_account(args.name)
        print(f"removed admin account {args.name}", file=ctx.out)
    else:
        await store.update_account(attrs.evolve(account, disabled=args.command == "disable"))
        print(f"{args.command}d admin account {args.name}", file=ctx.out)
    return EXIT_OK


def admin_url(config: WardenConfig) -> str:
    """``https://HOST:PORT`` of the admin listener in ``config``."""
    listen = config.admin.listen
    parts = [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", listen)]
    port = parts[1].removeprefix("port=")
    host = "127.0.0.1"
    for part in parts[2:]:
        if part.startswith("interface="):
            host = part.removeprefix("interface=") or host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _trust(config: WardenConfig) -> Any:
    path = config.admin.certificate or os.path.join(config.server.data_dir, CERT_FILE)
    try:
        with open(path, "rb") as f:
            return ssl.Certificate.loadPEM(f.read())
    except OSError:
        return None  # a configured, publicly trusted certificate: the platform's roots


def _api_token(args: argparse.Namespace, ctx: _Ctx, scope: str) -> str | None:
    """The API token from ``--token-file`` or WARDEN_ADMIN_TOKEN; None (said why) if none."""
    token = os.environ.get("WARDEN_ADMIN_TOKEN", "")
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.readline().strip()
        except OSError as e:
            print(f"wardenctl: {args.token_file}: {e.strerror}", file=ctx.err)
            return None
    if not token:
        print(
            f"wardenctl: set WARDEN_ADMIN_TOKEN or --token-file (a token with the {scope}"
            f" scope: wardenctl admin token ACCOUNT NAME --scopes {scope})",
            file=ctx.err,
        )
        return None
    return token


def _api(args: argparse.Namespace, ctx: _Ctx) -> tuple[Agent, str]:
    """An HTTPS agent trusting the admin certificate, and the API's base URL."""
    base = (args.url or admin_url(ctx.config)).rstrip("/")
    return Agent(ctx.clock, BrowserLikePolicyForHTTPS(trustRoot=_trust(ctx.config))), base


async def _drain(args: argparse.Namespace, ctx: _Ctx) -> int:
    token = _api_token(args, ctx, "write")
    if token is None:
        return EXIT_USAGE
    agent, base = _api(args, ctx)
    body = {} if args.timeout is None else {"timeout": args.timeout}
    status, result = await _request(agent, b"POST", f"{base}/api/v1/drain", token, body)
    if status != 202:
        print(f"wardenctl: drain refused ({status}): {_message(result)}", file=ctx.err)
        return EXIT_FAILED
    print(f"draining; {result.get('active_calls', 0)} calls in progress", file=ctx.out)
    while args.wait and not result.get("finished"):
        await task.deferLater(ctx.clock, _POLL_INTERVAL, lambda: None)
        status, result = await _request(agent, b"GET", f"{base}/api/v1/drain", token, None)
        if status != 200:
            print(f"wardenctl: drain status failed ({status}): {_message(result)}", file=ctx.err)
            return EXIT_FAILED
    if args.wait:
        print("drained", file=ctx.out)
    return EXIT_OK


async def _trunks(args: argparse.Namespace, ctx: _Ctx) -> int:
    token = _api_token(args, ctx, "read")
    if token is None:
        return EXIT_USAGE
    agent, base = _api(args, ctx)
    status, result = await _request(agent, b"GET", f"{base}/api/v1/trunks", token, None)
    if status != 200 or not isinstance(result, dict):
        print(f"wardenctl: trunks refused ({status}): {_message(result)}", file=ctx.err)
        return EXIT_FAILED
    trunks = result.get("trunks", [])
    if args.json:
        print(json.dumps(trunks, indent=2), file=ctx.out)
        return EXIT_OK
    rows = [("NAME", "STATE", "ADDRESS", "CALLS", "LAST ERROR")]
    for t in trunks:
        host = t.get("address") or t.get("host")
        address = f"{t.get('transport', 'udp')}:{host}:{t.get('port')}"
        calls = str(t.get("calls_in_progress", 0))
        rows.append((str(t.get("name")), str(t.get("state")), address, calls,
                     str(t.get("last_error") or "-")))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [f"{value:<{width}}" for value, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]), file=ctx.out)
    return EXIT_OK


def _message(result: Any) -> str:
    try:
        return str(result["error"]["message"])
    except (KeyError, TypeError):
        return "unexpected answer"


async def _request(
    agent: Agent, method: bytes, url: str, token: str, body: Any
) -> tuple[int, Any]:
    headers = Headers({"authorization": [f"Bearer {token}"]})
    producer = None
    if body is not None:
        headers.addRawHeader("content-type", "application/json")
        producer = FileBodyProducer(io.BytesIO(json.dumps(body).encode()))
    response = await agent.request(method, url.encode(), headers, producer)
    raw = await readBody(response)
    try:
        return response.code, json.loads(raw)
    except ValueError:
        return response.code, None


class _Ctx:
    def __init__(self, config: WardenConfig, clock: IReactorTime, out: TextIO, err: TextIO,
                 store: IAdminStore | None, audit: CliAudit) -> None:  # fmt: skip
        self.config = config
        self.clock = clock
        self.out = out
        self.err = err
        self._store = store
        self.audit = audit

    def store(self) -> IAdminStore:
        assert self._store is not None
        return self._store


def run_admin(
    args: argparse.Namespace,
    config: WardenConfig,
    clock: IReactorTime,
    out: TextIO,
    err: TextIO,
    store: IAdminStore | None,
    audit_log: IAuditLog | None = None,
) -> defer.Deferred[int]:
    """
    Run an ``admin`` or ``drain`` command; fires with the exit status. Every
    ``admin`` command but ``list`` is recorded in ``audit_log`` (``drain`` is
    recorded by the server, as an API request).
    """
    ctx = _Ctx(config, clock, out, err, store, CliAudit(audit_log, clock))

    async def run() -> int:
        code: int = await args.admin_handler(args, ctx)
        if args.area == "admin" and args.command != "list":
            await ctx.audit.record(action_of(args), code)
        return code

    return defer.Deferred.fromCoroutine(run())


def main(args: argparse.Namespace, config: WardenConfig) -> int:
    """Run the command under the reactor (``wardenctl`` calls this); returns the status."""
    code = EXIT_FAILED

    async def run(reactor: Any) -> None:
        nonlocal code
        store = None
        audit = None
        pool = None
        try:
            if args.area == "admin":  # the store [store] url names (SQLite or PostgreSQL)
                from warden.store.backend import admin_stores, check_store, open_stores

                check_store(config.store_url, config.store.password_file)
                pool = open_stores(
                    config.store_url, reactor, config.store.password_file, pool_size=1
                )
                await pool.migrate()
                store, audit = admin_stores(pool.pool)
            code = await run_admin(args, config, reactor, sys.stdout, sys.stderr, store, audit)
        except Exception as e:  # the command line: one line, not a traceback
            print(f"wardenctl: {e}", file=sys.stderr)
            code = EXIT_FAILED
        finally:
            if pool is not None:
                pool.close()
        raise SystemExit(code)

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_FAILED
    return code  # pragma: no cover (react always exits)
