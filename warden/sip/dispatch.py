"""
The request dispatcher, the SIP transaction user of every new request: checks it as
RFC 3261 §8.2 says, answers what no handler owns, and hands the rest to the
handler registered for its method (REGISTER -> registrar; INVITE, BYE... later).

Checks, in order (each answered with its own status; RFC 4475 §3.3 lists them):
400 malformed or missing headers, 505 version (in the transport), 416 unknown
Request-URI scheme (and a ``sips:`` one that did not come over TLS, RFC 5630
§3.1.3), 483 Max-Forwards exhausted on a request not for us, 420
unknown ``Require``, 415/406 bodies and ``Accept`` the element cannot handle, 405
methods without a handler. ``SipError`` becomes a response here and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.errors import SipError, SipParseError, StateUnavailable, StoreUnavailable
from warden.interfaces import ITransactionUser
from warden.sip import metrics
from warden.sip.flow import Flow
from warden.sip.headers import SINGLE_VALUED
from warden.sip.message import Message, Request, Response, make_response, new_tag

if TYPE_CHECKING:
    from warden.sip.transaction import ServerTransaction

#: The default ``Server`` header: the product, not its version (``[sip] server_header``).
SERVER_HEADER = "Warden"
SUPPORTED_SCHEMES = frozenset({"sip", "sips", "tel"})
_RFC1123_GMT = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT\Z"
)
# Headers every request needs, in the order their absence is reported.
_REQUIRED = ("To", "From", "Call-ID", "CSeq", "Via")
BODY_METHODS = frozenset({"INVITE", "UPDATE", "PRACK", "ACK"})
ACCEPTED_TYPES = ("application/sdp", "multipart/mixed")


class ServerTransactionLike(Protocol):
    """What the dispatcher needs of a server transaction."""

    def respond(self, response: Response) -> None:
        """Send a response."""

    def respond_statelessly(self, response: Response) -> None:
        """Send a final response once and forget the transaction."""


#: Answers a request: a Response now, or a Deferred firing with one; an error
#: may be raised at once (a 401 challenge, with the directory in memory) or
#: fail the Deferred.
Handler = Callable[[Request, Flow], "Response | defer.Deferred[Response]"]


class CallRequests(Protocol):
    """What the dispatcher hands calls to (L{warden.sip.b2bua.CallController})."""

    def handle_invite(
        self, txn: ServerTransaction, request: Request, flow: Flow
    ) -> defer.Deferred[None]:
        """A new INVITE (no To tag)."""

    def handle_in_dialog(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        """A request inside a dialog (To tag present)."""

    def handle_cancel(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        """A CANCEL."""

    def handle_ack(self, request: Request, flow: Flow) -> None:
        """An ACK for a 2xx."""


@implementer(ITransactionUser)
class RequestDispatcher:
    """
    Validates and dispatches requests.

    Args:
        is_local_domain: whether a Request-URI host is this PBX.
        supported: option tags Warden supports (``Require`` values it accepts).
    """

    log = Logger()

    def __init__(
        self,
        is_local_domain: Callable[[str], bool],
        supported: frozenset[str] = frozenset(),
    ) -> None:
        self._is_local = is_local_domain
        self.supported = supported
        self._handlers: dict[str, Handler] = {}
        self._calls: CallRequests | None = None
        # The Server header of every response ("" sends none; [sip] server_header).
        self.server_header = SERVER_HEADER

    def attach_calls(self, controller: CallRequests) -> None:
        """
        Let the call controller own INVITE, CANCEL, ACK for 2xx and every request
        inside a dialog (To tag present), REGISTER excepted.
        """
        self._calls = controller
        self.supported = self.supported | {"timer", "100rel"}

    def register_handler(self, method: str, handler: Handler) -> None:
        """Let ``handler(request, flow)`` answer ``method`` requests."""
        self._handlers[method] = handler

    @property
    def allowed(self) -> list[str]:
        """Methods Warden answers (the ``Allow`` header)."""
        return sorted({"OPTIONS", "ACK", "CANCEL", *self._handlers})

    # -- ITransactionUser ---------------------------------------------------------

    def request_received(
        self, transaction: ServerTransaction, request: Request, flow: Flow
    ) -> None:
        """
        Validate, then answer or dispatch a new request. An unexpected error (a
        bug) is logged and answered 500, so the transaction ends.
        """
        metrics.count_request(request.method, flow.transport)
        try:
            self._dispatch(transaction, request, flow)
        except Exception:
            failure = Failure()  # type: ignore[no-untyped-call]
            self._handler_failed(failure, transaction, request, flow)

    def _dispatch(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None:
        try:
            self._validate(request)
            check_sips(request, flow)
            calls = self._calls
            if calls is not None and self._for_calls(calls, transaction, request, flow):
                return
            handler = self._handlers.get(request.method)
            if handler is None:
                self._respond(transaction, self._builtin(request), flow)
                return
        except (SipError, SipParseError) as caught:
            # A header found malformed only now (Require, Accept...) is a 400 too.
            e = caught if isinstance(caught, SipError) else SipError(400, _reason(caught))
            # Refused before anyone is authenticated: an INVITE's refusal goes
            # out once, statelessly, as its 407 does (no retransmissions
            # towards an address that may be spoofed).
            stateless = e.stateless or request.method == "INVITE"
            self._respond(transaction, self.error_response(request, e), flow, stateless)
            return
        # As maybeDeferred, without its cost for a handler that answers at once.
        try:
            result = handler(request, flow)
        except _ANSWERED as error:
            # Refused at once (a 401 challenge): answered without a Deferred.
            self._answer_error(error, transaction, request, flow)
            return
        except Exception:
            d: defer.Deferred[Response] = defer.fail()
        else:
            if isinstance(result, Response):
                self._respond(transaction, result, flow)
                return
            d = (
                result
                if isinstance(result, defer.Deferred)
                else defer.maybeDeferred(lambda: result)
            )
        if d.called and not d.paused and isinstance(d.result, Response):
            self._respond(transaction, d.result, flow)  # answered at once
            return
        d.addCallbacks(
            lambda response: self._respond(transaction, response, flow),
            lambda failure: self._handler_failed(failure, transaction, request, flow),
        )

    def ack_received(self, request: Request, flow: Flow) -> None:
        """An ACK for a 2xx: the call controller's business."""
        metrics.count_request("ACK", flow.transport)
        if self._calls is not None:
            try:
                self._calls.handle_ack(request, flow)
            except SipParseError:
                pass

    def _for_calls(
        self, calls: CallRequests, transaction: ServerTransaction, request: Request, flow: Flow
    ) -> bool:
        """Hand call requests to the call controller; False for everything else."""
        method = request.method
        if method == "REGISTER":
            return False
        handler: Callable[[ServerTransaction, Request, Flow], object]
        if method == "CANCEL":
            handler = calls.handle_cancel
        elif request.to.tag is not None and not (
            method == "SUBSCRIBE" and method in self._handlers
        ):
            # A SUBSCRIBE refresh is its subscription's (a plugin's), not a call's.
            handler = calls.handle_in_dialog
        elif method == "INVITE":
            handler = calls.handle_invite
        else:
            return False
        d = defer.maybeDeferred(handler, transaction, request, flow)
        d.addErrback(self._handler_failed, transaction, request, flow)
        return True

    def response_received_stray(self, response: Response, flow: Flow) -> None:
        """A response that matched no client transaction is dropped (§18.1.2)."""

    # -- checks -------------------------------------------------------------------

    def _validate(self, request: Request) -> None:
        present, repeated = request.header_names()
        try:
            if repeated:
                for name in SINGLE_VALUED:
                    if name in repeated:
                        raise SipError(400, f"Multiple {name} headers")
            for name in _REQUIRED:
                if name not in present:
                    raise SipError(400, f"Missing {name} header")
            request.vias, request.to, request.from_, request.contacts  # noqa: B018 - validate
            if "Date" in present:
                date = request.get("Date")
                if date is not None and not _RFC1123_GMT.match(date):
                    raise SipError(400, "Bad Date header (RFC 1123 date in GMT)")
            if request.cseq.method != request.method:
                raise SipError(400, "CSeq method does not match the request method")
            max_forwards = request.int_header("Max-Forwards", 255)
            uri = request.uri
        except SipParseError as e:
            raise SipError(400, _reason(e)) from e
        if uri.scheme not in SUPPORTED_SCHEMES:
            raise SipError(416, "Unsupported URI Scheme")
        if uri.headers:
            raise SipError(400, "Request-URI must not carry headers")
        # A request for an extension or another domain would be forwarded on a new
        # leg; with Max-Forwards exhausted it must not be (RFC 3261 §16.3 step 3).
        forwarded = request.method != "REGISTER" and (
            not uri.is_sip or uri.user is not None or not self._is_local(uri.host)
        )
        if max_forwards == 0 and forwarded:
            raise SipError(483, "Too Many Hops")
        if request.method in ("ACK", "CANCEL"):
            return
        if "Require" in present:
            unsupported = [t for t in request.get_all("Require") if t not in self.supported]
            if unsupported:
                raise SipError(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),))
        self._check_content(request)

    def _check_content(self, request: Request) -> None:
        method = request.method
        if method in BODY_METHODS and request.body:
            ctype = (request.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype not in ACCEPTED_TYPES:
                raise SipError(415, "Unsupported Media Type", self._accept_headers())
            encoding = (request.get("Content-Encoding") or "identity").strip().lower()
            if encoding != "identity":
                raise SipError(415, "Unsupported Media Type", (("Accept-Encoding", "identity"),))
        if method in ("INVITE", "OPTIONS") and request.get("Accept") is not None:
            accepted = [a.split(";")[0].strip().lower() for a in request.get_all("Accept")]
            if not any(a in ("application/sdp", "application/*", "*/*") for a in accepted):
                raise SipError(406, "Not Acceptable", self._accept_headers())

    def _accept_headers(self) -> tuple[tuple[str, str], ...]:
        return (("Accept", "application/sdp"),)

    # -- built-in answers ---------------------------------------------------------

    def _builtin(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return make_response(
                request,
                200,
                "OK",
                to_tag=new_tag(),
                headers=[
                    ("Allow", ", ".join(self.allowed)),
                    ("Accept", "application/sdp"),
                    ("Accept-Encoding", "identity"),
                    ("Accept-Language", "en"),
                    *(
                        [("Supported", ", ".join(sorted(self.supported)))]
                        if self.supported
                        else []
                    ),
                ],
            )
        if request.method == "CANCEL":
            # A CANCEL whose INVITE the call controller does not own.
            return make_response(request, 481, to_tag=new_tag())
        raise SipError(405, "Method Not Allowed", (("Allow", ", ".join(self.allowed)),))

    def error_response(self, request: Request, error: SipError) -> Response:
        """The one place a SipError becomes a response."""
        return make_response(
            request, error.status, error.reason, to_tag=new_tag(), headers=error.headers
        )

    def _respond(
        self,
        transaction: ServerTransactionLike,
        response: Response,
        flow: Flow,
        stateless: bool = False,
    ) -> None:
        if self.server_header:
            response.add("Server", self.server_header)
        if stateless:
            transaction.respond_statelessly(response)
        else:
            transaction.respond(response)

    def _answer_error(
        self,
        error: BaseException | None,
        transaction: ServerTransactionLike,
        request: Request,
        flow: Flow,
    ) -> None:
        """Answer what a handler raised: its SipError, or 503, 400 or 500."""
        if isinstance(error, (StateUnavailable, StoreUnavailable)):
            # The shared state (Redis) or the database is down or slow (a
            # failover): the phone retries later (RFC 3261 §21.5.4), by which
            # time it has usually returned. The backend logs and counts the
            # outage itself.
            error = SipError(503, "Service Unavailable", (("Retry-After", STATE_RETRY_AFTER),))
        elif isinstance(error, SipParseError):  # a header the handler found malformed
            error = SipError(400, _reason(error))
        elif not isinstance(error, SipError):
            error = SipError(500, "Server Internal Error")
        response = self.error_response(request, error)
        if error.stateless:
            self._respond(transaction, response, flow, stateless=True)
        else:
            self._respond(transaction, response, flow)

    def _handler_failed(
        self, failure: Failure, transaction: ServerTransactionLike, request: Request, flow: Flow
    ) -> None:
        if not isinstance(failure.value, _ANSWERED):
            self.log.failure("Handler for {method} failed", failure, method=request.method)
        self._answer_error(failure.value, transaction, request, flow)
        # An answered error is done with: drop its traceback now, whose frames
        # (and their locals: request, transaction, the failure itself) would
        # otherwise form a cycle per challenged or refused request that only the
        # cyclic collector frees. Only the references go: cleanFailure() would
        # first turn every frame into text and name every base class of the
        # error, for each 401 challenge.
        if failure.value is not None:
            failure.value.__traceback__ = None
        failure.tb = None


# Errors a handler raises that are answers, not bugs.
_ANSWERED = (SipError, SipParseError, StateUnavailable, StoreUnavailable)

# Seconds a phone should wait after a 503 caused by the shared state being unavailable.
STATE_RETRY_AFTER = "5"


def _reason(error: SipParseError) -> str:
    text = error.reason.split(" in ", 1)[0]
    return "Bad Request: " + "".join(c for c in text if c.isprintable() and c not in "'\"")[:80]


def build_stateless_error(
    message: Message, status: int, reason: str, server: str = SERVER_HEADER
) -> Response | None:
    """
    A response to a request that could not be parsed completely, when the parts
    needed to route a response (Via, From, To, Call-ID, CSeq) can be echoed;
    ``server`` is its Server header ("" for none).
    """
    if not isinstance(message, Request):
        return None
    try:
        message.top_via  # noqa: B018 - needs a usable Via to route the response
    except SipParseError:
        return None
    for name in ("From", "To", "Call-ID", "CSeq"):
        if message.get(name) is None:
            return None
    response = make_response(message, status, reason)
    if server:
        response.add("Server", server)
    return response


def check_sips(request: Request, flow: Flow) -> None:
    """
    A ``sips:`` URI promises TLS on every hop (RFC 3261 §26.2.2, RFC 5630 §3.1.3):
    a request for one, or a REGISTER binding a ``sips:`` Contact (RFC 5630
    §3.1.5), that arrived over anything but TLS is refused, so Warden never
    carries it on in the clear nor records a ``sips:`` Contact it would reach
    in the clear.

    Raises:
        SipError: 416 for a ``sips:`` Request-URI, 400 for a ``sips:`` Contact.
    """
    if flow.transport == "tls":
        return
    if request.uri.scheme == "sips":
        raise SipError(416, "SIPS Requires TLS")
    if request.method == "REGISTER":
        for contact in request.contacts:
            if not contact.star and contact.uri.scheme == "sips":
                raise SipError(400, "SIPS Contact Requires TLS")
