"""
Busy lamp fields: the SIP ``dialog`` event package (RFC 4235 over RFC 6665)
of the callfeatures plugin (ADR 0023).

A phone SUBSCRIBEs (``Event: dialog``) to an extension's URI; the subscriber
authenticates as an extension (digest, 401), the extension watched must exist
(404). Warden answers 200 with the granted ``Expires`` and sends a NOTIFY at
once, then one whenever the extension's calls change (a call rings it or it
calls out, is answered, ends), each with the full state as an
``application/dialog-info+xml`` document: one ``<dialog>`` per call of the
extension, ``early`` while it rings, ``confirmed`` once answered; none when
the extension is idle.

Bounds and bad input: ``Expires`` is granted between ``min_expires`` (a
shorter one gets 423 with ``Min-Expires``) and ``max_expires``; ``Expires: 0``
ends the subscription (a final NOTIFY, ``terminated``); an unknown event
package gets 489 with ``Allow-Events``; an ``Accept`` without dialog-info 406;
a body (filters are not supported) or a malformed ``Expires`` 400; beyond
``max_subscriptions`` in all 503, beyond ``max_per_watcher`` of one subscriber
403. A refresh is a SUBSCRIBE in the subscription's dialog; one for an unknown
dialog gets 481 (the phone subscribes anew). A subscription ends when it
expires (NOTIFY ``terminated;reason=timeout``), when Warden stops
(``terminated;reason=noresource``) or when the phone answers a NOTIFY with an
error or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from warden.digits import parse_uint
from warden.errors import SipError
from warden.interfaces import IClientTransactionUser, IDirectory
from warden.model import Extension
from warden.sip.dialog import Dialog, uas_dialog
from warden.sip.message import Request, Response, make_response, new_tag

if TYPE_CHECKING:
    from warden.sip.call import Call
    from warden.sip.flow import Flow
    from warden.sip.transaction_client import ClientTransaction

__all__ = ["CONTENT_TYPE", "DialogEvents", "DialogEventsService", "EventSettings", "dialog_info"]

EVENT = "dialog"
CONTENT_TYPE = "application/dialog-info+xml"
_NS = "urn:ietf:params:xml:ns:dialog-info"


@attrs.frozen
class EventSettings:
    """Bounds of the dialog event package's subscriptions."""

    min_expires: int = 60
    max_expires: int = 3600
    max_subscriptions: int = 10000
    max_per_watcher: int = 100


@attrs.define(eq=False)
class Subscription:
    """One phone's subscription to one extension's dialogs."""

    watcher: str
    entity: str
    domain: str
    dialog: Dialog
    expires_at: float
    version: int = 0
    timer: IDelayedCall | None = None


@attrs.frozen
class DialogState:
    """One call of a watched extension, as RFC 4235 describes it."""

    id: str
    call_id: str
    direction: str
    state: str
    remote: str


