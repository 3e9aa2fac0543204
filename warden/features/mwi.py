"""
Message waiting for the voicemail plugin: the ``message-summary`` event
package (RFC 3842 over RFC 6665), with the subscriptions of the dialog event
package (L{warden.features.blf}: digest authentication, granted ``Expires``,
refreshes in the subscription's dialog, 423/489/406/400/403/503 for what
cannot be served, a final NOTIFY at the end).

A phone SUBSCRIBEs to its mailbox's URI (``sip:1001@pbx``); every NOTIFY
carries the mailbox's whole state as ``application/simple-message-summary``::

    Messages-Waiting: yes
    Message-Account: sip:1001@pbx
    Voice-Message: 2/1 (0/0)

(new/saved; urgent counts are always 0). Whenever a mailbox changes (a message
left, heard, saved or deleted) its subscribers get a NOTIFY, and each
registered phone of the extension that holds no subscription gets an
unsolicited NOTIFY out of any dialog (what phones without MWI subscriptions
expect, as from Asterisk).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from warden.digits import is_digits
from warden.features.blf import DialogEvents, DialogState, Subscription
from warden.interfaces import IClientTransactionUser
from warden.model import Binding
from warden.sip.addressing import parse_flow_text
from warden.sip.message import Request, Response, out_of_dialog_request

if TYPE_CHECKING:
    from warden.sip.flow import Flow
    from warden.sip.transaction_client import ClientTransaction

__all__ = ["CONTENT_TYPE", "EVENT", "MessageWaiting", "summary"]

EVENT = "message-summary"
CONTENT_TYPE = "application/simple-message-summary"
#: Longest mailbox number served.
MAX_MAILBOX_DIGITS = 32


def summary(new: int, saved: int, account: str) -> bytes:
    """An RFC 3842 §5 message summary of a voice mailbox."""
    waiting = "yes" if new else "no"
    text = (
        f"Messages-Waiting: {waiting}\r\nMessage-Account: {account}\r\n"
        f"Voice-Message: {new}/{saved} (0/0)\r\n"
    )
    return text.encode("ascii")


class MessageWaiting(DialogEvents):
    """
    The notifier of the message-summary package.

    Args:
        events: a dialog notifier whose collaborators this one uses (clock,
            directory, authentication, sending, Contact, bounds:
            L{warden.features.callfeatures.dialog_events}).
        counts: a mailbox's ``(new, saved)`` counts (the voicemail store's).
        bindings: a mailbox's registered phones now (the location service's
            ``bindings_for(number, now)``).
        flow_for: how to reach a binding (None: it cannot be reached).
        via_for: our ``host:port`` towards a flow.
        domain: the domain of Message-Account and of unsolicited NOTIFYs.
    """

    log = Logger()
    event = EVENT
    content_type = CONTENT_TYPE

    def __init__(
        self,
        events: DialogEvents,
        counts: Callable[[str], Deferred[tuple[int, int]]],
        bindings: Callable[[str, float], Deferred[list[Binding]]],
        flow_for: Callable[[Binding], Flow | None],
        via_for: Callable[[Flow], str],
        domain: str,
    ) -> None:
        super().__init__(
            events.clock, events.directory, events.authenticate, events.send,
            events.new_branch, events.contact_for, dict, events.settings,
        )  # fmt: skip
        self.counts = counts
        self.bindings = bindings
        self.flow_for = flow_for
        self.via_for = via_for
        self.domain = domain
        #: The last counts of each mailbox with a subscription.
        self.known: dict[str, tuple[int, int]] = {}
        self.unsolicited = 0

    def subscribe(self, request: Request, flow: Flow) -> Deferred[Response]:
        """Answer a SUBSCRIBE for message-summary (new or a refresh)."""
        return Deferred.fromCoroutine(self._subscribe_mailbox(request, flow))

    async def _subscribe_mailbox(self, request: Request, flow: Flow) -> Response:
        mailbox = request.uri.user_unescaped or ""
        if (
            request.to.tag is None
            and is_digits(mailbox)
            and len(mailbox) <= MAX_MAILBOX_DIGITS
            and await self.directory.get_extension(mailbox) is not None
        ):
            self.known[mailbox] = await self.counts(mailbox)
        return await self._subscribe(request, flow)

    def document(self, sub: Subscription, dialogs: list[DialogState] | None) -> bytes:
        """The mailbox's message summary."""
        new, saved = self.known.get(sub.entity, (0, 0))
        return summary(new, saved, f"sip:{sub.entity}@{sub.domain}")

    def changed(self, mailbox: str) -> Deferred[None]:
        """The mailbox changed: NOTIFY its subscribers and its other phones."""
        return Deferred.fromCoroutine(self._changed(mailbox))

    async def _changed(self, mailbox: str) -> None:
        counts = await self.counts(mailbox)
        subscriptions = list(self._by_entity.get(mailbox, ()))
        if subscriptions:
            self.known[mailbox] = counts
        else:
            self.known.pop(mailbox, None)
        for sub in subscriptions:
            self._notify(sub)
        subscribed = {(s.dialog.flow.host, s.dialog.flow.port) for s in subscriptions}
        for binding in await self.bindings(mailbox, self.clock.seconds()):
            received = parse_flow_text(binding.received)
            if received is not None and (received[1], received[2]) in subscribed:
                continue
            flow = self.flow_for(binding)
            if flow is not None and (flow.host, flow.port) not in subscribed:
                self._unsolicited(mailbox, binding, flow, counts)

    def _unsolicited(
        self, mailbox: str, binding: Binding, flow: Flow, counts: tuple[int, int]
    ) -> None:
        """A NOTIFY out of any dialog to one phone of the mailbox's extension."""
        account = f"sip:{mailbox}@{self.domain}"
        contact, _ = self.contact_for(flow)
        request = out_of_dialog_request(
            "NOTIFY", binding.contact, flow.transport, self.via_for(flow), self.new_branch(),
            f"<{account}>", f"<{account}>", self.domain,
            [("Contact", f"<{contact}>"), ("Event", EVENT),
             ("Subscription-State", "active"), ("Content-Type", CONTENT_TYPE)],
        )  # fmt: skip
        request.set_body(summary(*counts, account))
        self.unsolicited += 1
        self.send(request, flow, _Unanswered())

    def _end(self, sub: Subscription, reason: str | None) -> None:
        super()._end(sub, reason)
        if sub.entity not in self._by_entity:
            self.known.pop(sub.entity, None)


@implementer(IClientTransactionUser)
class _Unanswered:
    """An unsolicited NOTIFY's answer changes nothing."""

    def response_received(self, transaction: ClientTransaction, response: Response) -> None:
        """Ignored."""

    def timed_out(self, transaction: ClientTransaction) -> None:
        """Ignored."""

    def transport_failed(self, transaction: ClientTransaction) -> None:
        """Ignored."""
