"""
The admin plugin's stores in PostgreSQL: accounts and API tokens
(L{IAdminStore}) and the append-only audit log (L{IAuditLog}), on the tables of
schema ``0004_admin`` (PostgreSQL dialect). Same contracts as the SQLite stores
of L{warden.store.admin}; every method is one named interaction.
"""

from __future__ import annotations

import builtins
import json

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.errors import AdminAccountExists, AdminAccountNotFound
from warden.interfaces import IAdminStore, IAuditLog
from warden.model.admin import AdminAccount, ApiToken, AuditEntry
from warden.store.admin import (
    _ACCOUNT_COLUMNS,
    _TOKEN_COLUMNS,
    ACCOUNT_SET,
    _account,
    _account_row,
    _audit_entries,
    _audit_query,
    _token,
    _token_row,
    remaining_recovery_hashes,
)
from warden.store.pgpool import Cursor, PostgreSQLPool


async def _add_account_txn(cursor: Cursor, account: AdminAccount) -> None:
    await cursor.execute(
        f"INSERT INTO admin_accounts ({_ACCOUNT_COLUMNS})"
        f" VALUES ({', '.join(['%s'] * 9)}) ON CONFLICT (name) DO NOTHING",
        _account_row(account),
    )
    if cursor.rowcount == 0:
        raise AdminAccountExists(account.name)


async def _get_account_txn(cursor: Cursor, name: str) -> AdminAccount | None:
    await cursor.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM admin_accounts WHERE name = %s", (name,))
    row = cursor.fetchone()
    return None if row is None else _account(row)


async def _update_account_txn(cursor: Cursor, account: AdminAccount) -> None:
    row = _account_row(account)
    await cursor.execute(
        f"UPDATE admin_accounts SET {ACCOUNT_SET.format('%s')} WHERE name = %s",
        (*row[1:], row[0]),
    )
    if cursor.rowcount == 0:
        raise AdminAccountNotFound(account.name)


async def _list_accounts_txn(cursor: Cursor) -> list[AdminAccount]:
    await cursor.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM admin_accounts ORDER BY name")
    return [_account(row) for row in cursor.fetchall()]


async def _remove_account_txn(cursor: Cursor, name: str) -> bool:
    await cursor.execute("DELETE FROM admin_accounts WHERE name = %s", (name,))
    return bool(cursor.rowcount)


async def _claim_totp_step_txn(cursor: Cursor, name: str, step: int) -> bool:
    await cursor.execute(
        "UPDATE admin_accounts SET totp_last_step = %s WHERE name = %s AND totp_last_step < %s",
        (step, name, step),
    )
    return bool(cursor.rowcount)


async def _use_recovery_code_txn(cursor: Cursor, name: str, digest: str) -> bool:
    await cursor.execute(
        "SELECT recovery_hashes FROM admin_accounts WHERE name = %s FOR UPDATE", (name,)
    )
    row = cursor.fetchone()
    left = None if row is None else remaining_recovery_hashes(row[0], digest)
    if left is None:
        return False
    await cursor.execute(
        "UPDATE admin_accounts SET recovery_hashes = %s WHERE name = %s", (left, name)
    )
    return bool(cursor.rowcount)


async def _add_token_txn(cursor: Cursor, t: ApiToken) -> None:
    await cursor.execute(
        f"INSERT INTO api_tokens ({_TOKEN_COLUMNS}) VALUES ({', '.join(['%s'] * 9)})",
        _token_row(t),
    )


async def _get_token_txn(cursor: Cursor, token_id: str) -> ApiToken | None:
    await cursor.execute(
        f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_id = %s", (token_id,)
    )
    row = cursor.fetchone()
    return None if row is None else _token(row)


async def _list_tokens_txn(cursor: Cursor) -> list[ApiToken]:
    await cursor.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, token_id")
    return [_token(row) for row in cursor.fetchall()]


async def _revoke_token_txn(cursor: Cursor, token_id: str, at: float) -> bool:
    await cursor.execute(
        "UPDATE api_tokens SET revoked_at = %s WHERE token_id = %s AND revoked_at IS NULL",
        (at, token_id),
    )
    return bool(cursor.rowcount)


@implementer(IAdminStore)
class PostgreSQLAdminStore:
    """L{IAdminStore} in PostgreSQL."""

    def __init__(self, pool: PostgreSQLPool) -> None:
        self._pool = pool

    def add_account(self, account: AdminAccount) -> Deferred[None]:
        """See L{IAdminStore.add_account}."""
        return self._pool.run("add_admin_account", _add_account_txn, account)

    def get_account(self, name: str) -> Deferred[AdminAccount | None]:
        """See L{IAdminStore.get_account}."""
        return self._pool.run("get_admin_account", _get_account_txn, name)

    def update_account(self, account: AdminAccount) -> Deferred[None]:
        """See L{IAdminStore.update_account}."""
        return self._pool.run("update_admin_account", _update_account_txn, account)

    def list_accounts(self) -> Deferred[builtins.list[AdminAccount]]:
        """See L{IAdminStore.list_accounts}."""
        return self._pool.run("list_admin_accounts", _list_accounts_txn)

    def remove_account(self, name: str) -> Deferred[bool]:
        """See L{IAdminStore.remove_account}."""
        return self._pool.run("remove_admin_account", _remove_account_txn, name)

    def claim_totp_step(self, name: str, step: int) -> Deferred[bool]:
        """See L{IAdminStore.claim_totp_step}."""
        return self._pool.run("claim_totp_step", _claim_totp_step_txn, name, step)

    def use_recovery_code(self, name: str, digest: str) -> Deferred[bool]:
        """See L{IAdminStore.use_recovery_code}."""
        return self._pool.run("use_recovery_code", _use_recovery_code_txn, name, digest)

    def add_token(self, token: ApiToken) -> Deferred[None]:
        """See L{IAdminStore.add_token}."""
        return self._pool.run("add_api_token", _add_token_txn, token)

    def get_token(self, token_id: str) -> Deferred[ApiToken | None]:
        """See L{IAdminStore.get_token}."""
        return self._pool.run("get_api_token", _get_token_txn, token_id)

    def list_tokens(self) -> Deferred[builtins.list[ApiToken]]:
        """See L{IAdminStore.list_tokens}."""
        return self._pool.run("list_api_tokens", _list_tokens_txn)

    def revoke_token(self, token_id: str, at: float) -> Deferred[bool]:
        """See L{IAdminStore.revoke_token}."""
        return self._pool.run("revoke_api_token", _revoke_token_txn, token_id, at)


async def _append_audit_txn(cursor: Cursor, e: AuditEntry) -> int:
    await cursor.execute(
        "INSERT INTO audit_log (at, actor, source, action, target, status, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
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
    sql, params = _audit_query("%s", since, until, actor, after_id)
    await cursor.execute(sql, (*params, limit))
    return _audit_entries(cursor.fetchall())


@implementer(IAuditLog)
class PostgreSQLAuditLog:
    """L{IAuditLog} in PostgreSQL (triggers refuse UPDATE, DELETE and TRUNCATE)."""

    def __init__(self, pool: PostgreSQLPool) -> None:
        self._pool = pool

    def append(self, entry: AuditEntry) -> Deferred[int]:
        """See L{IAuditLog.append}."""
        return self._pool.run("append_audit", _append_audit_txn, entry)

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
        return self._pool.run("list_audit", _list_audit_txn, since, until, actor, limit, after_id)
