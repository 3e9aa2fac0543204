"""
Conformance suites for L{warden.interfaces.IAdminStore} and
L{warden.interfaces.IAuditLog}, run against every implementation (memory fakes,
SQLite; PostgreSQL when it has them). Subclasses define ``make_store()``.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet import defer

from warden.errors import AdminAccountExists, AdminAccountNotFound
from warden.model.admin import AdminAccount, ApiToken, AuditEntry


def account(name: str = "alice", **kw: Any) -> AdminAccount:
    """An account with a fixed (fake) password hash."""
    return AdminAccount(name=name, password_hash="scrypt$1024$8$1$00$00", created_at=1000.0, **kw)


def token(token_id: str = "00112233445566aa", **kw: Any) -> ApiToken:
    """A token owned by alice."""
    values: dict[str, Any] = {
        "name": "ci", "secret_hash": "ab" * 32, "scopes": ("read",), "owner": "alice",
        "created_at": 1000.0,
    }  # fmt: skip
    values.update(kw)
    return ApiToken(token_id=token_id, **values)


def entry(at: float, actor: str = "alice", **kw: Any) -> AuditEntry:
    """An audit entry."""
    values: dict[str, Any] = {
        "source": "192.0.2.1", "action": "POST /api/v1/extensions", "target": "100",
        "status": 201, "detail": {"fields": ["name"]},
    }  # fmt: skip
    values.update(kw)
    return AuditEntry(at=at, actor=actor, **values)


class _StoreMixin:
    def make_store(self) -> Any:
        raise NotImplementedError

    async def store(self) -> Any:
        return await defer.maybeDeferred(self.make_store)


class AdminStoreConformanceMixin(_StoreMixin):
    """The behaviour every IAdminStore must have."""

    async def test_account_round_trip(self) -> None:
        """An added account comes back equal, with its MFA fields and recovery hashes."""
        store = await self.store()
        original = account(totp_secret="JBSWY3DPEHPK3PXP", totp_last_step=7,
                           recovery_hashes=("a" * 64, "b" * 64), generation=3,
                           disabled=True)  # fmt: skip
        await store.add_account(original)
        self.assertEqual(await store.get_account("alice"), original)  # type: ignore[attr-defined]
        self.assertIsNone(await store.get_account("bob"))  # type: ignore[attr-defined]

    async def test_duplicate_account(self) -> None:
        """Adding a name twice fails with AdminAccountExists and keeps the first."""
        store = await self.store()
        await store.add_account(account())
        with self.assertRaises(AdminAccountExists):  # type: ignore[attr-defined]
            await store.add_account(account(totp_secret="X"))
        self.assertEqual((await store.get_account("alice")).totp_secret, "")  # type: ignore[attr-defined]

    async def test_update_account(self) -> None:
        """update_account replaces every field; an unknown name fails."""
        store = await self.store()
        await store.add_account(account())
        changed = attrs.evolve(account(), totp_pending="PENDING", password_hash="scrypt$x")
        await store.update_account(changed)
        self.assertEqual(await store.get_account("alice"), changed)  # type: ignore[attr-defined]
        with self.assertRaises(AdminAccountNotFound):  # type: ignore[attr-defined]
            await store.update_account(account("bob"))

    async def test_list_accounts_ordered(self) -> None:
        """Accounts are listed by name."""
        store = await self.store()
        for name in ("carol", "alice", "bob"):
            await store.add_account(account(name))
        names = [a.name for a in await store.list_accounts()]
        self.assertEqual(names, ["alice", "bob", "carol"])  # type: ignore[attr-defined]

    async def test_remove_account(self) -> None:
        """A removed account is gone; removing it again is False."""
        store = await self.store()
        await store.add_account(account())
        self.assertTrue(await store.remove_account("alice"))  # type: ignore[attr-defined]
        self.assertIsNone(await store.get_account("alice"))  # type: ignore[attr-defined]
        self.assertFalse(await store.remove_account("alice"))  # type: ignore[attr-defined]

    async def test_token_generation_and_expiry(self) -> None:
        """A token's owner generation and expiry round-trip (None: never expires)."""
        store = await self.store()
        await store.add_token(token("00000000000000cc", owner_generation=4, expires_at=5000.5))
        await store.add_token(token("00000000000000dd"))
        self.assertEqual(  # type: ignore[attr-defined]
            await store.get_token("00000000000000cc"),
            token("00000000000000cc", owner_generation=4, expires_at=5000.5),
        )
        self.assertIsNone((await store.get_token("00000000000000dd")).expires_at)  # type: ignore[attr-defined]

    async def test_claim_totp_step(self) -> None:
        """A TOTP step is claimed once, only when later than the last; unknown names fail."""
        store = await self.store()
        await store.add_account(account(totp_last_step=7))
        results = [await store.claim_totp_step("alice", step) for step in (7, 8, 8, 6, 9)]
        self.assertEqual(results, [False, True, False, False, True])  # type: ignore[attr-defined]
        self.assertEqual((await store.get_account("alice")).totp_last_step, 9)  # type: ignore[attr-defined]
        self.assertFalse(await store.claim_totp_step("bob", 10))  # type: ignore[attr-defined]

    async def test_use_recovery_code(self) -> None:
        """A recovery code is removed once; the others stay."""
        store = await self.store()
        await store.add_account(account(recovery_hashes=("a" * 64, "b" * 64)))
        self.assertTrue(await store.use_recovery_code("alice", "a" * 64))  # type: ignore[attr-defined]
        self.assertFalse(await store.use_recovery_code("alice", "a" * 64))  # type: ignore[attr-defined]
        self.assertFalse(await store.use_recovery_code("bob", "b" * 64))  # type: ignore[attr-defined]
        self.assertEqual((await store.get_account("alice")).recovery_hashes, ("b" * 64,))  # type: ignore[attr-defined]

    async def test_tokens(self) -> None:
        """Tokens round-trip, list in creation order, and revoke once."""
        store = await self.store()
        await store.add_token(
            token("00000000000000bb", created_at=2000.0, scopes=("read", "calls"))
        )
        await store.add_token(token("00000000000000aa", created_at=1000.0))
        listed = await store.list_tokens()
        self.assertEqual([t.token_id for t in listed], ["00000000000000aa", "00000000000000bb"])  # type: ignore[attr-defined]
        self.assertEqual(listed[1].scopes, ("read", "calls"))  # type: ignore[attr-defined]
        self.assertTrue(await store.revoke_token("00000000000000aa", 3000.0))  # type: ignore[attr-defined]
        self.assertFalse(await store.revoke_token("00000000000000aa", 4000.0))  # type: ignore[attr-defined]
        self.assertFalse(await store.revoke_token("ffffffffffffffff", 4000.0))  # type: ignore[attr-defined]
        revoked = await store.get_token("00000000000000aa")
        self.assertEqual(revoked.revoked_at, 3000.0)  # type: ignore[attr-defined]
        self.assertIsNone(await store.get_token("ffffffffffffffff"))  # type: ignore[attr-defined]


