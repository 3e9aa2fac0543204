"""
The conformance suite of L{warden.interfaces.IVoicemailStore}, run against
every implementation (memory, SQLite, PostgreSQL). Subclasses define
``make_store()``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from warden.model.voicemail import Mailbox, VoicemailMessage


def message(message_id: str, mailbox: str = "1001", at: float = 1000.0, **kw: Any) -> Any:
    """A message of ``mailbox`` left at ``at``."""
    values: dict[str, Any] = {
        "caller": "1002", "caller_name": "Bob", "duration": 4.5,
        "audio": f"{mailbox}/{message_id}.wav", "size": 72044,
    }  # fmt: skip
    values.update(kw)
    return VoicemailMessage(message_id, mailbox, received_at=at, **values)


class VoicemailStoreConformanceMixin:
    """What every IVoicemailStore does."""

    def make_store(self) -> Any:
        raise NotImplementedError

    async def store(self) -> Any:
        return await defer.maybeDeferred(self.make_store)

    async def test_mailbox_defaults_set_and_reset(self) -> None:
        """An unknown mailbox has the defaults; settings read back; defaults again forget it."""
        store = await self.store()
        self.assertEqual(await store.get_mailbox("1001"), Mailbox("1001"))  # type: ignore[attr-defined]
        box = Mailbox("1001", "scrypt$1$2$3$aa$bb", "1001/greeting.wav", 2, 1234.5, "a@b.example")
        await store.set_mailbox(box)
        self.assertEqual(await store.get_mailbox("1001"), box)  # type: ignore[attr-defined]
        await store.set_mailbox(Mailbox("1001", pin_hash="x"))
        self.assertEqual(await store.get_mailbox("1001"), Mailbox("1001", pin_hash="x"))  # type: ignore[attr-defined]
        await store.set_mailbox(Mailbox("1001", email="bob@example.org"))
        self.assertEqual(await store.get_mailbox("1001"), Mailbox("1001", email="bob@example.org"))  # type: ignore[attr-defined]
        await store.set_mailbox(Mailbox("1001"))
        self.assertEqual(await store.get_mailbox("1001"), Mailbox("1001"))  # type: ignore[attr-defined]

    async def test_messages_in_order_and_by_folder(self) -> None:
        """Messages list oldest first, per mailbox, and per folder when asked."""
        store = await self.store()
        await store.add_message(message("b" * 32, at=2000.0))
        await store.add_message(message("a" * 32, at=1000.0, folder="saved"))
        await store.add_message(message("c" * 32, mailbox="1002", at=1500.0))
        listed = await store.list_messages("1001")
        self.assertEqual([m.message_id for m in listed], ["a" * 32, "b" * 32])  # type: ignore[attr-defined]
        self.assertEqual(listed[1], message("b" * 32, at=2000.0))  # type: ignore[attr-defined]
        new = await store.list_messages("1001", "new")
        self.assertEqual([m.message_id for m in new], ["b" * 32])  # type: ignore[attr-defined]
        self.assertEqual(await store.count_messages("1001"), (1, 1))  # type: ignore[attr-defined]
        self.assertEqual(await store.count_messages("1003"), (0, 0))  # type: ignore[attr-defined]

    async def test_duplicate_id_refused(self) -> None:
        """A message id is unique."""
        store = await self.store()
        await store.add_message(message("d" * 32))
        try:
            await store.add_message(message("d" * 32, mailbox="1002"))
        except ValueError:
            pass
        else:
            self.fail("duplicate accepted")  # type: ignore[attr-defined]
        self.assertEqual(await store.list_messages("1002"), [])  # type: ignore[attr-defined]

    async def test_get_move_remove(self) -> None:
        """A message is found only in its own mailbox; moved and removed there."""
        store = await self.store()
        first = message("e" * 32)
        await store.add_message(first)
        self.assertEqual(await store.get_message("1001", "e" * 32), first)  # type: ignore[attr-defined]
        self.assertIsNone(await store.get_message("1002", "e" * 32))  # type: ignore[attr-defined]
        self.assertFalse(await store.move_message("1002", "e" * 32, "saved"))  # type: ignore[attr-defined]
        self.assertTrue(await store.move_message("1001", "e" * 32, "saved"))  # type: ignore[attr-defined]
        moved = await store.get_message("1001", "e" * 32)
        self.assertEqual(moved.folder, "saved")  # type: ignore[attr-defined]
        self.assertFalse(await store.remove_message("1002", "e" * 32))  # type: ignore[attr-defined]
        self.assertTrue(await store.remove_message("1001", "e" * 32))  # type: ignore[attr-defined]
        self.assertFalse(await store.remove_message("1001", "e" * 32))  # type: ignore[attr-defined]
        self.assertIsNone(await store.get_message("1001", "e" * 32))  # type: ignore[attr-defined]

    async def test_totals(self) -> None:
        """Per mailbox with messages: new, saved and audio bytes."""
        store = await self.store()
        self.assertEqual(await store.totals(), {})  # type: ignore[attr-defined]
        await store.add_message(message("f" * 32, size=100))
        await store.add_message(message("0" * 32, size=50, folder="saved"))
        await store.add_message(message("1" * 32, mailbox="1000", size=7))
        self.assertEqual(  # type: ignore[attr-defined]
            await store.totals(), {"1000": (1, 0, 7), "1001": (1, 1, 150)}
        )