def dialog_info(entity: str, version: int, dialogs: Iterable[DialogState], domain: str) -> bytes:
    """The full ``dialog-info`` document (RFC 4235 §4.1) for ``entity``."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<dialog-info xmlns="{_NS}" version="{version}" state="full"'
        f" entity={quoteattr(f'sip:{entity}@{domain}')}>\n",
    ]
    for d in dialogs:
        parts.append(
            f"  <dialog id={quoteattr(d.id)} call-id={quoteattr(d.call_id)}"
            f" direction={quoteattr(d.direction)}>\n"
            f"    <state>{d.state}</state>\n"
            f"    <remote><identity>{escape(f'sip:{d.remote}@{domain}')}</identity></remote>\n"
            "  </dialog>\n"
        )
    parts.append("</dialog-info>\n")
    return "".join(parts).encode()


def dialogs_of(entity: str, calls: Iterable[Call]) -> list[DialogState]:
    """The calls ``entity`` is in: calling, rung (one of its phones), or answered."""
    from warden.sip.call import CallState

    found: list[DialogState] = []
    for call in calls:
        if call.state is CallState.ENDED:
            continue
        answered = call.state is CallState.ANSWERED
        state = "confirmed" if answered else "early"
        if call.caller.number == entity:
            found.append(DialogState(f"{call.call_id}-a", call.call_id, "initiator", state,
                                     call.callee.number))  # fmt: skip
            continue
        if answered:
            rung = call.callee.number == entity
        else:
            rung = any(not b.done and b.binding.aor == entity
                       for b in call.branches[call.first_branch:])  # fmt: skip
        if rung:
            found.append(DialogState(f"{call.call_id}-b", call.call_id, "recipient", state,
                                     call.caller.number))  # fmt: skip
    return found


def numbers_of(call: Call) -> set[str]:
    """The extensions a call involves now (its ringing members included)."""
    numbers = {call.caller.number, call.callee.number}
    numbers.update(b.binding.aor for b in call.branches[call.first_branch :] if not b.done)
    return numbers


class DialogEvents:
    """
    The notifier of the dialog event package.

    Args:
        clock: timers.
        directory: the extensions watched must exist.
        authenticate: the subscriber's digest authentication (401 challenges).
        send: sends a request in a client transaction (the transaction layer's).
        new_branch: a fresh Via branch.
        contact_for: our Contact URI and Via host towards a flow.
        calls: the calls in progress on this node, by Warden's call id.
        settings: bounds.
    """

    log = Logger()
    #: The event package served and the type of its NOTIFY bodies (a subclass
    #: serves another package with the same subscriptions: MWI).
    event = EVENT
    content_type = CONTENT_TYPE

    def __init__(
        self,
        clock: IReactorTime,
        directory: IDirectory,
        authenticate: Callable[[Request, Flow], Deferred[Extension]],
        send: Callable[[Request, Flow, IClientTransactionUser], object],
        new_branch: Callable[[], str],
        contact_for: Callable[[Flow], tuple[str, str]],
        calls: Callable[[], dict[str, Call]],
        settings: EventSettings = EventSettings(),
    ) -> None:
        self.clock = clock
        self.directory = directory
        self.authenticate = authenticate
        self.send = send
        self.new_branch = new_branch
        self.contact_for = contact_for
        self.calls = calls
        self.settings = settings
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self._by_entity: dict[str, set[Subscription]] = {}
        self._numbers: dict[str, set[str]] = {}
        self._pending: set[str] = set()
        self._flush_call: IDelayedCall | None = None

    # -- SUBSCRIBE ------------------------------------------------------------------

    def subscribe(self, request: Request, flow: Flow) -> Deferred[Response]:
        """Answer a SUBSCRIBE for the dialog package (new or a refresh)."""
        return Deferred.fromCoroutine(self._subscribe(request, flow))

    async def _subscribe(self, request: Request, flow: Flow) -> Response:
        expires = self._check(request)
        watcher = await self.authenticate(request, flow)
        tag = request.to.tag
        if tag is not None:
            return self._refresh(request, tag, watcher, expires)
        entity = request.uri.user_unescaped or ""
        if not entity or await self.directory.get_extension(entity) is None:
            raise SipError(404, "Not Found")
        if expires == 0:  # a fetch: the state once, then the end (RFC 6665 §4.4.3)
            sub = self._new(request, flow, watcher.number, entity, 0)
            response = self._ok(request, sub, 0)
            self._soon(sub, "timeout")
            return response
        if len(self.subscriptions) >= self.settings.max_subscriptions:
            raise SipError(503, "Service Unavailable", (("Retry-After", "60"),))
        mine = sum(1 for s in self.subscriptions.values() if s.watcher == watcher.number)
        if mine >= self.settings.max_per_watcher:
            raise SipError(403, "Forbidden (too many subscriptions)")
        sub = self._new(request, flow, watcher.number, entity, expires)
        self.subscriptions[(sub.dialog.call_id, sub.dialog.local_tag)] = sub
        self._by_entity.setdefault(entity, set()).add(sub)
        self._arm(sub, expires)
        response = self._ok(request, sub, expires)
        self._soon(sub)
        self.log.info(
            "{watcher} watches the calls of {entity} (dialog events, {expires} s)",
            watcher=watcher.number,
            entity=entity,
            expires=expires,
        )
        return response

    def _check(self, request: Request) -> int:
        """The Expires asked for, bounded; SipError for what cannot be served."""
        event = (request.get("Event") or "").split(";", 1)[0].strip().lower()
        if event != self.event:
            raise SipError(489, "Bad Event", (("Allow-Events", self.event),))
        accept = request.get_all("Accept")
        if accept:
            kinds = {k.split(";", 1)[0].strip().lower() for a in accept for k in a.split(",")}
            if not kinds & {self.content_type, "application/*", "*/*"}:
                raise SipError(406, "Not Acceptable", (("Accept", self.content_type),))
        if request.body:
            raise SipError(400, "Bad Request (no body expected: filters are not supported)")
        text = request.get("Expires")
        if text is None:
            return self.settings.max_expires
        expires = parse_uint(text.strip(), 2**32 - 1, max_digits=10)
        if expires is None:
            raise SipError(400, "Bad Request (Expires)")
        if 0 < expires < self.settings.min_expires:
            raise SipError(
                423, "Interval Too Brief", (("Min-Expires", str(self.settings.min_expires)),)
            )
        return min(expires, self.settings.max_expires)

    def _new(self, request: Request, flow: Flow, watcher: str, entity: str, expires: int
             ) -> Subscription:  # fmt: skip
        contact, via = self.contact_for(flow)
        dialog = uas_dialog(request, new_tag(), flow, contact, via)
        domain = request.uri.host
        now = self.clock.seconds()
        return Subscription(watcher, entity, domain, dialog, now + expires)

    def _ok(self, request: Request, sub: Subscription, expires: int) -> Response:
        headers = [("Expires", str(expires)), ("Contact", f"<{sub.dialog.local_contact}>")]
        return make_response(request, 200, "OK", to_tag=sub.dialog.local_tag, headers=headers)

    def _refresh(self, request: Request, tag: str, watcher: Extension, expires: int) -> Response:
        sub = self.subscriptions.get((request.call_id, tag))
        if sub is None or sub.watcher != watcher.number:
            raise SipError(481, "Subscription Does Not Exist")
        cseq = request.cseq.number
        if sub.dialog.remote_cseq is not None and cseq <= sub.dialog.remote_cseq:
            raise SipError(500, "Server Internal Error (CSeq out of order)")
        sub.dialog.remote_cseq = cseq
        response = self._ok(request, sub, expires)
        if expires == 0:
            self._end(sub, None)
            self._soon(sub, "")
        else:
            self._arm(sub, expires)
            self._soon(sub)
        return response

    def _soon(self, sub: Subscription, terminated: str | None = None) -> None:
        """NOTIFY once the SUBSCRIBE's 200 has gone (RFC 6665 §4.2.1.2: at once)."""
        self.clock.callLater(0, self._notify, sub, terminated)

    # -- lifetime -------------------------------------------------------------------

    def _arm(self, sub: Subscription, expires: int) -> None:
        if sub.timer is not None and sub.timer.active():
            sub.timer.cancel()
        sub.expires_at = self.clock.seconds() + expires
        sub.timer = self.clock.callLater(expires, self._end, sub, "timeout")

    def _end(self, sub: Subscription, reason: str | None) -> None:
        """Forget ``sub``; with a ``reason`` ("" for none) send the final NOTIFY."""
        if self.subscriptions.pop((sub.dialog.call_id, sub.dialog.local_tag), None) is None:
            return
        watchers = self._by_entity.get(sub.entity)
        if watchers is not None:
            watchers.discard(sub)
            if not watchers:
                del self._by_entity[sub.entity]
        if sub.timer is not None and sub.timer.active():
            sub.timer.cancel()
        sub.timer = None
        if reason is not None:
            self._notify(sub, terminated=reason)

    def stop(self) -> None:
        """Shutting down: every subscription ends (``terminated;reason=noresource``)."""
        for sub in list(self.subscriptions.values()):
            self._end(sub, "noresource")

    # -- NOTIFY -----------------------------------------------------------------------

    def _notify(
        self,
        sub: Subscription,
        terminated: str | None = None,
        dialogs: list[DialogState] | None = None,
    ) -> None:
        """NOTIFY ``sub``'s phone of its extension's ``dialogs`` (found when None)."""
        body = self.document(sub, dialogs)
        sub.version += 1
        if terminated is None:
            left = max(0, round(sub.expires_at - self.clock.seconds()))
            state = f"active;expires={left}"
        else:
            state = f"terminated;reason={terminated}" if terminated else "terminated"
        headers = [("Event", self.event), ("Subscription-State", state),
                   ("Content-Type", self.content_type)]  # fmt: skip
        dialog = sub.dialog
        notify = dialog.request("NOTIFY", self.new_branch(), headers, body)
        self.send(notify, dialog.flow, _NotifyUser(self, sub))

    def document(self, sub: Subscription, dialogs: list[DialogState] | None) -> bytes:
        """The NOTIFY body for ``sub``: its extension's ``dialogs`` (found when None)."""
        if dialogs is None:
            dialogs = dialogs_of(sub.entity, self.calls().values())
        return dialog_info(sub.entity, sub.version, dialogs, sub.domain)

    def touch(self, call_id: str) -> None:
        """A call changed: tell the watchers of the extensions it involves (soon, once)."""
        call = self.calls().get(call_id)
        numbers = numbers_of(call) if call is not None else set()
        before = self._numbers.pop(call_id, set())
        if call is not None:
            self._numbers[call_id] = numbers
        self._pending.update(n for n in numbers | before if n in self._by_entity)
        if self._pending and self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        pending, self._pending = self._pending, set()
        calls = list(self.calls().values())
        for entity in pending:
            subscriptions = list(self._by_entity.get(entity, ()))
            if subscriptions:  # one look at the calls per extension, however many watch it
                dialogs = dialogs_of(entity, calls)
                for sub in subscriptions:
                    self._notify(sub, dialogs=dialogs)

    def notify_failed(self, sub: Subscription) -> None:
        """The phone refused a NOTIFY or never answered: the subscription ends."""
        self._end(sub, None)


class DialogEventsService(service.Service):
    """Ends every subscription (a final NOTIFY each) when Warden stops."""

    def __init__(self, events: DialogEvents) -> None:
        self.events = events

    def stopService(self) -> None:
        """Tell each watching phone its subscription ends (``noresource``)."""
        super().stopService()
        self.events.stop()


@implementer(IClientTransactionUser)
class _NotifyUser:
    """Ends the subscription when its NOTIFY fails (RFC 6665 §4.2.2)."""

    def __init__(self, events: DialogEvents, sub: Subscription) -> None:
        self.events = events
        self.sub = sub

    def response_received(self, transaction: ClientTransaction, response: Response) -> None:
        if response.status >= 300:
            self.events.notify_failed(self.sub)

    def timed_out(self, transaction: ClientTransaction) -> None:
        self.events.notify_failed(self.sub)

    def transport_failed(self, transaction: ClientTransaction) -> None:
        self.events.notify_failed(self.sub)
