"""In-memory fakes of the admin stores, passing the same conformance suites."""

from __future__ import annotations

import builtins

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.errors import AdminAccountExists, AdminAccountNotFound
from warden.interfaces import IAdminStore, IAuditLog
from warden.model.admin import AdminAccount, ApiToken, AuditEntry


@implementer(IAdminStore)
class MemoryAdminStore:
    """L{IAdminStore} in dictionaries."""

    def __init__(self) -> None:
        self.accounts: dict[str, AdminAccount] = {}
        self.tokens: dict[str, ApiToken] = {}

    def add_account(self, account: AdminAccount) -> Deferred[None]:
        """See L{IAdminStore.add_account}."""
        if account.name in self.accounts:
            return defer.fail(AdminAccountExists(account.name))
        self.accounts[account.name] = account
        return defer.succeed(None)

    def get_account(self, name: str) -> Deferred[AdminAccount | None]:
        """See L{IAdminStore.get_account}."""
        return defer.succeed(self.accounts.get(name))

    def update_account(self, account: AdminAccount) -> Deferred[None]:
        """See L{IAdminStore.update_account}."""
        if account.name not in self.accounts:
            return defer.fail(AdminAccountNotFound(account.name))
        self.accounts[account.name] = account
        return defer.succeed(None)

    def list_accounts(self) -> Deferred[builtins.list[AdminAccount]]:
        """See L{IAdminStore.list_accounts}."""
        return defer.succeed([self.accounts[k] for k in sorted(self.accounts)])

    def remove_account(self, name: str) -> Deferred[bool]:
        """See L{IAdminStore.remove_account}."""
        return defer.succeed(self.accounts.pop(name, None) is not None)

    def claim_totp_step(self, name: str, step: int) -> Deferred[bool]:
        """See L{IAdminStore.claim_totp_step}."""
        account = self.accounts.get(name)
        if account is None or account.totp_last_step >= step:
            return defer.succeed(False)
        self.accounts[name] = attrs.evolve(account, totp_last_step=step)
        return defer.succeed(True)

    def use_recovery_code(self, name: str, digest: str) -> Deferred[bool]:
        """See L{IAdminStore.use_recovery_code}."""
        account = self.accounts.get(name)
        if account is None or digest not in account.recovery_hashes:
            return defer.succeed(False)
        left = tuple(h for h in account.recovery_hashes if h != digest)
        self.accounts[name] = attrs.evolve(account, recovery_hashes=left)
        return defer.succeed(True)

    def add_token(self, token: ApiToken) -> Deferred[None]:
        """See L{IAdminStore.add_token}."""
        if token.token_id in self.tokens:
            return defer.fail(ValueError(f"duplicate token id {token.token_id}"))
        self.tokens[token.token_id] = token
        return defer.succeed(None)

    def get_token(self, token_id: str) -> Deferred[ApiToken | None]:
        """See L{IAdminStore.get_token}."""
        return defer.succeed(self.tokens.get(token_id))

    def list_tokens(self) -> Deferred[builtins.list[ApiToken]]:
        """See L{IAdminStore.list_tokens}."""
        return defer.succeed(
            sorted(self.tokens.values(), key=lambda t: (t.created_at, t.token_id))
        )

    def revoke_token(self, token_id: str, at: float) -> Deferred[bool]:
        """See L{IAdminStore.revoke_token}."""
        token = self.tokens.get(token_id)
        if token is None or token.revoked_at is not None:
            return defer.succeed(False)
        self.tokens[token_id] = attrs.evolve(token, revoked_at=at)
        return defer.succeed(True)


@implementer(IAuditLog)
class MemoryAuditLog:
    """L{IAuditLog} in a list."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def append(self, entry: AuditEntry) -> Deferred[int]:
        """See L{IAuditLog.append}."""
        entry_id = len(self.entries) + 1
        self.entries.append(attrs.evolve(entry, entry_id=entry_id))
        return defer.succeed(entry_id)

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
        found = [
            e
            for e in self.entries
            if (since is None or e.at >= since)
            and (until is None or e.at < until)
            and (actor is None or e.actor == actor)
            and (after_id is None or e.entry_id > after_id)
        ]
        return defer.succeed(found[:limit])
