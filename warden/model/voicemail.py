"""
Voicemail (L{warden.interfaces.IVoicemailStore}): mailboxes and the messages
left in them, as the ``voicemail`` plugin keeps them. The audio of a message
or a greeting is a WAV file under the data directory; the store keeps its
name relative to ``<data_dir>/voicemail``.
"""

from __future__ import annotations

import attrs

__all__ = ["FOLDERS", "Mailbox", "VoicemailMessage"]

#: Where a message is: ``new`` until listened to, then ``saved``.
FOLDERS = ("new", "saved")


@attrs.frozen
class Mailbox:
    """
    One mailbox's settings (the mailbox number is the extension number).

    Attributes:
        number: the mailbox (extension) number.
        pin_hash: the PIN's scrypt hash ("" when no PIN is set).
        greeting: the custom greeting's audio file ("" for the default prompt).
        failed_logins: wrong PINs in a row.
        locked_until: time before which no PIN is accepted (0: not locked).
        email: where each new message is emailed with its audio ("" for
            nowhere; sent only with ``[voicemail] smtp_host`` set).
    """

    number: str
    pin_hash: str = ""
    greeting: str = ""
    failed_logins: int = 0
    locked_until: float = 0.0
    email: str = ""

    @property
    def is_default(self) -> bool:
        """Nothing is set: no row needs to be kept."""
        return self == Mailbox(self.number)


@attrs.frozen
class VoicemailMessage:
    """
    One message.

    Attributes:
        message_id: unique identifier (32 hex digits).
        mailbox: the mailbox it was left in.
        caller: the caller's number.
        caller_name: the caller's display name.
        received_at: when it was left (Unix time).
        duration: its length in seconds.
        folder: ``new`` or ``saved``.
        audio: its WAV file, relative to the voicemail directory.
        size: the WAV file's size in bytes.
    """

    message_id: str
    mailbox: str
    caller: str
    caller_name: str
    received_at: float
    duration: float
    folder: str = "new"
    audio: str = ""
    size: int = 0
