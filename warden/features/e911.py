"""
Emergency calls as a feature plugin (``e911``, ADR 0027): Kari's Law routing
and RAY BAUM's Act dispatchable location.

- **Routing.** An extension dialling an emergency number of ``[emergency]
  numbers`` (``911``; ``933`` is the test number), with or without the
  outside-line prefix (``9911``), goes straight to the emergency trunks in
  order, with failover (the trunks plugin's outbound machinery,
  L{warden.sip.external}). The plugin is the first call hook: once it marked
  the call (L{CallAttempt.emergency}) no later hook diverts it (forwards,
  do-not-disturb, ring groups, voicemail), no call limit refuses it, and a
  full trunk makes room (its reserve, then its newest other call dropped).
- **Location.** The INVITE to the trunk carries the caller's dispatchable
  location as a PIDF-LO civic address (RFC 4119, RFC 5491) in a
  ``multipart/mixed`` body beside the SDP, a ``Geolocation: <cid:...>``
  header pointing at it (RFC 6442) and the callback number in
  P-Asserted-Identity. The location is the extension's own, else that of the
  most specific network holding the device's address, else
  ``default_location`` (counted and logged as an alert).
- **Observers.** Every enabled plugin providing L{IEmergencyObserver} (the
  on-site notifier, L{warden.features.e911_notify}) hears of each call as its
  first INVITE goes out, with an L{EmergencyCall}; so do the metrics.

Metrics: ``warden_emergency_calls_total{test}``,
``warden_emergency_default_location_total``,
``warden_emergency_no_location_total``, ``warden_emergency_failures_total{reason}``.
"""

from __future__ import annotations

import ipaddress
import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs
from prometheus_client import Counter
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from warden.errors import ConfigError, SipError
from warden.features.e911_config import EmergencyConfig, parse_emergency
from warden.features.pidf import CONTENT_TYPE, geolocation_header, pidf_lo
from warden.interfaces import (
    IAdminEndpoints,
    ICallHook,
    ICivicLocationStore,
    IDirectory,
    IEmergencyNumbers,
    IEmergencyObserver,
    IWardenPlugin,
)
from warden.model.emergency import CivicLocation, EmergencyCall
from warden.sip.hooks import CallAttempt, CallHookBase, OutgoingLeg

if TYPE_CHECKING:
    from warden.features.trunks import TrunkService
    from warden.model.admin import PluginEndpoint
    from warden.plugin import BuildContext

__all__ = [
    "EmergencyCall",
    "EmergencyMetrics",
    "EmergencyPlugin",
    "EmergencyService",
    "LocationResolver",
    "plugin",
]

CALLS = Counter(
    "warden_emergency_calls_total", "Emergency calls placed (test: the 933 test number)",
    ["test"],
)  # fmt: skip
DEFAULT_LOCATION = Counter(
    "warden_emergency_default_location_total",
    "Emergency calls sent with the site's default location (the device had none)",
)
NO_LOCATION = Counter(
    "warden_emergency_no_location_total",
    "Emergency calls sent with no location at all (none known, default missing or store down)",
)
FAILURES = Counter(
    "warden_emergency_failures_total",
    "Emergency calls that could not be sent (no_trunk: no emergency trunk reachable)",
    ["reason"],
)
for _test in ("true", "false"):
    CALLS.labels(_test)
FAILURES.labels("no_trunk")

#: Seconds the location lookup may take before the call goes out without it.
LOOKUP_TIMEOUT = 2.0
#: Seconds an emergency call rings at least (a PSAP's queue) before Warden
#: gives up on it, when ``[calls] ring_timeout`` is shorter: just under the
#: INVITE server transaction's Timer C (180 s), which would answer the caller
#: 500 first. The caller may hang up sooner.
RING_SECONDS = 170.0