class AuditLogConformanceMixin(_StoreMixin):
    """The behaviour every IAuditLog must have."""

    async def test_append_and_list(self) -> None:
        """Entries get increasing ids and come back in order, with their detail."""
        log = await self.store()
        first = await log.append(entry(10.0))
        second = await log.append(entry(20.0, "bob", status=404, detail={}))
        self.assertLess(first, second)  # type: ignore[attr-defined]
        entries = await log.list()
        self.assertEqual([e.entry_id for e in entries], [first, second])  # type: ignore[attr-defined]
        self.assertEqual(entries[0], attrs.evolve(entry(10.0), entry_id=first))  # type: ignore[attr-defined]

    async def test_filters_and_paging(self) -> None:
        """since/until/actor filter; limit and after_id page without gaps or repeats."""
        log = await self.store()
        ids = [await log.append(entry(float(t), "alice" if t % 2 else "bob")) for t in range(10)]
        self.assertEqual([e.at for e in await log.list(since=3.0, until=6.0)], [3.0, 4.0, 5.0])  # type: ignore[attr-defined]
        self.assertEqual(len(await log.list(actor="bob")), 5)  # type: ignore[attr-defined]
        page1 = await log.list(limit=4)
        page2 = await log.list(limit=4, after_id=page1[-1].entry_id)
        page3 = await log.list(limit=4, after_id=page2[-1].entry_id)
        seen = [e.entry_id for e in page1 + page2 + page3]
        self.assertEqual(seen, ids)  # type: ignore[attr-defined]
        self.assertEqual(await log.list(limit=0), [])  # type: ignore[attr-defined]

    async def test_negative_limit(self) -> None:
        """A negative limit fails with ValueError."""
        log = await self.store()
        with self.assertRaises(ValueError):  # type: ignore[attr-defined]
            await log.list(limit=-1)
