"""
Everyday call features as a plugin (ADR 0023): call forwarding (unconditional,
busy, no answer) and do-not-disturb, set with feature codes dialled from the
phone or through the admin API, kept per extension in the store
(L{ICallFeatureStore}) so that they survive restarts and every node of a
cluster sees them; ring groups (``[[ringgroups]]``), group pickup (``*8``,
``[[pickupgroups]]``) and busy lamp fields (SUBSCRIBE to the ``dialog`` event
package, L{warden.features.blf}).

The plugin is an L{ICallHook}:

- before routing it answers the feature codes (``*72<number>`` forward every
  call, ``*73`` stop, ``*78`` do-not-disturb on, ``*79`` off) with a final
  response naming what changed, picks up a call ringing in the caller's
  pickup group (``*8``), makes a call to a ring group ring its members,
  follows the dialled extension's unconditional forward (a chain of them,
  stopping at a loop), and refuses a call to an extension in do-not-disturb
  as busy (486), which a later hook may still send to voicemail;
- when routing fails it sends a ring group's unanswered call to the group's
  timeout destination, a busy (486) call to the busy forward and an
  unanswered or unreachable one (408, 480) to the no-answer forward;
- as calls ring, are answered and end it notifies the phones watching their
  extensions (BLF).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from warden.errors import SipError
from warden.features.blf import DialogEvents, DialogEventsService
from warden.features.callfeatures_api import FeatureEndpoints
from warden.features.featurecache import CachedCallFeatures
from warden.features.ringgroups import (
    PickupGroupsConfig,
    RingGroupsConfig,
    parse_pickupgroups,
    parse_ringgroups,
)
from warden.interfaces import (
    IAdminEndpoints,
    ICallFeatureStore,
    ICallHook,
    IDirectory,
    ILocalApplication,
    IWardenPlugin,
)
from warden.model.features import CallFeatures
from warden.rtp import g711
from warden.sip.hooks import CallAttempt, CallHookBase, OutgoingLeg

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from warden.model import CallRecord
    from warden.model.admin import PluginEndpoint
    from warden.plugin import BuildContext
    from warden.sip.call import Call
    from warden.sip.flow import Flow
    from warden.sip.local import LocalCall
    from warden.sip.message import Request, Response
    from warden.sip.service import SipService

__all__ = ["FORWARD_TARGET", "CallFeaturesPlugin", "FeatureCodes", "plugin"]

#: A forward target: an extension or an outside number (E.164 with ``+``).
FORWARD_TARGET = re.compile(r"\+?[0-9]{1,32}")


def is_forward_target(text: str) -> bool:
    """Whether ``text`` may be forwarded to: ``+`` and 1 to 32 ASCII digits."""
    return FORWARD_TARGET.fullmatch(text) is not None


#: Unconditional forwards followed one after another before the call rings.
MAX_FORWARD_HOPS = 8

#: The final response to a feature code that was carried out when no tone can
#: confirm it: 480 (the phone shows the reason phrase; nothing rings), see ADR 0023.
DONE_STATUS = 480

#: The local application that answers a feature code and plays its tone.
CONFIRM_APPLICATION = "feature"
_GAP = g711.tone(0, 0.05)
#: Rising for a feature turned on, falling for one turned off (16-bit PCM, 8 kHz).
CONFIRM_TONES = {
    "on": g711.tone(0, 0.2) + g711.tone(600, 0.15) + _GAP + g711.tone(900, 0.25),
    "off": g711.tone(0, 0.2) + g711.tone(900, 0.15) + _GAP + g711.tone(600, 0.25),
}


class FeatureCodes:
    """The feature codes a phone dials (``*72<number>`` and the fixed ones)."""

    forward_on = "*72"
    forward_off = "*73"
    dnd_on = "*78"
    dnd_off = "*79"
    pickup = "*8"


@implementer(IPlugin, IWardenPlugin, ICallHook, IAdminEndpoints, ILocalApplication)
class CallFeaturesPlugin(CallHookBase):
    """
    Call forwarding and do-not-disturb per extension (``*72``/``*73``,
    ``*78``/``*79``, the admin API's ``/extensions/{number}/features``).
    """

    name = "callfeatures"
    description = (
        "Call forward, do-not-disturb, ring groups, pickup, BLF (*72/*73, *78/*79, *8,"
        " [[ringgroups]], [[pickupgroups]])"
    )
    sections: tuple[str, ...] = ("ringgroups", "pickupgroups")
    array_sections: tuple[str, ...] = ("ringgroups", "pickupgroups")
    #: Route targets ``<kind>:<name>`` this plugin routes before routing
    #: (``[[routes.inbound]] to = "ringgroup:sales"``, ADR 0021).
    route_targets: tuple[str, ...] = ("ringgroup",)
    needs: tuple[str, ...] = ("stores", "directory", "sip")
    methods: tuple[str, ...] = ("SUBSCRIBE",)
    #: The event packages of its SUBSCRIBE (L{warden.sip.hooks.EventPackages}).
    events: tuple[str, ...] = ("dialog",)
    #: Its local application (L{ILocalApplication}): feature-code confirmations.
    applications: tuple[str, ...] = (CONFIRM_APPLICATION,)
    provides: tuple[str, ...] = ("callfeatures",)

    log = Logger()

    def __init__(self) -> None:
        self.store: ICallFeatureStore | None = None
        self.directory: IDirectory | None = None
        self.groups = RingGroupsConfig()
        self.pickup_groups = PickupGroupsConfig()
        self.calls: Callable[[], Mapping[str, Call]] = dict
        self.dialog_events: DialogEvents | None = None
        #: Whether feature codes are confirmed with a tone (local applications run).
        self.confirm_tones = False

    def parse_section(self, name: str, table: object, filename: str | None) -> object:
        """``[[ringgroups]]`` or ``[[pickupgroups]]``."""
        if name == "pickupgroups":
            return parse_pickupgroups(table)
        return parse_ringgroups(table)

    def make(self, context: BuildContext) -> None:
        """
        The feature store on the shared database, the ring and pickup groups,
        the BLF notifier and the calls of the SIP service; the plugin is
        provided as ``callfeatures``.
        """
        from warden.sip.service import SipService
        from warden.store.backend import Stores
        from warden.store.features import SQLCallFeatureStore

        stores = context.need("stores", Stores)
        self.store = CachedCallFeatures(SQLCallFeatureStore(stores.pool), context.reactor)
        self.directory = context.need("directory", IDirectory)
        groups = context.config.plugin_sections.get("ringgroups", RingGroupsConfig())
        assert isinstance(groups, RingGroupsConfig)
        self.groups = groups
        pickup = context.config.plugin_sections.get("pickupgroups", PickupGroupsConfig())
        assert isinstance(pickup, PickupGroupsConfig)
        self.pickup_groups = pickup
        sip = context.need("sip", SipService)
        calls = sip.calls
        assert calls is not None
        self.calls = lambda: calls.calls
        self.dialog_events = dialog_events(context.reactor, self.directory, sip)
        context.add_service(DialogEventsService(self.dialog_events))
        self.confirm_tones = calls.local_target(f"{CONFIRM_APPLICATION}:on") is not None
        context.provide("callfeatures", self)

    def use_store(self, store: ICallFeatureStore, directory: IDirectory | None = None) -> None:
        """Keep the features in ``store`` (tests; L{make} uses the database)."""
        self.store = store
        self.directory = directory

    def _endpoints(self) -> FeatureEndpoints:
        return FeatureEndpoints(lambda: self.store, lambda: self.directory, is_forward_target)

    def admin_endpoints(self) -> Sequence[PluginEndpoint]:
        """See L{IAdminEndpoints.admin_endpoints}."""
        return self._endpoints().endpoints()

    def _features(self) -> ICallFeatureStore:
        if self.store is None:
            raise SipError(503, "Service Unavailable")
        return self.store

    # -- hooks ----------------------------------------------------------------------

    def before_routing(self, attempt: CallAttempt) -> Deferred[None]:
        """Feature codes, unconditional forwards and do-not-disturb."""
        return Deferred.fromCoroutine(self._before_routing(attempt))

    async def _before_routing(self, attempt: CallAttempt) -> None:
        dialled = attempt.dialled
        # Feature codes are an extension's own (a caller a trunk vouches for has no realm).
        own = bool(attempt.caller.realm)
        if own and dialled == FeatureCodes.pickup:
            attempt.pickup = self.ringing_call(attempt.caller.number)
            if not attempt.pickup:
                raise SipError(480, "No Call To Pick Up")
            return
        if own and dialled.startswith("*"):
            await self._feature_code(attempt)
            return
        store = self._features()
        if self.ring_group(attempt, dialled):
            await self._skip_dnd(store, attempt)
            return
        features = await store.get_features(dialled)
        seen = {dialled}
        while features.forward_all and len(seen) <= MAX_FORWARD_HOPS:
            target = features.forward_all
            if target in seen or target == attempt.caller.number:
                break  # a loop, or back to the caller: ring where the chain stands
            seen.add(target)
            attempt.dialled = target
            attempt.marks.add("forwarded")
            features = await store.get_features(target)
        if features.dnd:
            attempt.marks.add("dnd")
            attempt.refuse(486, "Busy Here")

    @staticmethod
    async def _skip_dnd(store: ICallFeatureStore, attempt: CallAttempt) -> None:
        """A ring group's members in do-not-disturb are not rung."""
        plan = attempt.plan
        assert plan is not None
        steps = []
        for step in plan.steps:
            steps.append(tuple([m for m in step if not (await store.get_features(m)).dnd]))
        plan.steps = tuple(steps)

    async def _feature_code(self, attempt: CallAttempt) -> None:
        """Carry out a feature code and confirm it (L{_done})."""
        number, dialled = attempt.caller.number, attempt.dialled
        store = self._features()
        codes = FeatureCodes
        if dialled.startswith(codes.forward_on):
            target = dialled[len(codes.forward_on) :]
            if not target:
                raise SipError(484, "Address Incomplete")
            if not is_forward_target(target) or target == number:
                raise SipError(484, "Address Incomplete (not a forward number)")
            await self._change(store, number, forward_all=target)
            self._done(attempt, "on", f"Call Forwarding On {target}")
        elif dialled == codes.forward_off:
            await self._change(store, number, forward_all="")
            self._done(attempt, "off", "Call Forwarding Off")
        elif dialled == codes.dnd_on:
            await self._change(store, number, dnd=True)
            self._done(attempt, "on", "Do Not Disturb On")
        elif dialled == codes.dnd_off:
            await self._change(store, number, dnd=False)
            self._done(attempt, "off", "Do Not Disturb Off")
        # Not a code of this plugin: routed as dialled (another feature's, or 404).

    def _done(self, attempt: CallAttempt, tone: str, reason: str) -> None:
        """
        Confirm a feature code: a phone offering media is answered and hears
        the ``on`` or ``off`` tone (the ``feature`` local application); one
        without an offer, or without local applications, gets 480 naming the
        change.
        """
        if self.confirm_tones and attempt.request.body:
            attempt.dialled = f"{CONFIRM_APPLICATION}:{tone}"
            attempt.marks.add("feature code")
            return
        raise SipError(DONE_STATUS, reason)

    def run_application(self, name: str, argument: str, call: LocalCall) -> Deferred[None]:
        """The ``feature`` application: play the confirmation tone, then hang up."""
        return call.endpoint.play(CONFIRM_TONES[argument]).addCallback(lambda _: None)

    async def _change(self, store: ICallFeatureStore, number: str, **changes: Any) -> None:
        features = await store.get_features(number)
        await store.set_features(attrs.evolve(features, **changes))
        self.log.info(
            "Call features of {number} changed: {changes}",
            number=number,
            changes=", ".join(f"{k}={v}" for k, v in sorted(changes.items())),
        )

    def handle_request(self, request: Request, flow: Flow) -> Deferred[Response]:
        """SUBSCRIBE for the ``dialog`` event package (BLF, L{warden.features.blf})."""
        if self.dialog_events is None:
            raise SipError(503, "Service Unavailable")
        return self.dialog_events.subscribe(request, flow)

    def _touch(self, attempt: CallAttempt) -> None:
        if self.dialog_events is not None and attempt.call_id:
            self.dialog_events.touch(attempt.call_id)

    def leg_built(self, attempt: CallAttempt, leg: OutgoingLeg) -> None:
        """A phone is rung: its watchers (BLF) learn it."""
        self._touch(attempt)

    def answered(self, attempt: CallAttempt) -> None:
        """The call was answered: its parties' watchers learn it."""
        self._touch(attempt)

    def ended(self, attempt: CallAttempt, record: CallRecord) -> None:
        """The call ended: its parties' watchers learn it."""
        self._touch(attempt)

    def ringing_call(self, picker: str) -> str:
        """
        The id of the call ringing longest at another member of ``picker``'s
        pickup groups (not one ``picker`` placed); "" when none.
        """
        from warden.sip.call import CallState

        peers = self.pickup_groups.peers_of(picker)
        found: list[Call] = []
        for call in self.calls().values():
            if call.state is not CallState.RINGING or call.caller.number == picker:
                continue
            forks = call.branches[call.first_branch :]
            if any(not b.done and b.binding.aor in peers for b in forks):
                found.append(call)
        return min(found, key=lambda c: c.started_at).call_id if found else ""

    def ring_group(self, attempt: CallAttempt, target: str) -> bool:
        """
        Make ``attempt`` ring the group ``target`` names (its number, or
        ``ringgroup:<name>``, as inbound routes name it); False when none.
        """
        kind, colon, name = target.partition(":")
        if colon:
            group = self.groups.by_name(name) if kind == "ringgroup" else None
        else:
            group = self.groups.by_number(target)
        if group is None:
            return False
        attempt.plan = group.plan()
        attempt.ring_timeout = group.ring_timeout
        attempt.dialled = group.number
        attempt.marks.add("ringgroup")
        return True

    def routing_failed(
        self, attempt: CallAttempt, status: int, reason: str
    ) -> Deferred[str | None] | str | None:
        """
        A ring group's unanswered call to its timeout destination; a busy call
        (486) to the busy forward; an unanswered or unreachable one (408, 480)
        to the no-answer forward.
        """
        if attempt.plan is not None:
            group = self.groups.by_number(attempt.plan.number)
            return group.timeout_to or None if group is not None else None
        if "dnd" in attempt.marks or status not in (408, 480, 486):
            return None
        return Deferred.fromCoroutine(self._conditional(attempt, status))

    async def _conditional(self, attempt: CallAttempt, status: int) -> str | None:
        features: CallFeatures = await self._features().get_features(attempt.dialled)
        target = features.forward_busy if status == 486 else features.forward_no_answer
        if not target or target in (attempt.dialled, attempt.caller.number):
            return None
        attempt.marks.add("forwarded")
        return target


def dialog_events(clock: IReactorTime, directory: IDirectory, sip: SipService) -> DialogEvents:
    """The BLF notifier on the SIP service's transactions, authentication and calls."""
    calls = sip.calls
    assert calls is not None

    def contact_for(flow: Flow) -> tuple[str, str]:
        return calls.contact_for(flow), calls.via_for(flow)

    return DialogEvents(
        clock, directory, sip.authenticator.authenticate, sip.transactions.send_request,
        sip.transactions.new_branch, contact_for, lambda: calls.calls,
    )  # fmt: skip


plugin = CallFeaturesPlugin()