class LocationResolver:
    """
    The dispatchable location of a calling device: its extension's own, else
    the most specific network holding its address, else the site default.

    Args:
        store: the locations.
        default: the ``default_location`` name ("" for none).
    """

    log = Logger()

    def __init__(self, store: ICivicLocationStore, default: str) -> None:
        self.store = store
        self.default = default
        #: The default location as last read (used when the store is down).
        self._default_seen: CivicLocation | None = None

    async def resolve(self, number: str, address: str) -> tuple[CivicLocation | None, bool]:
        """
        ``(location, is_default)`` of extension ``number`` calling from
        ``address``; ``(None, False)`` when not even the default is known.
        """
        name = await self.store.extension_location(number)
        if name is None:
            name = best_network(await self.store.list_networks(), address)
        if name is not None:
            location = await self.store.get_location(name)
            if location is not None:
                return location, False
        return await self.default_location(), True

    async def default_location(self) -> CivicLocation | None:
        """The default location (the last one read when the store fails now)."""
        if not self.default:
            return None
        try:
            found = await self.store.get_location(self.default)
        except Exception as e:  # the store is down: an emergency call goes out anyway
            self.log.warn("Emergency: cannot read the default location: {error}", error=str(e))
            return self._default_seen
        self._default_seen = found
        return found


def best_network(networks: Sequence[tuple[str, str]], address: str) -> str | None:
    """
    The location of the most specific of ``networks`` (``(cidr, location)``)
    holding ``address``; None when none does or ``address`` is no IP address.
    """
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return None
    best: tuple[int, str] | None = None
    for text, name in networks:
        try:
            network = ipaddress.ip_network(text)
        except ValueError:
            continue
        if ip.version == network.version and ip in network:
            if best is None or network.prefixlen > best[0]:
                best = (network.prefixlen, name)
    return best[1] if best is not None else None


@implementer(IEmergencyObserver)
class EmergencyMetrics:
    """Counts emergency calls and alerts (log) on a default or missing location."""

    log = Logger()

    def emergency_call_started(self, call: EmergencyCall) -> None:
        """Count the call; a default or missing location is an alert."""
        CALLS.labels("true" if call.test else "false").inc()
        self.log.warn(
            "Emergency call {call_id} from {extension} ({dialled}), callback {callback},"
            " location {location}",
            call_id=call.call_id, extension=call.extension, dialled=call.dialled,
            callback=call.callback_number, location=call.location_name or "none",
        )  # fmt: skip
        if not call.civic:
            NO_LOCATION.inc()
            self.log.error(
                "ALERT: emergency call {call_id} from {extension} carries no location"
                " (set [emergency] default_location and the extension's location)",
                call_id=call.call_id, extension=call.extension,
            )  # fmt: skip
        elif call.location_is_default:
            DEFAULT_LOCATION.inc()
            self.log.error(
                "ALERT: emergency call {call_id} from {extension} sent with the default"
                " location {location}: the device has no location of its own",
                call_id=call.call_id, extension=call.extension, location=call.location_name,
            )  # fmt: skip


@attrs.define
class _Pending:
    call: EmergencyCall
    announced: bool = False


