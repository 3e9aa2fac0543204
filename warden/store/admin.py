"""
SQL storage of the admin plugin, one layer for SQLite and PostgreSQL: accounts,
API tokens (L{IAdminStore}) and the append-only audit log (L{IAuditLog});
tables from schema ``0004_admin``.

Each method is one named interaction (``warden_store_interactions_total``; see
L{warden.store.dialect}).
"""

from __future__ import annotations

import builtins
import json
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.errors import AdminAccountExists, AdminAccountNotFound
from warden.interfaces import IAdminStore, IAuditLog
from warden.model.admin import AdminAccount, ApiToken, AuditEntry
from warden.store.dialect import Cursor, database
from warden.store.pgpool import PostgreSQLPool

__all__ = ["SQLAdminStore", "SQLAuditLog", "remaining_recovery_hashes"]

_ACCOUNT_COLUMNS = (
    "name, password_hash, created_at, totp_secret, totp_pending, totp_last_step,"
    " recovery_hashes, generation, disabled"
)
_TOKEN_COLUMNS = (
    "token_id, name, secret_hash, scopes, owner, created_at, revoked_at, owner_generation,"
    " expires_at"
)
#: UPDATE's SET list for every account column but the name.
_ACCOUNT_SET = (
    "password_hash = ?, created_at = ?, totp_secret = ?, totp_pending = ?,"
    " totp_last_step = ?, recovery_hashes = ?, generation = ?, disabled = ?"
)


def _account_row(a: AdminAccount) -> tuple[Any, ...]:
    return (
        a.name, a.password_hash, a.created_at, a.totp_secret, a.totp_pending,
        a.totp_last_step, json.dumps(list(a.recovery_hashes)), a.generation, a.disabled,
    )  # fmt: skip


def _account(row: tuple[Any, ...]) -> AdminAccount:
    name, password_hash, created_at, secret, pending, last_step, recovery, gen, disabled = row
    return AdminAccount(
        name=name, password_hash=password_hash, created_at=created_at, totp_secret=secret,
        totp_pending=pending, totp_last_step=int(last_step),
        recovery_hashes=json.loads(recovery), generation=int(gen), disabled=bool(disabled),
    )  # fmt: skip


def _token_row(t: ApiToken) -> tuple[Any, ...]:
    return (
        t.token_id, t.name, t.secret_hash, " ".join(t.scopes), t.owner, t.created_at,
        t.revoked_at, t.owner_generation, t.expires_at,
    )  # fmt: skip


def _token(row: tuple[Any, ...]) -> ApiToken:
    token_id, name, secret_hash, scopes, owner, created_at, revoked_at, gen, expires = row
    return ApiToken(
        token_id, name, secret_hash, tuple(scopes.split()), owner, created_at, revoked_at,
        int(gen), expires,
    )  # fmt: skip


async def _add_account_txn(cursor: Cursor, account: AdminAccount) -> None:
    insert = cursor.dialect.insert_new("admin_accounts", _ACCOUNT_COLUMNS, "name")
    await cursor.execute(insert, _account_row(account))
    if cursor.rowcount == 0:
        raise AdminAccountExists(account.name)


async def _get_account_txn(cursor: Cursor, name: str) -> AdminAccount | None:
    await cursor.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM admin_accounts WHERE name = ?", (name,))
    row = cursor.fetchone()
    return None if row is None else _account(row)


async def _update_account_txn(cursor: Cursor, account: AdminAccount) -> None:
    row = _account_row(account)
    await cursor.execute(
        f"UPDATE admin_accounts SET {_ACCOUNT_SET} WHERE name = ?", (*row[1:], row[0])
    )
    if cursor.rowcount == 0:
        raise AdminAccountNotFound(account.name)


async def _list_accounts_txn(cursor: Cursor) -> list[AdminAccount]:
    await cursor.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM admin_accounts ORDER BY name")
    return [_account(row) for row in cursor.fetchall()]


async def _remove_account_txn(cursor: Cursor, name: str) -> bool:
    await cursor.execute("DELETE FROM admin_accounts WHERE name = ?", (name,))
    return bool(cursor.rowcount)


async def _claim_totp_step_txn(cursor: Cursor, name: str, step: int) -> bool:
    await cursor.execute(
        "UPDATE admin_accounts SET totp_last_step = ? WHERE name = ? AND totp_last_step < ?",
        (step, name, step),
    )
    return bool(cursor.rowcount)


def remaining_recovery_hashes(stored: str, digest: str) -> str | None:
    """The stored JSON list of recovery hashes without ``digest``; None when absent."""
    hashes = json.loads(stored)
    if digest not in hashes:
        return None
    return json.dumps([h for h in hashes if h != digest])


async def _use_recovery_code_txn(cursor: Cursor, name: str, digest: str) -> bool:
    # The row stays locked (PostgreSQL) until the update: a code is used once.
    await cursor.execute(
        "SELECT recovery_hashes FROM admin_accounts WHERE name = ?" + cursor.dialect.for_update,
        (name,),
    )
    row = cursor.fetchone()
    left = None if row is None else remaining_recovery_hashes(row[0], digest)
    if left is None:
        return False
    await cursor.execute(
        "UPDATE admin_accounts SET recovery_hashes = ? WHERE name = ? AND recovery_hashes = ?",
        (left, name, row[0]),
    )
    return bool(cursor.rowcount)


async def _add_token_txn(cursor: Cursor, t: ApiToken) -> None:
    await cursor.execute(
        f"INSERT INTO api_tokens ({_TOKEN_COLUMNS}) VALUES ({', '.join('?' * 9)})",
        _token_row(t),
    )


