"""
SIP trunks to an ITSP as a feature plugin (``trunks``): ``[[trunks]]``,
``[[routes.outbound]]`` and ``[[routes.inbound]]``
(L{warden.features.trunk_config}). With no trunk configured it does nothing.

- A registering trunk keeps a binding at the provider
  (L{warden.sip.registration.Registration}); an IP-authenticated one
  (``register = false``) is known by its address.
- Outbound: an extension dialling a number an outbound route matches (and
  that is no extension) is sent to the route's trunks in order
  (L{warden.sip.external}); the caller ID is the extension's own number (the
  DID of the first inbound route ringing it), else the trunk's ``from_number``.
- Inbound: an INVITE from a trunk's address needs no extension credentials;
  its DID (Request-URI user, else To user) rings the extension of its inbound
  route; an unknown DID is answered 404 and counted.

With ``[sip] workers`` above 1 only worker 0 registers (one binding per
account at the provider); every worker places and takes trunk calls. A
connection to a trunk that cannot be opened, fails its TLS handshake or
closes fails the requests waiting on it at once (RFC 3261 §17.1.4), so the
next server or trunk is tried without waiting for the ``timeout``.

Metrics: ``warden_trunk_registered{trunk}``, ``warden_trunk_calls_total{trunk,
direction}``, ``warden_trunk_failures_total{trunk,reason}``,
``warden_trunk_unknown_did_total{trunk}``. State for the admin API and
``wardenctl trunks``: L{TrunkService.status}.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import attrs
from prometheus_client import Counter, Gauge
from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IReactorTCP,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from warden.errors import SipError, SipParseError
from warden.features.smtp import load_trust_root
from warden.features.trunk_config import (
    DnsConfig,
    RoutesConfig,
    TrunkConfig,
    TrunksConfig,
    check_routes,
    check_targets,
    parse_dns,
    parse_routes,
    parse_trunks,
)
from warden.interfaces import (
    IAdminEndpoints,
    ICallHook,
    IDirectory,
    ILocalApplication,
    IWardenPlugin,
)
from warden.model import Extension
from warden.model.admin import EndpointReply, EndpointRequest, PluginEndpoint
from warden.sip.auth import FIPS_ALGORITHMS
from warden.sip.external import Destination, RouteTarget
from warden.sip.flow import Flow
from warden.sip.headers import parse_address
from warden.sip.hooks import CallAttempt, CallHookBase, Vouched
from warden.sip.locate import (
    DEFAULT_PORTS,
    MAX_TARGETS,
    MAX_TTL,
    MIN_TTL,
    Location,
    ServerLocator,
    Target,
    make_resolver,
)
from warden.sip.message import Request
from warden.sip.registration import Registration, RegistrationSettings, RegistrationState
from warden.sip.stream_opener import StreamOpener
from warden.tls import client_tls_options

if TYPE_CHECKING:
    from warden.plugin import BuildContext
    from warden.sip.service import SipService

REGISTERED = Gauge(
    "warden_trunk_registered", "1 while the trunk's registration at its provider holds", ["trunk"]
)
CALLS = Counter(
    "warden_trunk_calls_total", "Calls placed on (outbound) or taken from (inbound) a trunk",
    ["trunk", "direction"],
)  # fmt: skip
FAILURES = Counter(
    "warden_trunk_failures_total",
    "Trunk failures: registration (register_*) and outbound calls (call_*) by reason",
    ["trunk", "reason"],
)
UNKNOWN_DID = Counter(
    "warden_trunk_unknown_did_total", "Calls from a trunk to a DID no inbound route has", ["trunk"]
)

#: The longest time (seconds) between two lookups of a trunk's host name.
RESOLVE_INTERVAL = MAX_TTL
_CALLER = re.compile(r"^\+?[0-9A-Za-z*#._-]{1,32}$")
_TELEPHONE_NUMBER = re.compile(r"^\+?[0-9]{1,32}$")
_DISPLAY_MAX = 64


def _outside_caller(request: Request) -> Extension:
    """
    Who calls from outside, as the provider asserts it (P-Asserted-Identity,
    RFC 3325, else From): the user part (``anonymous`` when unusable) and the
    display name, as an L{Extension} of no directory (empty realm, no HA1).
    """
    number, name = "anonymous", ""
    for value in (request.get("P-Asserted-Identity"), request.get("From")):
        try:
            sender = parse_address(value or "")
        except SipParseError:
            continue
        user = sender.uri.user_unescaped or ""
        if not _CALLER.match(user):
            continue
        number = user
        display = sender.display or ""
        if display.isprintable():
            name = display[:_DISPLAY_MAX]
        break
    return Extension(number, name, "", "", "")


def _ip_text(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return ""


@attrs.define(eq=False)
class Trunk:
    """
    One trunk at run time: its configuration, servers and registration.

    Attributes:
        targets: the provider's servers in the order to try them (RFC 3263;
            one for an IP address), empty until its host is resolved.
        current: the index of the server in use (the next one after a
            failure).
        resolve_at: when to look its host up again (clock time).
    """

    config: TrunkConfig
    password: str = attrs.field(repr=False)
    targets: tuple[Target, ...] = ()
    current: int = 0
    resolve_at: float = 0.0
    registration: Registration | None = None

    @property
    def target(self) -> Target | None:
        """The server in use, once the host is resolved."""
        return self.targets[self.current] if self.targets else None

    @property
    def address(self) -> str:
        """The address of the server in use ("" until resolved)."""
        target = self.target
        return target.address if target is not None else ""

    @property
    def flow(self) -> Flow | None:
        """Where its requests go, once its host is resolved."""
        target = self.target
        return None if target is None else self.flow_to(target)

    def flow_to(self, target: Target) -> Flow:
        """The flow to one of its servers."""
        return Flow(self.config.transport, target.address, target.port)

    def rotation(self) -> tuple[Target, ...]:
        """Its servers, from the one in use on (at most L{MAX_TARGETS})."""
        n = len(self.targets)
        return tuple(self.targets[(self.current + i) % n] for i in range(n))[:MAX_TARGETS]

    def index_of(self, host: str, port: int) -> int | None:
        """The index of its server at ``host``:``port``, if it has one."""
        for i, target in enumerate(self.targets):
            if (target.address, target.port) == (host, port):
                return i
        return None


class TrunkService(service.Service):
    """
    The trunks at run time: resolves their hosts, keeps registrations, turns
    calls into route targets and reports the state.

    Args:
        clock: the reactor (timers; ``resolve`` for host names).
        sip: the SIP service (transactions, addressing, calls).
        directory: the extensions (a number that is one is never sent out).
        trunks: ``[[trunks]]``, with each trunk's password by name.
        routes: ``[routes]``.
        fips: ``[security] fips``: only SHA-256 challenges are answered; a
            provider challenging with MD5 only fails (calls go to the next trunk).
        locator: finds the servers of the trunks' hosts (RFC 3263; None: IP
            addresses only).
        registers: whether this process keeps the trunks' registrations:
            with ``[sip] workers`` above 1 only worker 0 does (one binding
            per account at the provider, ADR 0034); the others place and take
            calls on the trunks all the same.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        sip: SipService,
        directory: IDirectory,
        trunks: TrunksConfig,
        passwords: Mapping[str, str],
        routes: RoutesConfig,
        fips: bool = False,
        locator: ServerLocator | None = None,
        registers: bool = True,
    ) -> None:
        self.clock = clock
        self.registers = registers
        self.locator = locator or ServerLocator(None)
        # FIPS mode answers SHA-256 challenges only (ADR 0029).
        self.algorithms = FIPS_ALGORITHMS if fips else None
        self.sip = sip
        self.directory = directory
        self.routes = routes
        self.trunks = {t.name: Trunk(t, passwords.get(t.name, "")) for t in trunks.trunks}
        for trunk in self.trunks.values():
            address = _ip_text(trunk.config.host)
            if address:  # an IP address is its own server (RFC 3263 §4.2)
                trunk.targets = (Target(address, trunk.config.port, address),)
                trunk.resolve_at = math.inf
        streams = any(t.transport in ("tcp", "tls") for t in trunks.trunks)
        connector = cast(IReactorTCP, clock)
        interface = sip.settings.interface
        self._opener = (
            StreamOpener(connector, sip.hub, interface, "trunk", self._connection_failed)
            if streams
            else None
        )
        #: Each TLS trunk's client options (its CAs, host name checked, SNI).
        self._tls = {
            t.name: trunk_tls_options(t, fips) for t in trunks.trunks if t.transport == "tls"
        }
        self._resolver = task.LoopingCall(lambda: Deferred.fromCoroutine(self._resolve_all()))
        self._resolver.clock = clock
        #: Calls of each trunk's ``max_calls`` kept for emergency calls (L{reserve}).
        self.reserved: dict[str, int] = {}

    # -- running ------------------------------------------------------------------

    def startService(self) -> None:
        """
        Locate the trunks' servers (again when their DNS records' time to live
        is over), then register the trunks that do.
        """
        super().startService()
        d = self._resolver.start(MIN_TTL, now=True)
        d.addErrback(lambda f: self.log.failure("Trunk resolution stopped", f))

    def stopService(self) -> Deferred[None] | None:
        """Stop resolving; remove the registrations."""
        super().stopService()
        if self._resolver.running:
            self._resolver.stop()
        for trunk in self.trunks.values():
            if trunk.registration is not None:
                trunk.registration.stop()
        return None

    async def _resolve_all(self) -> None:
        for trunk in self.trunks.values():
            if self.clock.seconds() >= trunk.resolve_at:
                await self._resolve(trunk)
            self._start_registration(trunk)

    async def _resolve(self, trunk: Trunk) -> None:
        """Locate the trunk's servers (RFC 3263); keep the old ones when none is found."""
        config = trunk.config
        try:
            location = await self.locator.locate(
                config.host, config.transport, config.port, config.port_given
            )
        except Exception as e:  # DNS at an I/O boundary
            self.log.failure("Trunk {trunk}: locating {host} failed", trunk=config.name,
                             host=config.host)  # fmt: skip
            location = Location((), MIN_TTL)
            del e
        trunk.resolve_at = self.clock.seconds() + location.ttl
        if not location.targets:
            self.log.warn("Trunk {trunk}: cannot resolve {host}", trunk=config.name,
                          host=config.host)  # fmt: skip
            FAILURES.labels(config.name, "unresolved").inc()
            trunk.resolve_at = self.clock.seconds() + MIN_TTL
            return
        in_use = trunk.target
        trunk.targets = location.targets
        kept = None if in_use is None else trunk.index_of(in_use.address, in_use.port)
        trunk.current = kept or 0
        registration = trunk.registration
        if registration is not None:
            flow = registration.flow
            if trunk.index_of(flow.host, flow.port) is None:
                registration.stop()  # the provider moved: register at its new servers
                trunk.registration = None
                REGISTERED.labels(config.name).set(0)

    def _start_registration(self, trunk: Trunk) -> None:
        config, flow = trunk.config, trunk.flow
        if not (self.registers and config.register) or flow is None:
            return
        if trunk.registration is not None:
            return
        settings = RegistrationSettings(
            flow, config.host, config.username, trunk.password, config.expires,
            algorithms=self.algorithms,
        )  # fmt: skip
        name = config.name
        trunk.registration = Registration(
            self.clock, self.sip.transactions, self.sip.addressing.via_for, settings,
            on_change=lambda r: self._registration_changed(name, r),
            on_failure=lambda reason: FAILURES.labels(name, f"register_{reason}").inc(),
            open_flow=lambda f: self._connected(f, name),
            next_flow=lambda f: self._next_target(name, f),
        )  # fmt: skip
        trunk.registration.start()

    def _registration_changed(self, name: str, registration: Registration) -> None:
        registered = registration.state is RegistrationState.REGISTERED
        REGISTERED.labels(name).set(1 if registered else 0)
        if registration.state is RegistrationState.FAILED:
            self.log.warn("Trunk {trunk}: registration failed: {error}",
                          trunk=name, error=registration.last_error)  # fmt: skip
        elif registered:
            self.log.info("Trunk {trunk}: registered", trunk=name)

    # -- calls --------------------------------------------------------------------

    def trunk_at(self, flow: Flow) -> Trunk | None:
        """
        The trunk whose provider sends from ``flow``'s address (one of its
        servers' addresses, or of its ``addresses``), if any.
        """
        host = _ip_text(flow.host)
        for trunk in self.trunks.values():
            if host and any(t.address == host for t in trunk.targets):
                return trunk
        if not host:
            return None
        ip = ipaddress.ip_address(host)
        for trunk in self.trunks.values():
            if any(ip in network for network in trunk.config.addresses):
                return trunk
        return None

    def inbound(self, request: Request, flow: Flow) -> Vouched | None:
        """
        An INVITE from a trunk's address: its caller (From user, ``anonymous``
        when unusable, and display name; standing for no extension) and the
        extension of its DID (Request-URI user, else To user), marked
        ``trunk-inbound`` and ``trunk:<name>``; None when it comes from no trunk.

        Raises:
            SipError: 404 for a DID no inbound route has (counted).
        """
        trunk = self.trunk_at(flow)
        if trunk is None:
            return None
        name = trunk.config.name
        target = self._did_target(request)
        if target is None:
            UNKNOWN_DID.labels(name).inc()
            raise SipError(404, "Not Found")
        CALLS.labels(name, "inbound").inc()
        marks = frozenset({"trunk-inbound", f"trunk:{name}"})
        return Vouched(_outside_caller(request), target, marks)

    def _did_target(self, request: Request) -> str | None:
        candidates = [request.uri.user_unescaped or ""]
        try:
            candidates.append(request.to.uri.user_unescaped or "")
        except SipParseError:
            pass
        for did in candidates:
            target = self.routes.extension_for(did) if did else None
            if target is not None:
                return target
        return None

    async def route_outbound(self, attempt: CallAttempt) -> None:
        """
        Send the call to the trunks of the first outbound route matching the
        dialled number, unless the number is an extension.

        Raises:
            SipError: 503 when none of the route's trunks can be reached.
        """
        caller = attempt.caller
        if not _TELEPHONE_NUMBER.match(attempt.dialled):
            return  # feature codes (*97) and names never leave through a trunk
        for route in self.routes.outbound:
            number = route.applies(caller.number, attempt.dialled)
            if number is None:
                continue
            if await self.directory.get_extension(attempt.dialled) is not None:
                return  # an extension's number rings the extension
            own = self.routes.number_of(caller.number)
            calls = self.in_progress()
            destinations = tuple(
                d for name in route.trunks
                if self._has_room(name, calls)
                for d in self._destinations(self.trunks[name], number, own)
            )  # fmt: skip
            if not destinations:
                raise SipError(503, "Service Unavailable")
            attempt.target = RouteTarget(number, destinations, _Events(self))
            attempt.marks.add("trunk-outbound")
            return

    def _has_room(self, name: str, calls: Mapping[str, int]) -> bool:
        """Whether trunk ``name`` takes one more ordinary call (its emergency reserve kept)."""
        limit = self.trunks[name].config.max_calls
        if not limit:
            return True
        if calls[name] < limit - self.reserved.get(name, 0):
            return True
        FAILURES.labels(name, "call_capacity").inc()
        return False

    def reserve(self, names: Sequence[str], calls: int) -> None:
        """
        Keep ``calls`` of the capacity (``max_calls``) of each trunk of
        ``names`` for emergency calls (``[emergency] reserve_calls``; set by
        the e911 plugin as Warden is built).
        """
        for name in names:
            self.reserved[name] = calls

    def emergency_target(
        self, names: Sequence[str], number: str, caller: str
    ) -> RouteTarget | None:
        """
        An emergency call of extension ``caller`` to ``number``: the trunks
        ``names`` in order, whatever their load; the first one that is full
        (``max_calls``) has its newest other call dropped (L{make_room}).
        None when no trunk's address is known.

        The caller ID (P-Asserted-Identity) is the callback number: the
        extension's own DID (its inbound route), else the trunk's
        ``from_number``.
        """
        own = self.routes.number_of(caller)
        destinations = tuple(
            d for name in names for d in self._destinations(self.trunks[name], number, own)
        )
        if not destinations:
            return None
        first = destinations[0].name
        limit = self.trunks[first].config.max_calls
        if limit and self.in_progress()[first] >= limit:
            self.make_room(first)
        return RouteTarget(number, destinations, _Events(self))

    def make_room(self, name: str) -> str:
        """
        Drop the newest call on trunk ``name`` that is no emergency call
        (answered: BYE to both sides; ringing: CANCEL and 503 to the caller);
        its id, or "" when there is none.
        """
        controller = self.sip.calls
        if controller is None:
            return ""
        candidates = [
            call for call in controller.calls.values()
            if not call.attempt.emergency and self._trunk_of(call.attempt) == name
        ]  # fmt: skip
        if not candidates:
            return ""
        newest = max(candidates, key=lambda c: c.started_at)
        self.log.warn(
            "Trunk {trunk} full: call {call_id} dropped for an emergency call",
            trunk=name,
            call_id=newest.call_id,
        )
        FAILURES.labels(name, "call_preempted").inc()
        controller.end_call(newest, "emergency pre-emption")
        return newest.call_id

    @staticmethod
    def _trunk_of(attempt: CallAttempt) -> str:
        """The trunk a call runs on ("" when none): outbound target, else inbound mark."""
        if attempt.target is not None:
            return attempt.target.current.name
        return next((m[6:] for m in attempt.marks if m.startswith("trunk:")), "")

    def _connected(self, flow: Flow, name: str) -> Flow:
        """
        ``flow`` with a connection to its peer (opened when none is) for TCP
        and TLS (trunk ``name``'s certificate checks).
        """
        if flow.transport == "udp" or self._opener is None:
            return flow
        tls = self._tls.get(name) if flow.transport == "tls" else None
        connection = self._opener.connection(flow.host, flow.port, tls)
        return Flow(flow.transport, flow.host, flow.port, connection)

    def _connection_failed(self, host: str, port: int, kind: str, error: str) -> None:
        """
        A connection to a trunk could not be opened (counted ``connect``), its
        TLS handshake failed (a refused certificate: ``tls``) or it closed
        (``lost``): the requests sent on it and not answered yet fail at once
        (RFC 3261 §8.1.3.1, §17.1.4), so the next server or trunk is tried
        now (RFC 3263 §4.3) rather than after the trunk's ``timeout``.
        """
        if kind != "lost":
            for trunk in self.trunks.values():
                if trunk.index_of(host, port) is not None:
                    FAILURES.labels(trunk.config.name, kind).inc()
        failed = self.sip.transactions.flow_failed(host, port)
        if failed:
            self.log.info(
                "Trunk connection to {host}:{port} failed ({kind}):"
                " {count} request(s) failed at once",
                host=host, port=port, kind=kind, count=failed,
            )  # fmt: skip

    def _next_target(self, name: str, flow: Flow) -> Flow | None:
        """
        The server of trunk ``name`` after the one ``flow`` went to, which
        failed (it becomes the one in use); None when the trunk has one.
        """
        trunk = self.trunks[name]
        if len(trunk.targets) < 2:
            return None
        index = trunk.index_of(flow.host, flow.port)
        if index is None:
            return trunk.flow
        trunk.current = (index + 1) % len(trunk.targets)
        return trunk.flow

    def target_failed(self, destination: Destination) -> None:
        """A call's destination failed: its trunk uses the next server, if it has one."""
        trunk = self.trunks.get(destination.name)
        if trunk is not None and trunk.target is not None:
            flow = destination.flow
            if (trunk.target.address, trunk.target.port) == (flow.host, flow.port):
                self._next_target(destination.name, flow)

    def _destinations(self, trunk: Trunk, number: str, own: str | None) -> list[Destination]:
        """
        The destinations of a call on ``trunk``: each of its servers, from the
        one in use on (RFC 3263 §4.3: the next server when one fails).
        """
        config = trunk.config
        if not trunk.targets:
            FAILURES.labels(config.name, "call_unresolved").inc()
            return []
        return [self._destination(trunk, trunk.flow_to(t), number, own) for t in trunk.rotation()]

    def _destination(self, trunk: Trunk, flow: Flow, number: str, own: str | None) -> Destination:
        config = trunk.config
        return Destination(
            name=config.name, flow=flow, uri=request_uri(number, config),
            domain=config.host, caller_id=own or config.from_number or "anonymous",
            username=config.username, password=trunk.password, timeout=config.timeout,
            algorithms=self.algorithms,
            connect=lambda f: self._connected(f, config.name),
        )  # fmt: skip

    # -- state --------------------------------------------------------------------

    def in_progress(self) -> dict[str, int]:
        """Calls in progress per trunk (ringing or answered)."""
        counts = dict.fromkeys(self.trunks, 0)
        controller = self.sip.calls
        for call in controller.calls.values() if controller is not None else ():
            name = self._trunk_of(call.attempt)
            if name in counts:
                counts[name] += 1
        return counts

    def status(self) -> list[dict[str, Any]]:
        """Each trunk's state, for the admin API and ``wardenctl trunks``."""
        calls = self.in_progress()
        out = []
        for name, trunk in self.trunks.items():
            registration = trunk.registration
            config = trunk.config
            if not config.register:
                state = "ip-authenticated"
            elif registration is None:
                state = "unresolved" if not trunk.address else "unregistered"
            else:
                state = registration.state.value
            target = trunk.target
            out.append({
                "name": name, "host": config.host,
                "port": target.port if target is not None else config.port,
                "transport": config.transport,
                "target": target.name if target is not None else "",
                "targets": [str(t) for t in trunk.targets],
                "address": trunk.address, "register": config.register, "state": state,
                "expires_at": registration.expires_at if registration is not None else None,
                "last_error": registration.last_error if registration is not None else "",
                "calls_in_progress": calls[name],
            })  # fmt: skip
        return out