class EmergencyService:
    """
    Emergency calls at run time: routes them, adds their location to each
    INVITE and tells the observers.

    Args:
        clock: time.
        config: ``[emergency]``.
        trunks: the trunks (destinations, capacity).
        resolver: the locations.
        observers: told of each call as it starts, in order.
        domain: Warden's domain (the PIDF-LO presentity, Content-ID host).
        node: this node's name.
        ring_seconds: how long an emergency call may ring.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        config: EmergencyConfig,
        trunks: TrunkService,
        resolver: LocationResolver,
        observers: Sequence[IEmergencyObserver],
        domain: str,
        node: str,
        ring_seconds: float = RING_SECONDS,
    ) -> None:
        self.clock = clock
        self.ring_seconds = ring_seconds
        self.config = config
        self.trunks = trunks
        self.resolver = resolver
        self.observers = tuple(observers)
        self.domain = domain
        self.node = node
        self._pending: weakref.WeakKeyDictionary[CallAttempt, _Pending] = (
            weakref.WeakKeyDictionary()
        )

    def intercept(self, attempt: CallAttempt) -> Deferred[None] | None:
        """
        Make ``attempt`` an emergency call when an extension dialled an
        emergency number; None when it is none.
        """
        if not self.config.trunks or not attempt.caller.realm:
            return None  # no emergency trunk; or a caller from a trunk
        number = self.config.emergency_number(attempt.dialled)
        if number is None:
            return None
        attempt.emergency = True
        attempt.redirected = True  # never sent to voicemail or a forward
        attempt.ring_timeout = self.ring_seconds
        attempt.marks.add("emergency")
        return Deferred.fromCoroutine(self._route(attempt, number))

    async def _route(self, attempt: CallAttempt, number: str) -> None:
        caller = attempt.caller
        test = number in self.config.test_numbers
        if test:
            attempt.marks.add("emergency-test")
        target = self.trunks.emergency_target(self.config.trunks, number, caller.number)
        location, is_default = await self._locate(caller.number, attempt.flow.host)
        callback = target.current.caller_id if target is not None else ""
        civic: Mapping[str, str] = location.civic if location is not None else {}
        call = EmergencyCall(
            call_id="", extension=caller.number, caller_name=caller.name,
            callback_number=callback, dialled=attempt.dialled, test=test,
            location_name=location.name if location is not None else "", civic=civic,
            location_text=location.text if location is not None else "",
            location_is_default=is_default and location is not None,
            started_at=self.clock.seconds(), node=self.node,
        )  # fmt: skip
        pending = _Pending(call)
        self._pending[attempt] = pending
        if target is None:
            FAILURES.labels("no_trunk").inc()
            self.log.error(
                "ALERT: emergency call from {extension} cannot be sent: no emergency trunk"
                " has a known address",
                extension=caller.number,
            )
            self._announce(pending)
            raise SipError(503, "Service Unavailable")
        attempt.target = target

    async def _locate(self, number: str, address: str) -> tuple[CivicLocation | None, bool]:
        d = Deferred.fromCoroutine(self.resolver.resolve(number, address))
        d.addTimeout(LOOKUP_TIMEOUT, self.clock)
        try:
            return await d
        except Exception as e:  # store down or slow: the call goes out regardless
            self.log.warn(
                "Emergency call from {extension}: location lookup failed ({error});"
                " using the default",
                extension=number, error=str(e) or type(e).__name__,
            )  # fmt: skip
            return await self.resolver.default_location(), True

    def leg_built(self, attempt: CallAttempt, leg: OutgoingLeg) -> None:
        """
        An INVITE of an emergency call to a trunk: the location (PIDF-LO
        part, ``Geolocation`` header); the first one tells the observers.
        """
        pending = self._pending.get(attempt)
        if pending is None:
            return
        if not pending.announced:
            pending.call = attrs.evolve(pending.call, call_id=attempt.call_id)
            self._announce(pending)
        call = pending.call
        leg.add_header("Priority", "emergency")
        if not call.civic:
            return
        content_id = f"{uuid.uuid4().hex}@{self.domain}"
        document = pidf_lo(
            f"pres:{call.extension}@{self.domain}", call.civic, call.extension,
            self.clock.seconds(),
        )  # fmt: skip
        leg.add_body_part(CONTENT_TYPE, document, [("Content-ID", f"<{content_id}>")])
        leg.add_header("Geolocation", geolocation_header(content_id))
        # The provider may route on the location (to the PSAP serving it).
        leg.add_header("Geolocation-Routing", "yes")

    def _announce(self, pending: _Pending) -> None:
        pending.announced = True
        for observer in self.observers:
            try:
                observer.emergency_call_started(pending.call)
            except Exception:
                self.log.failure("Emergency observer {observer} failed", observer=observer)


@implementer(IPlugin, IWardenPlugin, ICallHook, IAdminEndpoints, IEmergencyNumbers)
class EmergencyPlugin(CallHookBase):
    """Emergency calls: Kari's Law routing, RAY BAUM's Act location (``[emergency]``)."""

    name = "e911"
    description = (
        "Emergency calls (911/933, outside prefix) to the emergency trunks with the"
        " caller's PIDF-LO location ([emergency], wardenctl location)"
    )
    sections: tuple[str, ...] = ("emergency",)
    needs: tuple[str, ...] = ("stores", "directory", "sip", "trunks")
    provides: tuple[str, ...] = ("e911",)

    log = Logger()

    def __init__(self) -> None:
        self.service: EmergencyService | None = None
        self.store: ICivicLocationStore | None = None
        self.directory: IDirectory | None = None

    def parse_section(
        self, name: str, table: Mapping[str, object], filename: str | None
    ) -> object:
        """``[emergency]``."""
        return parse_emergency(table)

    def make(self, context: BuildContext) -> None:
        """
        The locations on the shared database, the emergency trunks (their
        reserve) and the observers; provided as ``e911`` (its L{EmergencyService}).

        Raises:
            ConfigError: ``[emergency] trunks`` names an unknown trunk, or
                another call hook comes before this one in ``[plugins] enabled``.
        """
        from warden.features.trunks import TrunkService
        from warden.store.backend import Stores
        from warden.store.civic import SQLCivicLocationStore

        config = context.config.plugin_sections.get("emergency", EmergencyConfig())
        assert isinstance(config, EmergencyConfig)
        hooks = context.providers(ICallHook)
        if hooks and hooks[0] is not self:
            first = getattr(hooks[0], "name", type(hooks[0]).__name__)
            raise ConfigError(
                "plugins.enabled",
                f"e911 must come before {first!r}: emergency calls are routed before any"
                " other feature could divert them",
            )
        trunks = context.need("trunks", TrunkService)
        for name in config.trunks:
            if name not in trunks.trunks:
                raise ConfigError("emergency.trunks", f"no trunk named {name!r} ([[trunks]])")
            if not trunks.trunks[name].config.from_number:
                self.log.warn(
                    "Emergency trunk {trunk} has no from_number: an extension with no DID"
                    " calls 911 with no callback number",
                    trunk=name,
                )
        if not config.trunks:
            # With no trunk at all nothing leaves the PBX, 911 included: say so
            # quietly. With outside lines but no emergency route, 911 fails where
            # other outside numbers work: that is a warning.
            emit = self.log.warn if trunks.trunks else self.log.info
            emit("Emergency calls are not routed: [emergency] trunks is empty")
        trunks.reserve(config.trunks, config.reserve_calls)
        if self.store is None:
            self.store = SQLCivicLocationStore(context.need("stores", Stores).pool)
        self.directory = context.need("directory", IDirectory)
        observers = [EmergencyMetrics(), *context.providers(IEmergencyObserver)]
        self.service = EmergencyService(
            context.reactor, config, trunks,
            LocationResolver(self.store, config.default_location), observers,
            context.config.realm, context.config.node_id,
            max(RING_SECONDS, context.config.calls.ring_timeout),
        )  # fmt: skip
        context.provide("e911", self.service)

    def use_store(self, store: ICivicLocationStore, directory: IDirectory | None = None) -> None:
        """Keep the locations in ``store`` (tests; L{make} uses the database)."""
        self.store = store
        self.directory = directory

    # -- admin API ------------------------------------------------------------------

    def admin_endpoints(self) -> Sequence[PluginEndpoint]:
        """Locations, extension locations and network maps (L{warden.features.e911_api})."""
        from warden.features.e911_api import LocationEndpoints

        return LocationEndpoints(lambda: self.store, lambda: self.directory).endpoints()

    # -- call hooks -----------------------------------------------------------------

    def is_emergency_number(self, dialled: str) -> bool:
        """Whether ``dialled`` is intercepted as an emergency call (there are trunks for it)."""
        service = self.service
        if service is None or not service.config.trunks:
            return False
        return service.config.emergency_number(dialled) is not None

    def before_routing(self, attempt: CallAttempt) -> Deferred[None] | None:
        """An emergency number goes to the emergency trunks, whatever else is set."""
        return self.service.intercept(attempt) if self.service is not None else None

    def leg_built(self, attempt: CallAttempt, leg: OutgoingLeg) -> None:
        """The location of an emergency call, in its INVITE to the trunk."""
        if self.service is not None:
            self.service.leg_built(attempt, leg)


plugin = EmergencyPlugin()
