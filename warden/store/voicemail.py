"""
SQL storage of the voicemail plugin, one layer for SQLite and PostgreSQL:
mailbox settings and messages (L{IVoicemailStore}); tables from schema
``0009_voicemail`` (a mailbox's email address from ``0012``). A mailbox row is
kept only while a setting is stored.

Each method is one named interaction (``warden_store_interactions_total``; see
L{warden.store.dialect}).
"""

from __future__ import annotations

import builtins
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.interfaces import IVoicemailStore
from warden.model.voicemail import Mailbox, VoicemailMessage
from warden.store.dialect import Cursor, database
from warden.store.pgpool import PostgreSQLPool

__all__ = ["SQLVoicemailStore"]

_MAILBOX = "number, pin_hash, greeting, failed_logins, locked_until, email"
_MESSAGE = "message_id, mailbox, caller, caller_name, received_at, duration, folder, audio, size"


def _message(row: tuple[Any, ...]) -> VoicemailMessage:
    message_id, mailbox, caller, name, received_at, duration, folder, audio, size = row
    return VoicemailMessage(
        message_id, mailbox, caller, name, float(received_at), float(duration), folder, audio,
        int(size),
    )  # fmt: skip


async def _get_mailbox_txn(cursor: Cursor, number: str) -> Mailbox:
    await cursor.execute(f"SELECT {_MAILBOX} FROM voicemail_mailboxes WHERE number = ?", (number,))
    row = cursor.fetchone()
    if row is None:
        return Mailbox(number)
    return Mailbox(row[0], row[1], row[2], int(row[3]), float(row[4]), row[5])


async def _set_mailbox_txn(cursor: Cursor, m: Mailbox) -> None:
    if m.is_default:
        await cursor.execute("DELETE FROM voicemail_mailboxes WHERE number = ?", (m.number,))
        return
    await cursor.execute(
        f"INSERT INTO voicemail_mailboxes ({_MAILBOX}) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (number) DO UPDATE SET pin_hash = excluded.pin_hash,"
        " greeting = excluded.greeting, failed_logins = excluded.failed_logins,"
        " locked_until = excluded.locked_until, email = excluded.email",
        (m.number, m.pin_hash, m.greeting, m.failed_logins, m.locked_until, m.email),
    )


async def _add_message_txn(cursor: Cursor, m: VoicemailMessage) -> None:
    await cursor.execute("SELECT 1 FROM voicemail_messages WHERE message_id = ?", (m.message_id,))
    if cursor.fetchone() is not None:
        raise ValueError(f"message {m.message_id} exists")
    await cursor.execute(
        f"INSERT INTO voicemail_messages ({_MESSAGE}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (m.message_id, m.mailbox, m.caller, m.caller_name, m.received_at, m.duration,
         m.folder, m.audio, m.size),
    )  # fmt: skip


async def _get_message_txn(cursor: Cursor, mailbox: str, message_id: str) -> Any:
    await cursor.execute(
        f"SELECT {_MESSAGE} FROM voicemail_messages WHERE mailbox = ? AND message_id = ?",
        (mailbox, message_id),
    )
    row = cursor.fetchone()
    return None if row is None else _message(row)


async def _list_txn(cursor: Cursor, mailbox: str, folder: str | None) -> list[VoicemailMessage]:
    if folder is None:
        await cursor.execute(
            f"SELECT {_MESSAGE} FROM voicemail_messages WHERE mailbox = ?"
            " ORDER BY received_at, message_id",
            (mailbox,),
        )
    else:
        await cursor.execute(
            f"SELECT {_MESSAGE} FROM voicemail_messages WHERE mailbox = ? AND folder = ?"
            " ORDER BY received_at, message_id",
            (mailbox, folder),
        )
    return [_message(row) for row in cursor.fetchall()]


async def _move_txn(cursor: Cursor, mailbox: str, message_id: str, folder: str) -> bool:
    await cursor.execute(
        "UPDATE voicemail_messages SET folder = ? WHERE mailbox = ? AND message_id = ?",
        (folder, mailbox, message_id),
    )
    return bool(cursor.rowcount)


async def _remove_txn(cursor: Cursor, mailbox: str, message_id: str) -> bool:
    await cursor.execute(
        "DELETE FROM voicemail_messages WHERE mailbox = ? AND message_id = ?",
        (mailbox, message_id),
    )
    return bool(cursor.rowcount)


async def _count_txn(cursor: Cursor, mailbox: str) -> tuple[int, int]:
    await cursor.execute(
        "SELECT folder, COUNT(*) FROM voicemail_messages WHERE mailbox = ? GROUP BY folder",
        (mailbox,),
    )
    counts = {folder: int(count) for folder, count in cursor.fetchall()}
    return counts.get("new", 0), counts.get("saved", 0)


async def _totals_txn(cursor: Cursor) -> dict[str, tuple[int, int, int]]:
    await cursor.execute(
        "SELECT mailbox, folder, COUNT(*), SUM(size) FROM voicemail_messages"
        " GROUP BY mailbox, folder"
    )
    totals: dict[str, tuple[int, int, int]] = {}
    for mailbox, folder, count, size in cursor.fetchall():
        new, saved, total = totals.get(mailbox, (0, 0, 0))
        if folder == "new":
            new += int(count)
        else:
            saved += int(count)
        totals[mailbox] = (new, saved, total + int(size or 0))
    return dict(sorted(totals.items()))


@implementer(IVoicemailStore)
class SQLVoicemailStore:
    """L{IVoicemailStore} on the shared SQLite or PostgreSQL pool."""

    def __init__(self, pool: adbapi.ConnectionPool | PostgreSQLPool) -> None:
        self._db = database(pool)

    def get_mailbox(self, number: str) -> Deferred[Mailbox]:
        """See L{IVoicemailStore.get_mailbox}."""
        return self._db.run("get_mailbox", _get_mailbox_txn, number)

    def set_mailbox(self, mailbox: Mailbox) -> Deferred[None]:
        """See L{IVoicemailStore.set_mailbox}."""
        return self._db.run("set_mailbox", _set_mailbox_txn, mailbox)

    def add_message(self, message: VoicemailMessage) -> Deferred[None]:
        """See L{IVoicemailStore.add_message}."""
        return self._db.run("add_voicemail", _add_message_txn, message)

    def get_message(self, mailbox: str, message_id: str) -> Deferred[VoicemailMessage | None]:
        """See L{IVoicemailStore.get_message}."""
        return self._db.run("get_voicemail", _get_message_txn, mailbox, message_id)

    def list_messages(
        self, mailbox: str, folder: str | None = None
    ) -> Deferred[builtins.list[VoicemailMessage]]:
        """See L{IVoicemailStore.list_messages}."""
        return self._db.run("list_voicemail", _list_txn, mailbox, folder)

    def move_message(self, mailbox: str, message_id: str, folder: str) -> Deferred[bool]:
        """See L{IVoicemailStore.move_message}."""
        return self._db.run("move_voicemail", _move_txn, mailbox, message_id, folder)

    def remove_message(self, mailbox: str, message_id: str) -> Deferred[bool]:
        """See L{IVoicemailStore.remove_message}."""
        return self._db.run("remove_voicemail", _remove_txn, mailbox, message_id)

    def count_messages(self, mailbox: str) -> Deferred[tuple[int, int]]:
        """See L{IVoicemailStore.count_messages}."""
        return self._db.run("count_voicemail", _count_txn, mailbox)

    def totals(self) -> Deferred[dict[str, tuple[int, int, int]]]:
        """See L{IVoicemailStore.totals}."""
        return self._db.run("voicemail_totals", _totals_txn)
