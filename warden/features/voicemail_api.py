"""
The voicemail plugin's admin API endpoints (L{IAdminEndpoints}): the
mailboxes holding messages under ``/api/v1/voicemail``, one mailbox (its
settings without secrets, and its messages) under
``/api/v1/extensions/{number}/voicemail``, its PIN and email address set or
removed with ``PATCH`` there, and a message deleted under ``.../voicemail/messages/{id}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from warden.digits import is_digits
from warden.errors import ApiError
from warden.features.endpoints import NUMBER_PARAMS, require_extension
from warden.features.smtp import is_email_address
from warden.interfaces import IDirectory, IVoicemailStore
from warden.model.admin import EndpointReply, EndpointRequest, PluginEndpoint
from warden.model.voicemail import Mailbox, VoicemailMessage

__all__ = ["VoicemailEndpoints"]

_MESSAGE = {**NUMBER_PARAMS, "message_id": "[0-9a-f]{32}"}
_SETTINGS: dict[str, tuple[type, dict[str, Any]]] = {
    "pin": (str, {"type": "string", "pattern": "^([0-9]{4,12})?$"}),
    "email": (str, {"type": "string", "maxLength": 254, "format": "email"}),
}


def message_json(message: VoicemailMessage) -> dict[str, Any]:
    """A message for the API (its file name stays inside Warden)."""
    return {
        "id": message.message_id, "folder": message.folder, "caller": message.caller,
        "caller_name": message.caller_name, "received_at": message.received_at,
        "seconds": message.duration, "bytes": message.size,
    }  # fmt: skip


class VoicemailEndpoints:
    """
    The endpoints, on the plugin's store and the directory (looked up when a
    request comes: the plugin is built after the admin plugin).

    Args:
        store: the voicemail store, or None before the plugin is built.
        directory: the extensions, or None before the plugin is built.
        delete: removes a message, its file, and tells the phones (the plugin's).
        hash_pin: hashes a PIN (in a thread).
    """

    def __init__(
        self,
        store: Callable[[], IVoicemailStore | None],
        directory: Callable[[], IDirectory | None],
        delete: Callable[[VoicemailMessage], Awaitable[None]],
        hash_pin: Callable[[str], Awaitable[str]],
    ) -> None:
        self._store = store
        self._directory = directory
        self._delete = delete
        self._hash_pin = hash_pin

    async def _mailbox(self, number: str) -> IVoicemailStore:
        store, directory = self._store(), self._directory()
        if store is None or directory is None:
            raise ApiError(503, "unavailable", "voicemail is not available")
        await require_extension(directory, number)
        return store

    async def list_mailboxes(self, request: EndpointRequest) -> EndpointReply:
        """``GET /voicemail``: the mailboxes holding messages."""
        store = self._store()
        if store is None:
            raise ApiError(503, "unavailable", "voicemail is not available")
        totals = await store.totals()
        items = [
            {"number": number, "new": new, "saved": saved, "bytes": size}
            for number, (new, saved, size) in totals.items()
        ]
        return EndpointReply({"items": items})

    async def show(self, request: EndpointRequest) -> EndpointReply:
        """``GET /extensions/{number}/voicemail``."""
        number = request.params["number"]
        store = await self._mailbox(number)
        box = await store.get_mailbox(number)
        messages = await store.list_messages(number)
        return EndpointReply(
            {
                "number": number, "pin_set": bool(box.pin_hash),
                "custom_greeting": bool(box.greeting), "locked_until": box.locked_until or None,
                "email": box.email,
                "messages": [message_json(m) for m in messages],
            }
        )  # fmt: skip

    async def change(self, request: EndpointRequest) -> EndpointReply:
        """
        ``PATCH /extensions/{number}/voicemail``: a new PIN ("" removes it; lifts
        a lock) and/or the address new messages are emailed to ("" for none).
        """
        number, body = request.params["number"], request.body
        store = await self._mailbox(number)
        if "pin" not in body and "email" not in body:
            raise ApiError(400, "invalid_field", "pin or email: one is required")
        pin, address = body.get("pin"), body.get("email")
        if pin and not (is_digits(pin) and 4 <= len(pin) <= 12):
            raise ApiError(400, "invalid_field", "pin: 4 to 12 digits, or '' to remove it")
        if address and not is_email_address(address):
            raise ApiError(400, "invalid_field", "email: an address like name@example.org, or ''")
        box: Mailbox = await store.get_mailbox(number)
        if pin is not None:
            hashed = await self._hash_pin(pin) if pin else ""
            box = attrs.evolve(box, pin_hash=hashed, failed_logins=0, locked_until=0.0)
        if address is not None:
            box = attrs.evolve(box, email=address)
        await store.set_mailbox(box)
        shown = {"pin_set": bool(box.pin_hash), "email": box.email}
        return EndpointReply(
            {"number": number, **shown}, target=number,
            detail={"fields": sorted(body), "pin_set": bool(box.pin_hash)},
        )  # fmt: skip

    async def delete(self, request: EndpointRequest) -> EndpointReply:
        """``DELETE /extensions/{number}/voicemail/messages/{message_id}``."""
        number, message_id = request.params["number"], request.params["message_id"]
        store = await self._mailbox(number)
        message = await store.get_message(number, message_id)
        if message is None:
            raise ApiError(404, "not_found", f"no message {message_id} in mailbox {number}")
        await self._delete(message)
        return EndpointReply(None, 204, target=f"{number}/{message_id}")

    def endpoints(self) -> list[PluginEndpoint]:
        """The endpoints, with their scopes."""
        path = "extensions/{number}/voicemail"
        return [
            PluginEndpoint("GET", "voicemail", self.list_mailboxes, "read",
                           "Mailboxes holding voicemail: new and saved counts, audio bytes"),
            PluginEndpoint("GET", path, self.show, "read",
                           "A mailbox: whether a PIN is set, its lock, its messages",
                           NUMBER_PARAMS),
            PluginEndpoint("PATCH", path, self.change, "write",
                           "Set a mailbox's PIN (4 to 12 digits, stored hashed; '' removes it)"
                           " and/or the address its new messages are emailed to ('' for none)",
                           NUMBER_PARAMS, _SETTINGS),
            PluginEndpoint("DELETE", path + "/messages/{message_id}", self.delete, "write",
                           "Delete a voicemail message and its audio", _MESSAGE, ok=204),
        ]  # fmt: skip