async def _get_token_txn(cursor: Cursor, token_id: str) -> ApiToken | None:
    await cursor.execute(
        f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_id = ?", (token_id,)
    )
    row = cursor.fetchone()
    return None if row is None else _token(row)


async def _list_tokens_txn(cursor: Cursor) -> list[ApiToken]:
    await cursor.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, token_id")
    return [_token(row) for row in cursor.fetchall()]


async def _revoke_token_txn(cursor: Cursor, token_id: str, at: float) -> bool:
    await cursor.execute(
        "UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
        (at, token_id),
    )
    return bool(cursor.rowcount)


@implementer(IAdminStore)
class SQLAdminStore:
    """L{IAdminStore} on the shared SQLite or PostgreSQL pool."""

    def __init__(self, pool: adbapi.ConnectionPool | PostgreSQLPool) -> None:
        self._db = database(pool)

    def add_account(self, account: AdminAccount) -> Deferred[None]:
        """See L{IAdminStore.add_account}."""
        return self._db.run("add_admin_account", _add_account_txn, account)

    def get_account(self, name: str) -> Deferred[AdminAccount | None]:
        """See L{IAdminStore.get_account}."""
        return self._db.run("get_admin_account", _get_account_txn, name)

    def update_account(self, account: AdminAccount) -> Deferred[None]:
        """See L{IAdminStore.update_account}."""
        return self._db.run("update_admin_account", _update_account_txn, account)

    def list_accounts(self) -> Deferred[builtins.list[AdminAccount]]:
        """See L{IAdminStore.list_accounts}."""
        return self._db.run("list_admin_accounts", _list_accounts_txn)

    def remove_account(self, name: str) -> Deferred[bool]:
        """See L{IAdminStore.remove_account}."""
        return self._db.run("remove_admin_account", _remove_account_txn, name)

    def claim_totp_step(self, name: str, step: int) -> Deferred[bool]:
        """See L{IAdminStore.claim_totp_step}."""
        return self._db.run("claim_totp_step", _claim_totp_step_txn, name, step)

    def use_recovery_code(self, name: str, digest: str) -> Deferred[bool]:
        """See L{IAdminStore.use_recovery_code}."""
        return self._db.run("use_recovery_code", _use_recovery_code_txn, name, digest)

    def add_token(self, token: ApiToken) -> Deferred[None]:
        """See L{IAdminStore.add_token}."""
        return self._db.run("add_api_token", _add_token_txn, token)

    def get_token(self, token_id: str) -> Deferred[ApiToken | None]:
        """See L{IAdminStore.get_token}."""
        return self._db.run("get_api_token", _get_token_txn, token_id)

    def list_tokens(self) -> Deferred[builtins.list[ApiToken]]:
        """See L{IAdminStore.list_tokens}."""
        return self._db.run("list_api_tokens", _list_tokens_txn)

    def revoke_token(self, token_id: str, at: float) -> Deferred[bool]:
        """See L{IAdminStore.revoke_token}."""
        return self._db.run("revoke_api_token", _revoke_token_txn, token_id, at)


async def _append_audit_txn(cursor: Cursor, e: AuditEntry) -> int:
    await cursor.execute(
        "INSERT INTO audit_log (at, actor, source, action, target, status, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (e.at, e.actor, e.source, e.action, e.target, e.status, json.dumps(e.detail)),
    )
    return int(cursor.fetchone()[0])


async def _list_audit_txn(
    cursor: Cursor,
    since: float | None,
    until: float | None,
    actor: str | None,
    limit: int,
    after_id: int | None,
) -> list[AuditEntry]:
    sql, params = _audit_query(since, until, actor, after_id)
    await cursor.execute(sql, (*params, limit))
    return _audit_entries(cursor.fetchall())


def _audit_query(
    since: float | None, until: float | None, actor: str | None, after_id: int | None
) -> tuple[str, list[Any]]:
    """An audit-log page's SELECT (ending in ``LIMIT ?``) and its parameters but
    the limit."""
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("at >=", since), ("at <", until), ("actor =", actor), ("id >", after_id),
    ):  # fmt: skip
        if value is not None:
            clauses.append(f"{clause} ?")
            params.append(value)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = (
        "SELECT id, at, actor, source, action, target, status, detail FROM audit_log"
        f"{where} ORDER BY id LIMIT ?"
    )
    return sql, params


def _audit_entries(rows: list[tuple[Any, ...]]) -> list[AuditEntry]:
    return [
        AuditEntry(at, actor, source, action, target, status, json.loads(detail), int(entry_id))
        for entry_id, at, actor, source, action, target, status, detail in rows
    ]


@implementer(IAuditLog)
class SQLAuditLog:
    """L{IAuditLog} on the shared SQLite or PostgreSQL pool (the database's
    triggers refuse UPDATE and DELETE, and TRUNCATE in PostgreSQL)."""

    def __init__(self, pool: adbapi.ConnectionPool | PostgreSQLPool) -> None:
        self._db = database(pool)

    def append(self, entry: AuditEntry) -> Deferred[int]:
        """See L{IAuditLog.append}."""
        return self._db.run("append_audit", _append_audit_txn, entry)

    def list(
        self,
        since: float | None = None,
        until: float | None = None,
        actor: str | None = None,
        limit: int = 100,
        after_id: int | None = None,
    ) -> Deferred[builtins.list[AuditEntry]]:
        """See L{IAuditLog.list}."""
        if limit < 0:
            return defer.fail(ValueError(f"limit must be >= 0, got {limit}"))
        return self._db.run("list_audit", _list_audit_txn, since, until, actor, limit, after_id)