def request_uri(number: str, config: TrunkConfig) -> str:
    """
    The Request-URI of a call to ``number`` on a trunk: ``sip:NUMBER@host``,
    with the port when it is not the transport's default, and
    ``;transport=tls`` on a TLS trunk (RFC 3261 §19.1.1, RFC 5630 §3.2:
    ``sip:`` over TLS, hop by hop, rather than ``sips:``, which asks for TLS
    on every hop to the callee).
    """
    port = "" if config.port == DEFAULT_PORTS[config.transport] else f":{config.port}"
    transport = ";transport=tls" if config.transport == "tls" else ""
    return f"sip:{number}@{config.host}{port}{transport}"


def trunk_tls_options(config: TrunkConfig, fips: bool) -> IOpenSSLClientConnectionCreator:
    """
    The client TLS options of a ``tls`` trunk: the provider's certificate
    must chain to the CAs of ``tls_ca_file`` (else the system's trust store)
    and name ``host`` (service_identity; SNI ``host`` when it is a name); in
    FIPS mode TLS 1.2+ with the approved suites only (ADR 0029).
    """
    trust_root = load_trust_root(config.tls_ca_file, "tls_ca_file")
    return client_tls_options(config.host, trust_root, fips)


def target_kinds(plugins: Sequence[object]) -> frozenset[str]:
    """
    The kinds of ``<kind>:<name>`` route targets the enabled ``plugins``
    answer: the local applications they run (L{ILocalApplication}, ADR 0022)
    and the targets they route before routing (an optional ``route_targets``
    attribute: ``ringgroup``).
    """
    kinds: set[str] = set()
    for plugin in plugins:
        if ILocalApplication.providedBy(plugin):
            kinds.update(plugin.applications)
        kinds.update(getattr(plugin, "route_targets", ()))
    return frozenset(kinds)


