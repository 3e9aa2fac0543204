"""
Every extension point of Warden, as zope interfaces.

Each interface has one conformance test mixin (``tests/store/conformance.py`` for
the stores) that every implementation, fakes included, must pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUDP,
)
from zope.interface import Interface

from warden.model import Binding, Extension, Route
from warden.model.features import CallFeatures

if TYPE_CHECKING:
    from warden.sip.flow import Flow
    from warden.sip.message import Request, Response
    from warden.sip.transaction import ClientTransaction, ServerTransaction


class IWardenReactor(
    IReactorCore, IReactorTime, IReactorTCP, IReactorUDP, IReactorThreads, IReactorFDSet
):
    """
    The reactor Warden is built on (L{warden.server.build_server}): timers, TCP
    and UDP listeners and connections, a thread pool (SQLite, fsync), file
    descriptors (PostgreSQL connections), start-up and shutdown. ``twistd``'s
    reactor provides each of them; L{warden.server.warden_reactor} checks it.
    """


class IDirectory(Interface):
    """
    Extensions and their credentials.

    Passwords are never stored: only the digest HA1 values for MD5 and SHA-256
    (RFC 2617, RFC 8760), computed over ``username:realm:password``.
    Every method returns a Deferred.
    """

    def add_extension(extension: Extension) -> Deferred[None]:
        """
        Add a new L{warden.model.Extension}.

        Fires with None; fails with L{warden.errors.ExtensionExists} when the number
        is taken.
        """

    def get_extension(number: str) -> Deferred[Extension | None]:
        """Fire with the Extension for ``number``, or None."""

    def list_extensions() -> Deferred[list[Extension]]:
        """Fire with every Extension, ordered by number."""

    def update_extension(extension: Extension) -> Deferred[None]:
        """
        Replace the stored Extension with the same number.

        Fails with L{warden.errors.ExtensionNotFound} when there is none.
        """

    def remove_extension(number: str) -> Deferred[bool]:
        """Remove the extension; fire with True if it existed, else False."""

    def upsert_extensions(extensions: Sequence[Extension]) -> Deferred[tuple[int, int]]:
        """
        Insert or replace many Extensions in one transaction (bulk provisioning).

        Fires with a tuple ``(added, updated)`` of counts. Idempotent: importing the
        same list twice changes nothing the second time (an unchanged row counts as
        neither added nor updated).
        """

    def count_extensions() -> Deferred[int]:
        """Fire with the number of extensions."""

    def qualified_numbers() -> Deferred[list[str]]:
        """Fire with the numbers of the extensions with ``qualify`` on, ordered
        as L{list_extensions} orders them (for the qualify rounds)."""


class ILocationService(Interface):
    """
    Registrar bindings (RFC 3261 §10): AOR -> contacts, each with an absolute expiry.

    ``aor`` is the extension number (the user part of the AOR in a local domain).
    A binding is identified within its AOR by its contact URI, compared with
    L{warden.sip.uri.contact_key}. Every method returns a Deferred.
    """

    def bindings_for(aor: str, now: float) -> Deferred[list[Binding]]:
        """Fire with the list of Bindings of ``aor`` whose ``expires_at > now``."""

    def apply(aor: str, upserts: Sequence[Binding], removals: Sequence[str]) -> Deferred[None]:
        """
        Atomically change the bindings of ``aor``.

        ``upserts``: Bindings to add or replace (same key replaces).
        ``removals``: keys (strings) of bindings to remove; unknown keys are ignored.
        Fires with None.
        """

    def remove_aor(aor: str) -> Deferred[int]:
        """Remove every binding of ``aor``. Fires with the number removed."""

    def expire(now: float) -> Deferred[int]:
        """Remove every binding with ``expires_at <= now``; fire with the number removed."""

    def all_bindings(now: float) -> Deferred[list[Binding]]:
        """Fire with every unexpired binding (for operators and restarts)."""

    def count(now: float) -> Deferred[int]:
        """Fire with the number of unexpired bindings."""

    def flush() -> Deferred[None]:
        """Fire once everything accepted so far is durable (no-op for memory)."""


class IDurableLocation(ILocationService):
    """
    Bindings that outlive the process (the database's, or the cluster's in
    Redis): loaded when Warden starts, closed when it stops.
    """

    def load() -> Deferred[int]:
        """Make the stored bindings current; fire with how many there are."""

    def close() -> Deferred[None]:
        """Write what is pending and let go of the store."""


class IGuardedLocation(ILocationService):
    """
    Bindings kept elsewhere (Redis, shared by several nodes or workers) of which
    this node remembers the last view it read or wrote: a REGISTER refresh can
    work out its changes from that view and write them in one round trip, the
    write checking that the AOR still holds exactly what the view saw.
    """

    def view(aor: str, now: float) -> list[Binding] | None:
        """
        The bindings of ``aor`` (``expires_at > now``) as this node last saw
        them, unchecked; None when it has no view of ``aor``.
        """

    def apply_unchanged(
        aor: str, upserts: Sequence[Binding], removals: Sequence[str]
    ) -> Deferred[None]:
        """
        L{ILocationService.apply}, provided the bindings of ``aor`` are still
        those of L{view}; otherwise nothing changes and it fails with
        L{warden.errors.StaleBindings} (and, when there was a view, the next
        one is what the store holds now).
        """


class IRouter(Interface):
    """Decides where a dialled number goes."""

    def route(dialled: str, caller: Extension) -> Deferred[Route]:
        """Fire with the Route for ``dialled`` when ``caller`` dials it."""


class ITransactionUser(Interface):
    """
    The transaction user (TU) above L{warden.sip.transaction.TransactionLayer}
    (RFC 3261 §17): the request dispatcher that answers requests.
    """

    def request_received(transaction: ServerTransaction, request: Request, flow: Flow) -> None:
        """
        A new request: not a retransmission, not an ACK matched to a transaction.

        The TU must eventually call ``transaction.respond(response)`` with a final
        response. For an INVITE the transaction sends "100 Trying" itself after
        200 ms of silence; a 2xx to an INVITE is sent once by the transaction and
        retransmitted by the TU (RFC 3261 §13.3.1.4) through ``respond`` again.
        """

    def ack_received(request: Request, flow: Flow) -> None:
        """
        An ACK that matched no INVITE server transaction, or one in the Accepted
        state: the end-to-end ACK for a 2xx, for the dialog.
        """

    def response_received_stray(response: Response, flow: Flow) -> None:
        """
        A response that matched no client transaction (RFC 3261 §18.1.2), e.g. a
        2xx to an INVITE retransmitted after Timer M.
        """


class IClientTransactionUser(Interface):
    """What a client transaction reports to the TU that sent its request."""

    def response_received(transaction: ClientTransaction, response: Response) -> None:
        """
        A provisional or final response (retransmissions absorbed). For an INVITE
        every 2xx is passed up while the transaction is Accepted (RFC 6026 §7.2),
        so the TU acknowledges each one; 300-699 are acknowledged by the transaction.
        """

    def timed_out(transaction: ClientTransaction) -> None:
        """Timer B or F fired: no final response came (RFC 3261 §17.1)."""

    def transport_failed(transaction: ClientTransaction) -> None:
        """The transport could not send the request or the ACK (RFC 3261 §17.1.4)."""


class ITransactionObserver(Interface):
    """
    What the transaction layer reports as it works, for monitoring. The layer
    itself counts nothing: the SIP service binds these reports to its metrics
    (L{warden.sip.metrics.TransactionMetrics}); without one they go nowhere.

    Both are called once per message or transaction on the hot path: an
    implementation must be cheap and must not raise.
    """

    def response_sent(status: int, transport: str, method: str) -> None:
        """
        A server transaction sent a response with ``status`` on ``transport``
        (lower-case), answering a request of ``method`` (its CSeq method): each
        response the TU hands it, and the "100 Trying" it sends itself. Copies
        sent again for a retransmitted request or by a timer are not reported.
        """

    def exchange_ended(method: str, role: str, seconds: float) -> None:
        """
        A transaction for a request of ``method`` reached its first final state
        (a final response, or a timeout) ``seconds`` after it began; ``role`` is
        "client" or "server".
        """


# -- calls -----------------------------------------------------------------------

if TYPE_CHECKING:
    import builtins

    from warden.model import CallRecord, LiveCall


class ICallRecordStore(Interface):
    """
    Records of finished calls (CDRs), written by the B2BUA when a call ends.

    Records are never changed once written. Every method returns a Deferred.
    """

    def add(record: CallRecord) -> Deferred[None]:
        """
        Store L{warden.model.CallRecord} ``record``.

        Idempotent by ``call_id``: when a record with that call_id is already
        stored, nothing changes (the first one stays) and the Deferred still fires
        with None, so a record replayed after a crash is never duplicated.
        """

    def list(
        since: float | None = None,
        until: float | None = None,
        extension: str | None = None,
        disposition: str | None = None,
        limit: int = 100,
        after_call_id: str | None = None,
    ) -> Deferred[builtins.list[CallRecord]]:
        """
        Fire with at most ``limit`` records, ordered by ``(started_at, call_id)``.

        Args:
            since: only calls with ``started_at >= since``.
            until: only calls with ``started_at < until``.
            extension: only calls whose caller, callee or dialled number is this.
            disposition: only calls with this disposition.
            limit: the most records returned; 0 returns none. A negative limit
                fails with ValueError.
            after_call_id: the cursor for the next page: the call_id of the last
                record of the previous page. Only records ordered after that one,
                i.e. with ``(started_at, call_id)`` greater than its, are returned,
                so records sharing a start time are neither skipped nor repeated.
                Fails with L{warden.errors.CallRecordNotFound} when no record has
                that call_id.
        """

    def count() -> Deferred[int]:
        """Fire with the number of stored records."""

    def expire_recordings(
        before: float, at: float, limit: int = 500
    ) -> Deferred[builtins.list[str]]:
        """
        Unlink the recordings of at most ``limit`` calls started before
        ``before`` (the oldest first), for the retention sweep: each such
        record's ``recording`` becomes "" and its ``recording_info`` gains
        ``deleted_at`` (``at``) and ``file`` (the recording it was). The only
        change a stored record ever sees. Fire with the files unlinked.
        """


class ILiveCalls(Interface):
    """
    Summaries of the calls in progress (L{warden.model.LiveCall}), by
    call_id, published by the nodes handling them.

    Every method returns a Deferred.
    """

    def publish(call: LiveCall) -> Deferred[None]:
        """Add the summary, or replace the one with the same call_id."""

    def remove(call_id: str) -> Deferred[None]:
        """Remove the summary of ``call_id``; an unknown call_id is ignored."""

    def list() -> Deferred[builtins.list[LiveCall]]:
        """Fire with every summary, ordered by ``(started_at, call_id)``."""

    def clear_node(node_id: str) -> Deferred[int]:
        """
        Remove every summary published by ``node_id``; fire with how many.

        A node calls this at start-up: the calls it had before are gone.
        """


# -- media ----------------------------------------------------------------------------
# Appended as one section: its own imports live here rather than at the top.

from zope.interface import Attribute  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from warden.model.media import HoldState, MediaSide


class IMediaSession(Interface):
    """
    The anchored media of one call, from ``IMediaRelay.allocate``.

    Side ``"a"`` faces the caller and side ``"b"`` the callee; each is an RTP/RTCP
    port pair on the relay. SDP from a phone goes through ``offer_from`` or
    ``answer_from`` with the side it came from, and the result, pointing at the
    other side's ports, is what the other phone gets. Every call ends with
    ``release()``.
    """

    call_id: str = Attribute("The call's identifier, as given to allocate().")
    side_a: MediaSide = Attribute("The relay's address and ports facing the caller.")
    side_b: MediaSide = Attribute("The relay's address and ports facing the callee.")
    hold_state: HoldState = Attribute(
        "The direction each phone last declared; ``hold_state.on_hold`` is true while "
        "a phone holds (sendonly, inactive or c=0.0.0.0) and media may stop."
    )
    on_timeout: Callable[[], object] | None = Attribute(
        "Called once, without arguments, when media has stopped for the relay's "
        "media timeout while not on hold. Set by the call controller; None at first."
    )
    on_dtmf: Callable[[str, str], object] | None = Attribute(
        "Called with the side and the digit (``0-9``, ``*``, ``#``, ``A-D``) when the "
        "phone on that side starts an RFC 4733 telephone-event (once per event, "
        "however many packets carry it). Set by the call controller; None at first."
    )
    tap: IMediaTap | None = Attribute(
        "Sees every RTP packet the session relays, decrypted (a call recorder); "
        "closed when the session is released. None at first."
    )

    def offer_from(side: str, sdp: bytes) -> bytes:
        """
        An SDP offer received from the phone on ``side`` (``"a"`` or ``"b"``).

        Remembers that phone's RTP/RTCP addresses as where its media goes until
        it is heard from (a new description also forgets the address it was
        latched to), and returns the SDP rewritten to the *other* side's relay
        address and ports, for the other phone.

        Raises:
            warden.sip.sdp.SdpError: the SDP is malformed, or its media security
                is refused by ``[media] srtp`` (answer 488).
            warden.rtp.errors.MediaError: the session was released.
            ValueError: ``side`` is neither ``"a"`` nor ``"b"``.
        """

    def answer_from(side: str, sdp: bytes) -> bytes:
        """The same as ``offer_from``, for the SDP answer to the last offer."""

    def signalling_from(side: str, *hosts: str) -> None:
        """
        The phone on ``side`` sends its SIP from IP address ``hosts`` (as the
        transport saw it, behind any NAT; several while forked phones ring).
        The relay judges that phone's SDP addresses and media sources against
        them (ADR 0013); called before the phone's first SDP goes through
        ``offer_from``/``answer_from``, and again when the phone on the side is
        known (answer) or another phone takes it (transfer).

        Raises:
            ValueError: ``side`` is neither ``"a"`` nor ``"b"``.
        """

    def signalling_encrypted(side: str, encrypted: bool) -> None:
        """
        Whether the phone on ``side`` sends its SIP over TLS: SDES keys
        (``a=crypto``, RFC 4568) are only accepted from and offered to such a
        phone (ADR 0019). Called before that side's first SDP; False until then.

        Raises:
            ValueError: ``side`` is neither ``"a"`` nor ``"b"``.
        """

    def stats() -> dict[str, dict[str, Any]]:
        """
        Counters per side: ``{"a": {...}, "b": {...}}``, each with ``packets_in``,
        ``bytes_in``, ``lost_in``, ``jitter_ms_in``, ``last_packet_at_in`` (media
        from that side's phone) and the same with ``_out`` (media sent to it),
        ``rtcp_in``, ``rtcp_out``, ``dtmf_events``, ``media_encrypted`` (whether that
        side's media is encrypted), and ``dropped_<reason>`` (``spoofed``,
        ``pending``, ``malformed``, ``auth_failed``, ``replayed``: arriving from
        that side; ``no_destination``, ``send_error``, ``protect_failed``: meant
        for that side's phone).
        """

    def idle_for(now: float) -> float:
        """
        Seconds from the last RTP packet received from either phone (or from
        allocation, or the last offer/answer, whichever is later) to ``now``.
        """

    def release() -> None:
        """Close the session's sockets and return its ports. Idempotent."""

    def final_stats() -> Deferred[dict[str, dict[str, Any]]]:
        """
        The counters of L{stats} once the session is released, for the call
        record; never fails. The relay in the SIP process and rtpengine answer
        at once; the media process (ADR 0033) with its last count of the
        released session, or, when that does not come within a few seconds or
        the process died, with its last periodic report, each side then marked
        ``"counters_stale": True``. Before release, the current counters.
        """


class IMediaTap(Interface):
    """
    Sees the RTP a media session relays (L{IMediaSession.tap}): a call recorder.
    Called in the reactor thread for every packet, so it must return at once:
    anything slow (the disk) happens elsewhere.
    """

    def rtp(
        side: str, ssrc: int, timestamp: int, payload_type: int, payload: bytes, now: float
    ) -> None:
        """
        An RTP packet from ``side``'s phone was relayed (after SRTP decryption;
        RFC 4733 events are not passed): its SSRC, RTP timestamp, payload type
        (as the sender numbers it), payload, and arrival time (the relay's clock).
        """

    def close(now: float) -> None:
        """The session was released, or the tap removed: no packet follows."""


class IMediaRelay(Interface):
    """Anchors calls' media: the built-in relay, or rtpengine over the ng protocol."""

    def allocate(call_id: str) -> Deferred[IMediaSession]:
        """
        Reserve two RTP/RTCP port pairs (sides a and b) for a call.

        Fails with L{warden.rtp.errors.MediaError} when no port pair is free, or
        the media engine (rtpengine) does not answer or refuses; the caller then
        gets 503 with Retry-After.
        """

    def sessions() -> list[IMediaSession]:
        """Every session allocated and not released."""

    def ports_in_use() -> int:
        """UDP ports currently bound (four per session: RTP and RTCP per side)."""

    def close() -> None:
        """Release every session and its ports (Warden calls it once, at shutdown)."""


# -- admin ----------------------------------------------------------------------------
# Appended as one section: its own imports live here rather than at the top.

if TYPE_CHECKING:
    from warden.model.admin import AdminAccount, ApiToken, AuditEntry


class IAdminStore(Interface):
    """
    Admin accounts and API tokens of the admin API. Secrets are stored only as
    hashes (L{warden.model.admin}). Every method returns a Deferred.
    """

    def add_account(account: AdminAccount) -> Deferred[None]:
        """Add an account; fails with L{warden.errors.AdminAccountExists} if the name is taken."""

    def get_account(name: str) -> Deferred[AdminAccount | None]:
        """Fire with the account called ``name``, or None."""

    def update_account(account: AdminAccount) -> Deferred[None]:
        """
        Replace the stored account with the same name.

        Fails with L{warden.errors.AdminAccountNotFound} when there is none.
        """

    def list_accounts() -> Deferred[builtins.list[AdminAccount]]:
        """Fire with every account, ordered by name."""

    def remove_account(name: str) -> Deferred[bool]:
        """
        Remove the account (its tokens stay listed, and stop working); fire with
        True if it existed.
        """

    def claim_totp_step(name: str, step: int) -> Deferred[bool]:
        """
        Record ``step`` as the last TOTP time step used by ``name`` if it is later
        than the stored one, atomically (concurrent logins, other nodes): fire
        with True for the one caller that claimed it, else False.
        """

    def use_recovery_code(name: str, digest: str) -> Deferred[bool]:
        """
        Remove ``digest`` from the recovery hashes of ``name`` atomically: fire
        with True for the one caller that removed it, else False.
        """

    def add_token(token: ApiToken) -> Deferred[None]:
        """Store a new API token (its ``token_id`` is unique)."""

    def get_token(token_id: str) -> Deferred[ApiToken | None]:
        """Fire with the token (revoked ones too), or None."""

    def list_tokens() -> Deferred[builtins.list[ApiToken]]:
        """Fire with every token, revoked ones too, ordered by ``(created_at, token_id)``."""

    def revoke_token(token_id: str, at: float) -> Deferred[bool]:
        """
        Mark the token revoked at ``at``; fire with True if it existed and was not
        revoked yet, else False (revoking twice keeps the first time).
        """


class IAuthenticationFactor(Interface):
    """
    A second factor of the admin login, provided by a feature plugin
    (L{warden.features.mfa} for TOTP). The login asks every enabled factor
    the account has enrolled; one accepting the code is enough.
    """

    name: str = Attribute("The factor's name (``totp``).")

    def enrolled(account: AdminAccount) -> bool:
        """Whether ``account`` uses this factor."""

    def verify(account: AdminAccount, code: str, store: IAdminStore, now: float) -> Deferred[bool]:
        """Whether ``code`` passes at ``now``, used up in ``store`` when single-use."""


class IAuditLog(Interface):
    """
    The append-only record of every state-changing admin request: who, what,
    when, from where and with which outcome. Entries are never changed or removed.
    """

    def append(entry: AuditEntry) -> Deferred[int]:
        """Store ``entry`` (its ``entry_id`` is ignored); fire with the id it was given."""

    def list(
        since: float | None = None,
        until: float | None = None,
        actor: str | None = None,
        limit: int = 100,
        after_id: int | None = None,
    ) -> Deferred[builtins.list[AuditEntry]]:
        """
        Fire with at most ``limit`` entries in the order they were appended.

        Args:
            since: only entries with ``at >= since``.
            until: only entries with ``at < until``.
            actor: only entries of this actor.
            limit: the most returned (>= 0; negative fails with ValueError).
            after_id: the cursor: only entries with a greater id.
        """


# -- shared call state ------------------------------------------------------------------


class ICallCounters(Interface):
    """
    Concurrent calls per extension, counted across every node of a cluster, for
    ``[calls] max_calls_per_extension``. Every method returns a Deferred.
    """

    def acquire(numbers: Sequence[str], limit: int) -> Deferred[bool]:
        """
        Count one more call for each of ``numbers`` (a number listed twice counts
        twice), atomically, unless one of them already takes part in ``limit``
        calls: then fire with False and change nothing. Fires True when counted.
        """

    def release(numbers: Sequence[str]) -> Deferred[None]:
        """Count one call less for each of ``numbers``; never below zero."""

    def active(number: str) -> Deferred[int]:
        """Fire with the number of calls ``number`` takes part in."""

    def clear_node(node_id: str) -> Deferred[int]:
        """
        Forget every call counted by ``node_id``; fire with how many counts went.
        A node calls this at start-up: the calls it had before are gone.
        """


class IAuthFailureCounter(Interface):
    """
    Failed authentications per source address (and per extension at a source,
    under the key ``"<source> <extension>"``), counted across every node of a
    cluster in fixed windows (L{warden.sip.auth.AuthThrottle} blocks a key whose
    count reaches its limit). Every method returns a Deferred.
    """

    def record_failure(source: str, window: float) -> Deferred[int]:
        """
        Count one failure of ``source``; fire with its failures in the current
        window, which starts at the first failure and lasts ``window`` seconds.
        """


# -- Plugins -----------------------------------------------------------------------
if TYPE_CHECKING:
    from warden.plugin import BuildContext


class IWardenPlugin(Interface):
    """
    A part of Warden loaded by name (L{warden.plugin}): Warden's own live in
    ``warden/plugins/``, a site's in any installed
    distribution's ``twisted/plugins/``. ``[plugins] enabled`` names the ones
    that run; each receives only the configuration sections it owns.

    A plugin is started and stopped through the services it adds in L{make}
    (``twisted.application.service.IService``: ``startService`` once the store is
    ready, ``stopService`` in reverse order at shutdown).
    """

    name: str = Attribute("The name ``[plugins] enabled`` lists it by (unique).")
    description: str = Attribute("One line for ``twistd warden --list-plugins``.")
    sections: tuple[str, ...] = Attribute(
        "The top-level configuration sections this plugin owns (may be empty)."
    )
    needs: tuple[str, ...] = Attribute(
        "Names of the parts (L{warden.plugin.CORE_PARTS} or other plugins'"
        " ``provides``) that L{make} asks for; start-up refuses a plugin whose"
        " needs no enabled plugin provides."
    )
    provides: tuple[str, ...] = Attribute(
        "Names of the parts L{make} provides to the plugins that need them."
    )

    def parse_section(name: str, table: Mapping[str, object], filename: str | None) -> object:
        """
        Parse the owned section ``name`` from its TOML ``table``. A section
        the plugin also lists in an optional ``array_sections`` attribute is an
        array of tables (``[[trunks]]``) and arrives as a list of tables.

        Raises:
            warden.errors.ConfigError: an unknown key or a bad value, naming the
                dotted key (``filename`` is added by the caller).
        """

    def make(context: BuildContext) -> None:
        """
        Build this plugin's objects once, with their final collaborators taken
        from ``context.need`` (or ``context.optional``), give each name of
        ``provides`` to ``context.provide``, and add the services that run them
        with ``context.add_service``.
        """


# -- call hooks ---------------------------------------------------------------------
# Appended as one section: its own imports live here rather than at the top.

if TYPE_CHECKING:
    from warden.model import CallRecord
    from warden.sip.hooks import CallAttempt, OutgoingLeg, Vouched


class ICallHook(Interface):
    """
    A feature's part in calls (L{warden.sip.hooks}, ADR 0020). An enabled
    plugin that provides it is asked at each point, in ``[plugins] enabled``
    order; L{warden.sip.hooks.CallHookBase} does nothing at every point. A hook
    rejects a call by raising L{warden.errors.SipError}.
    """

    methods: tuple[str, ...] = Attribute(
        "SIP methods Warden does not handle itself that this hook answers out of"
        " dialog (SUBSCRIBE, NOTIFY, MESSAGE) through L{handle_request}."
    )

    def incoming(request: Request, flow: Flow) -> Deferred[None] | None:
        """A new INVITE, before authentication: verify what it asserts; may reject."""

    def identify(request: Request, flow: Flow) -> Deferred[Vouched | None] | Vouched | None:
        """
        A new INVITE, after L{incoming}: a L{warden.sip.hooks.Vouched} caller
        this plugin vouches for by where the request comes from (a trunk's
        address), whose digest authentication is then skipped, with the number
        the call is for (a DID's extension) that every later hook sees; None
        to authenticate the caller as usual. The first hook answering wins; a
        hook may reject (an unknown DID).
        """

    def before_routing(attempt: CallAttempt) -> Deferred[None] | None:
        """
        Authenticated, before the dialplan: may reject, redirect (set
        ``attempt.dialled``), send the call elsewhere than to an extension
        (set ``attempt.target``, L{warden.sip.external}) or mark
        (``attempt.marks``) the call.
        """

    def routing_failed(
        attempt: CallAttempt, status: int, reason: str
    ) -> Deferred[str | None] | str | None:
        """
        The number was not routable, or every fork failed (busy, no answer, ring
        timeout): a number to route the call to instead, or None. Asked once
        per call.
        """

    def leg_built(attempt: CallAttempt, leg: OutgoingLeg) -> None:
        """An INVITE to a callee's phone was built: may add headers and body parts."""

    def answered(attempt: CallAttempt) -> None:
        """The callee answered."""

    def dtmf(attempt: CallAttempt, side: str, digit: str) -> None:
        """
        The phone on ``side`` (``"a"`` the caller's, ``"b"`` the callee's) sent
        DTMF ``digit`` (``0-9``, ``*``, ``#``, ``A-D``) during the call: an RFC
        4733 event the relay saw, or a SIP INFO.
        """

    def ended(attempt: CallAttempt, record: CallRecord) -> None:
        """The call ended; ``record`` is its call record."""

    def handle_request(request: Request, flow: Flow) -> Deferred[Response]:
        """Answer an out-of-dialog request of one of L{methods}."""


class ICallFeatureStore(Interface):
    """
    The call features of each extension (L{warden.model.features.CallFeatures}):
    forwarding and do-not-disturb, durable and shared by every node using the
    store.
    """

    def get_features(number: str) -> Deferred[CallFeatures]:
        """The features of ``number`` (all off when none are stored)."""

    def set_features(features: CallFeatures) -> Deferred[None]:
        """Store ``features`` for their number, replacing what was stored."""

    def remove_features(number: str) -> Deferred[bool]:
        """Forget ``number``'s features; whether any were stored."""

    def list_features() -> Deferred[builtins.list[CallFeatures]]:
        """Every extension with a feature set, by number."""


# -- local applications ----------------------------------------------------------------
# Appended as one section: its own imports live here rather than at the top.

if TYPE_CHECKING:
    from warden.sip.local import LocalCall


class ILocalApplication(Interface):
    """
    Answers calls inside Warden (voicemail, mailbox access, IVR; ADR 0022). An
    enabled plugin that provides it runs the applications it names; a call
    reaches one when a call hook redirects it to ``"<name>:<argument>"``
    (``voicemail:1001``), from L{ICallHook.before_routing} or
    L{ICallHook.routing_failed}. Warden answers the call with an RTP endpoint
    (L{warden.rtp.endpoint}) and hangs up when the application is done.
    """

    applications: tuple[str, ...] = Attribute(
        "Names of the applications this provider runs (``voicemail``); the first"
        " provider naming one wins."
    )

    def run_application(name: str, argument: str, call: LocalCall) -> Deferred[None]:
        """
        Run application ``name`` for ``argument`` on the answered ``call``; the
        call is hung up when the Deferred fires. Its endpoint fails waits with
        L{warden.rtp.endpoint.HungUp} once the caller hangs up.
        """


# -- admin API endpoints of plugins ----------------------------------------------------

if TYPE_CHECKING:
    from warden.model.admin import PluginEndpoint


class IAdminEndpoints(Interface):
    """
    A plugin's own endpoints in the admin API (under ``/api/v1``); the admin
    plugin serves those of every enabled plugin that provides this, and lists
    them in the OpenAPI document.
    """

    def admin_endpoints() -> Sequence[PluginEndpoint]:
        """The endpoints (L{warden.model.admin.PluginEndpoint})."""


# -- voicemail -------------------------------------------------------------------------
# Appended as one section: its own imports live here rather than at the top.

from warden.model.voicemail import Mailbox, VoicemailMessage  # noqa: E402


class IVoicemailStore(Interface):
    """
    Mailboxes and messages of the voicemail plugin (L{warden.model.voicemail});
    the audio lives in files under the data directory, the store keeps their
    names. Every method returns a Deferred.
    """

    def get_mailbox(number: str) -> Deferred[Mailbox]:
        """The mailbox ``number``'s settings (the defaults when none are stored)."""

    def set_mailbox(mailbox: Mailbox) -> Deferred[None]:
        """Store ``mailbox``'s settings, replacing what was stored."""

    def add_message(message: VoicemailMessage) -> Deferred[None]:
        """Add a message; fails with ValueError when its id is taken."""

    def get_message(mailbox: str, message_id: str) -> Deferred[VoicemailMessage | None]:
        """The message ``message_id`` of ``mailbox``, or None."""

    def list_messages(
        mailbox: str, folder: str | None = None
    ) -> Deferred[builtins.list[VoicemailMessage]]:
        """The messages of ``mailbox`` (of one folder when given), oldest first."""

    def move_message(mailbox: str, message_id: str, folder: str) -> Deferred[bool]:
        """Move a message to ``folder``; whether it exists."""

    def remove_message(mailbox: str, message_id: str) -> Deferred[bool]:
        """Forget a message; whether it existed (its file is the caller's to remove)."""

    def count_messages(mailbox: str) -> Deferred[tuple[int, int]]:
        """``(new, saved)`` message counts of ``mailbox``."""

    def totals() -> Deferred[dict[str, tuple[int, int, int]]]:
        """Per mailbox with messages: ``(new, saved, audio bytes)``."""


# -- emergency calls (the e911 plugin, ADR 0027) ---------------------------------------
# Appended as one section: its own imports live here rather than at the top.

from warden.model.emergency import CivicLocation, EmergencyCall  # noqa: E402


class IEmergencyNumbers(Interface):
    """
    Which numbers an extension dials to make an emergency call: a draining
    node refuses other new calls before authenticating them, but lets these
    through (Kari's Law). A call hook providing it is asked
    (L{warden.sip.hooks.CallHooks.may_be_emergency}).
    """

    def is_emergency_number(dialled: str) -> bool:
        """Whether ``dialled`` (as in the request URI) is an emergency number here."""


class IEmergencyObserver(Interface):
    """
    Hears of every emergency call as it starts (``911``, ``9911``, the ``933``
    test number): the on-site notifications, the metrics. Any enabled plugin
    providing this interface is one (L{warden.plugin.BuildContext.providers});
    the ``e911`` plugin tells each in ``[plugins] enabled`` order.
    """

    def emergency_call_started(call: EmergencyCall) -> None:
        """
        An emergency call is starting (its INVITE goes to the emergency
        trunk now). Return quickly: slow work (sending, retrying) is the
        observer's own, in the background. An exception is logged, never
        the call's.
        """


class ICivicLocationStore(Interface):
    """
    Dispatchable locations of the e911 plugin (L{warden.model.emergency}):
    named civic addresses, the location of each extension, and networks
    (subnet -> location) for devices that move. Distinct from the registrar's
    location service (L{ILocationService}: where phones are reachable). Every
    method returns a Deferred.
    """

    def put_location(location: CivicLocation) -> Deferred[bool]:
        """Add or replace a location by name; whether it was new."""

    def get_location(name: str) -> Deferred[CivicLocation | None]:
        """The location ``name``, or None."""

    def list_locations() -> Deferred[builtins.list[CivicLocation]]:
        """Every location, by name."""

    def remove_location(name: str) -> Deferred[bool]:
        """
        Forget a location, and the extensions and networks assigned to it;
        whether it existed.
        """

    def set_extension_location(number: str, name: str) -> Deferred[None]:
        """
        Assign the existing location ``name`` to extension ``number`` ("":
        remove the assignment). Fails with KeyError for an unknown location.
        """

    def extension_location(number: str) -> Deferred[str | None]:
        """The name of the location assigned to ``number``, or None."""

    def list_extension_locations() -> Deferred[builtins.list[tuple[str, str]]]:
        """Every ``(number, location)`` assignment, by number."""

    def map_network(network: str, name: str) -> Deferred[None]:
        """
        Assign the existing location ``name`` to the network ``network``
        (canonical CIDR text), replacing its previous one. Fails with KeyError
        for an unknown location.
        """

    def unmap_network(network: str) -> Deferred[bool]:
        """Forget the network's assignment; whether it had one."""

    def list_networks() -> Deferred[builtins.list[tuple[str, str]]]:
        """Every ``(network, location)`` assignment, by network."""
