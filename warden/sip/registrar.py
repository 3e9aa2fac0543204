"""
The registrar (RFC 3261 §10.3): authenticated REGISTER requests add, refresh,
remove and query the bindings of an extension's AOR.

Bindings are written through ``ILocationService``; the 200 OK is sent once the
change is durable, and lists every current binding with its remaining time.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from warden.digits import parse_uint
from warden.errors import SipError, SipParseError, StaleBindings
from warden.interfaces import IGuardedLocation, ILocationService
from warden.model import Binding, Extension
from warden.sip import metrics
from warden.sip.addressing import sent_by_text
from warden.sip.authenticator import Authenticator, as_deferred, then
from warden.sip.flow import Flow
from warden.sip.headers import Address
from warden.sip.message import Request, Response, make_response, new_tag
from warden.sip.uri import contact_key


@attrs.frozen
class ExpiryPolicy:
    """Registration intervals: ``min`` (423 below it), ``default``, ``max`` (cap)."""

    min: int = 60
    default: int = 3600
    max: int = 7200


class Registrar:
    """
    Handles REGISTER for local domains.

    Args:
        clock: time source; binding expiry is absolute clock time.
        authenticator: digest authentication (401 challenges).
        location: the binding store.
        expiry: registration interval policy.
        is_local_domain: tells whether a host (name or address) is this PBX.
        node_id: recorded in each binding.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        authenticator: Authenticator,
        location: ILocationService,
        expiry: ExpiryPolicy,
        is_local_domain: Callable[[str], bool],
        node_id: str,
    ) -> None:
        self._clock = clock
        self._auth = authenticator
        self._location = location
        self.expiry = expiry
        self._is_local = is_local_domain
        self._node_id = node_id
        #: Set when the location can check a write against this node's view
        #: (Redis): a refresh then costs one round trip, not a read and a write.
        self._guarded = location if IGuardedLocation.providedBy(location) else None

    def handle(self, request: Request, flow: Flow) -> Deferred[Response]:
        """Fire with the final Response, or fail with SipError."""
        try:
            return as_deferred(self.answer(request, flow))
        except Exception:
            return defer.fail()

    def answer(self, request: Request, flow: Flow) -> Response | Deferred[Response]:
        """
        L{handle} without a Deferred when the stores answer at once: the final
        Response is returned, or SipError raised (a 401 challenge), now.
        Otherwise a Deferred that fires or fails as L{handle}'s.
        """
        to = request.to
        if not to.uri.is_sip or to.uri.user is None:
            raise SipError(400, "To must be a SIP URI with an extension")
        if not self._is_local(request.uri.host) or not self._is_local(to.uri.host):
            raise SipError(404, "Domain Not Served")
        aor = to.uri.user_unescaped or ""
        return then(
            self._auth.check(request, flow),
            lambda extension: self._authenticated(request, flow, aor, extension),
        )

    # Each step below answers at once when the stores do, else with a Deferred.

    def _authenticated(
        self, request: Request, flow: Flow, aor: str, extension: Extension
    ) -> Response | Deferred[Response]:
        if extension.number != aor:
            raise SipError(403, "Authenticated User Does Not Match To")
        now = self._clock.seconds()
        if self._guarded is not None:
            guarded = self._update_view(self._guarded, request, flow, aor, now, retry=True)
            if guarded is not None:
                return guarded
        return self._read_and_update(request, flow, aor, now)

    def _read_and_update(
        self, request: Request, flow: Flow, aor: str, now: float
    ) -> Response | Deferred[Response]:
        return then(
            self._location.bindings_for(aor, now),
            lambda current: self._update(request, flow, aor, current, now),
        )

    def _update_view(
        self,
        location: IGuardedLocation,
        request: Request,
        flow: Flow,
        aor: str,
        now: float,
        retry: bool,
    ) -> Deferred[Response] | None:
        """
        The changes worked out from this node's view of the bindings, written
        in one round trip that checks the view is still right. A stale view
        fails that write, whose answer brings the bindings Redis holds: with
        ``retry``, the changes are worked out again from those and written the
        same way, so another node's write costs one more round trip, not a read
        and a write. A second stale answer (the AOR is being written on several
        nodes at once) falls back to reading the bindings and writing
        unguarded. None: there is no view, or it cannot decide (a query, or an
        error that the current bindings might not give), so the caller reads them.
        """
        view = location.view(aor, now)
        if view is None:
            return None
        try:
            upserts, removals, kind = self._changes(request, flow, aor, view, now)
        except SipError:
            return None
        if not (upserts or removals):
            return None
        d = location.apply_unchanged(aor, upserts, removals)

        def written(_: None) -> Response | Deferred[Response]:
            return then(
                self._location.bindings_for(aor, now),
                lambda bindings: self._done(request, bindings, now, kind),
            )

        def stale(failure: Failure) -> Response | Deferred[Response]:
            failure.trap(StaleBindings)  # type: ignore[no-untyped-call]
            if retry:
                again = self._update_view(location, request, flow, aor, now, retry=False)
                if again is not None:
                    return again
            return self._read_and_update(request, flow, aor, now)

        return d.addCallbacks(written, stale)

    def _update(
        self, request: Request, flow: Flow, aor: str, current: list[Binding], now: float
    ) -> Response | Deferred[Response]:
        upserts, removals, kind = self._changes(request, flow, aor, current, now)
        if not (upserts or removals):
            return self._done(request, current, now, kind)
        applied: list[Binding] | Deferred[list[Binding]] = then(
            self._location.apply(aor, upserts, removals),
            lambda _: self._location.bindings_for(aor, now),
        )
        return then(applied, lambda bindings: self._done(request, bindings, now, kind))

    def _done(self, request: Request, bindings: list[Binding], now: float, kind: str) -> Response:
        metrics.count_registration(kind)
        return self._ok(request, bindings, now)

    def _changes(
        self, request: Request, flow: Flow, aor: str, current: list[Binding], now: float
    ) -> tuple[list[Binding], list[str], str]:
        try:
            contacts = request.contacts
            header_expires = request.int_header("Expires")
        except SipParseError as e:
            raise SipError(400, e.reason[:100]) from e
        call_id, cseq = request.call_id, request.cseq.number
        existing = {b.key: b for b in current}
        if not contacts:
            return [], [], "query"
        if any(c.star for c in contacts):
            if len(contacts) != 1 or header_expires != 0:
                raise SipError(400, "Contact * needs Expires: 0 and no other Contact")
            for binding in current:
                self._check_order(binding, call_id, cseq)
            return [], [b.key for b in current], "unregister"
        upserts: list[Binding] = []
        removals: list[str] = []
        user_agent = request.get("User-Agent") or ""
        via = request.top_via
        sent_by = sent_by_text(via.transport, via.host, via.port)
        for contact in contacts:
            expires = self._expires_of(contact, header_expires)
            key = contact_key(contact.uri)
            if key in existing:
                self._check_order(existing[key], call_id, cseq)
            if expires == 0:
                removals.append(key)
                continue
            upserts.append(
                Binding(
                    aor=aor,
                    contact=str(contact.uri),
                    key=key,
                    expires_at=now + expires,
                    q=self._q_of(contact),
                    call_id=call_id,
                    cseq=cseq,
                    received=str(flow),
                    user_agent=user_agent,
                    node_id=self._node_id,
                    sent_by=sent_by,
                )
            )
        kind = "unregister" if not upserts else ("refresh" if existing else "new")
        return upserts, removals, kind

    def _expires_of(self, contact: Address, header_expires: int | None) -> int:
        if not contact.uri.is_sip:
            raise SipError(400, "Contact must be a SIP or SIPS URI")
        text = contact.param("expires")
        if text is not None:
            number = parse_uint(text, 2**32 - 1, max_digits=10)
            if number is None:
                raise SipError(400, "Bad expires parameter")
            expires = number
        elif header_expires is not None:
            expires = header_expires
        else:
            expires = self.expiry.default
        if expires == 0:
            return 0
        if expires < self.expiry.min:
            raise SipError(423, "Interval Too Brief", (("Min-Expires", str(self.expiry.min)),))
        return min(expires, self.expiry.max)

    @staticmethod
    def _q_of(contact: Address) -> float:
        text = contact.param("q")
        if text is None:
            return 1.0
        try:
            q = float(text)
        except ValueError:
            raise SipError(400, "Bad q parameter") from None
        if not 0.0 <= q <= 1.0:
            raise SipError(400, "Bad q parameter")
        return q

    @staticmethod
    def _check_order(binding: Binding, call_id: str, cseq: int) -> None:
        # RFC 3261 §10.3 step 7: same Call-ID needs a higher CSeq.
        if binding.call_id == call_id and cseq <= binding.cseq:
            raise SipError(400, "Out-of-order REGISTER (CSeq not increased)")

    def _ok(self, request: Request, bindings: list[Binding], now: float) -> Response:
        headers = [
            (
                "Contact",
                f"<{b.contact}>;expires={max(0, int(b.expires_at - now))}"
                + (f";q={b.q:g}" if b.q != 1.0 else ""),
            )
            for b in (sorted(bindings, key=lambda b: -b.q) if len(bindings) > 1 else bindings)
        ]
        return make_response(request, 200, "OK", to_tag=new_tag(), headers=headers)