class _Events:
    """
    Counts each outbound call on a trunk (once, whichever of its servers
    takes it) and each failure; a failed server hands over to the next.
    """

    def __init__(self, service: TrunkService) -> None:
        self.service = service
        self._counted: set[str] = set()

    def tried(self, destination: Destination) -> None:
        if destination.name not in self._counted:
            self._counted.add(destination.name)
            CALLS.labels(destination.name, "outbound").inc()

    def failed(self, destination: Destination, reason: str) -> None:
        FAILURES.labels(destination.name, f"call_{reason}").inc()
        self.service.target_failed(destination)


@implementer(IPlugin, IWardenPlugin, ICallHook, IAdminEndpoints)
class TrunksPlugin(CallHookBase):
    """SIP trunks: registration, outbound routes with failover, inbound DIDs."""

    name = "trunks"
    description = (
        "SIP trunks to ITSPs: registration, outbound and inbound routes ([[trunks]], [routes])"
    )
    sections = ("trunks", "routes", "dns")
    array_sections = ("trunks",)
    needs = ("sip", "directory")
    provides = ("trunks",)

    def __init__(self) -> None:
        self.service: TrunkService | None = None

    def parse_section(self, name: str, table: object, filename: str | None) -> object:
        """``[[trunks]]``, ``[routes]`` or ``[dns]``."""
        if name == "trunks":
            return parse_trunks(table)
        if name == "dns":
            return parse_dns(table)
        return parse_routes(table)

    def make(self, context: BuildContext) -> None:
        """
        Build the trunks (passwords read now) and provide them as ``trunks``.

        Raises:
            ConfigError: a route names an unknown trunk or an application no
                enabled plugin runs; a password is missing.
        """
        from warden.sip.service import SipService

        sections = context.config.plugin_sections
        trunks = sections.get("trunks", TrunksConfig())
        routes = sections.get("routes", RoutesConfig())
        assert isinstance(trunks, TrunksConfig) and isinstance(routes, RoutesConfig)
        check_routes(routes, trunks)
        check_targets(routes, target_kinds(context.plugins))
        passwords = {
            t.name: t.password(f"trunks[{i}]")
            for i, t in enumerate(trunks.trunks)
            if t.has_password
        }
        sip = context.need("sip", SipService)
        directory = context.need("directory", IDirectory)
        dns = sections.get("dns", DnsConfig())
        assert isinstance(dns, DnsConfig)
        names = any(not _ip_text(t.host) for t in trunks.trunks)
        # A DNS client only when a trunk's host is a name (RFC 3263 location).
        locator = ServerLocator(make_resolver(context.reactor, dns.servers)) if names else None
        self.service = TrunkService(
            context.reactor, sip, directory, trunks, passwords, routes,
            context.config.security.fips, locator,
            registers=context.config.worker <= 0,  # one worker registers (ADR 0034)
        )  # fmt: skip
        if trunks.trunks:
            context.add_service(self.service)
        context.provide("trunks", self.service)

    # -- admin API ------------------------------------------------------------------

    def admin_endpoints(self) -> Sequence[PluginEndpoint]:
        """``GET /trunks``: each trunk's registration state, last error, calls in progress."""
        summary = "Trunks: registration state, last error and calls in progress of each"
        return [PluginEndpoint("GET", "trunks", self._list, "read", summary)]

    async def _list(self, request: EndpointRequest) -> EndpointReply:
        return EndpointReply({"trunks": self.service.status() if self.service else []})

    # -- call hooks -----------------------------------------------------------------

    def identify(self, request: Request, flow: Flow) -> Vouched | None:
        """
        A call from a trunk's address needs no extension credentials and is
        for its DID's extension (an unknown DID: 404).
        """
        if self.service is None or not self.service.trunks:
            return None
        return self.service.inbound(request, flow)

    def before_routing(self, attempt: CallAttempt) -> Deferred[None] | None:
        """An extension's call to a number of an outbound route goes to its trunks."""
        service_ = self.service
        if service_ is None or not service_.routes.outbound or "trunk-inbound" in attempt.marks:
            return None  # a call from a trunk never goes out through one again
        return Deferred.fromCoroutine(service_.route_outbound(attempt))


plugin = TrunksPlugin()

__all__ = [
    "TrunkService", "TrunksPlugin", "plugin", "request_uri", "target_kinds", "trunk_tls_options",
]  # fmt: skip
