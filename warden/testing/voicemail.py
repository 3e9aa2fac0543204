"""An in-memory L{IVoicemailStore}, passing the same conformance suite as SQL."""

from __future__ import annotations

import builtins

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.interfaces import IVoicemailStore
from warden.model.voicemail import Mailbox, VoicemailMessage


@implementer(IVoicemailStore)
class MemoryVoicemailStore:
    """L{IVoicemailStore} in dictionaries."""

    def __init__(self) -> None:
        self.mailboxes: dict[str, Mailbox] = {}
        self.messages: dict[str, VoicemailMessage] = {}

    def get_mailbox(self, number: str) -> Deferred[Mailbox]:
        """See L{IVoicemailStore.get_mailbox}."""
        return defer.succeed(self.mailboxes.get(number, Mailbox(number)))

    def set_mailbox(self, mailbox: Mailbox) -> Deferred[None]:
        """See L{IVoicemailStore.set_mailbox}."""
        if mailbox.is_default:
            self.mailboxes.pop(mailbox.number, None)
        else:
            self.mailboxes[mailbox.number] = mailbox
        return defer.succeed(None)

    def add_message(self, message: VoicemailMessage) -> Deferred[None]:
        """See L{IVoicemailStore.add_message}."""
        if message.message_id in self.messages:
            return defer.fail(ValueError(f"message {message.message_id} exists"))
        self.messages[message.message_id] = message
        return defer.succeed(None)

    def get_message(self, mailbox: str, message_id: str) -> Deferred[VoicemailMessage | None]:
        """See L{IVoicemailStore.get_message}."""
        found = self.messages.get(message_id)
        return defer.succeed(found if found is not None and found.mailbox == mailbox else None)

    def list_messages(
        self, mailbox: str, folder: str | None = None
    ) -> Deferred[builtins.list[VoicemailMessage]]:
        """See L{IVoicemailStore.list_messages}."""
        found = [
            m
            for m in self.messages.values()
            if m.mailbox == mailbox and (folder is None or m.folder == folder)
        ]
        return defer.succeed(sorted(found, key=lambda m: (m.received_at, m.message_id)))

    def move_message(self, mailbox: str, message_id: str, folder: str) -> Deferred[bool]:
        """See L{IVoicemailStore.move_message}."""
        found = self.messages.get(message_id)
        if found is None or found.mailbox != mailbox:
            return defer.succeed(False)
        self.messages[message_id] = attrs.evolve(found, folder=folder)
        return defer.succeed(True)

    def remove_message(self, mailbox: str, message_id: str) -> Deferred[bool]:
        """See L{IVoicemailStore.remove_message}."""
        found = self.messages.get(message_id)
        if found is None or found.mailbox != mailbox:
            return defer.succeed(False)
        del self.messages[message_id]
        return defer.succeed(True)

    def count_messages(self, mailbox: str) -> Deferred[tuple[int, int]]:
        """See L{IVoicemailStore.count_messages}."""
        mine = [m.folder for m in self.messages.values() if m.mailbox == mailbox]
        return defer.succeed((mine.count("new"), mine.count("saved")))

    def totals(self) -> Deferred[dict[str, tuple[int, int, int]]]:
        """See L{IVoicemailStore.totals}."""
        totals: dict[str, tuple[int, int, int]] = {}
        for m in self.messages.values():
            new, saved, size = totals.get(m.mailbox, (0, 0, 0))
            if m.folder == "new":
                new += 1
            else:
                saved += 1
            totals[m.mailbox] = (new, saved, size + m.size)
        return defer.succeed(dict(sorted(totals.items())))
