"""
The admin plugin's service: the HTTPS listener (REST API, health, metrics),
the optional plain-HTTP listener for scrapers (health and metrics only), the
generated certificate, and certificate reload on SIGHUP.

Built by L{make_admin_service} from objects the composition root already has.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from OpenSSL import SSL
from twisted.application import service
from twisted.internet import endpoints, threads
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorThreads,
    ITCPTransport,
    ITransport,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from warden.admin import openapi
from warden.admin.api import ApiServices, data_routes
from warden.admin.api_auth import auth_routes
from warden.admin.auth import AdminAuth, AuthSettings
from warden.admin.health import HealthResource, ReadyResource
from warden.admin.http import (
    ApiCall,
    ApiResource,
    JsonErrorPage,
    LimitedRequest,
    Reply,
    Route,
    ScopedResource,
)
from warden.admin.metrics import MetricsResource, WardenCollector
from warden.admin.plugin_endpoints import plugin_paths, plugin_routes
from warden.interfaces import (
    IAdminEndpoints,
    IAdminStore,
    IAuthenticationFactor,
    IWardenReactor,
)
from warden.tls import ReloadableContextFactory, TlsPolicy, certificate_pair, install_sighup

CERT_FILE = "admin-cert.pem"
KEY_FILE = "admin-key.pem"
_PORT_IN_ENDPOINT = re.compile(r"^(tcp6?:)(?:port=)?(\d+)")


def with_port(endpoint: str, port: int) -> str:
    """``endpoint`` (a ``tcp:`` or ``tcp6:`` string) listening on ``port`` instead."""
    replaced, count = _PORT_IN_ENDPOINT.subn(lambda m: f"{m.group(1)}{port}", endpoint, count=1)
    if not count:
        raise ValueError(f"cannot set the port of {endpoint!r}: expected tcp:PORT:...")
    return replaced


def api_routes(
    services: ApiServices, auth: AdminAuth, endpoints: Sequence[IAdminEndpoints] = ()
) -> list[Route]:
    """
    Every route of ``/api/v1``, the OpenAPI document's included, and those of
    the enabled plugins' ``endpoints``.
    """
    document = openapi.document(plugin_paths(endpoints))

    async def serve_openapi(call: ApiCall) -> Reply:
        return Reply(200, document)

    return [
        Route("GET", "openapi.json", serve_openapi, None),
        *auth_routes(auth),
        *data_routes(services),
        *plugin_routes(endpoints),
    ]


def build_site(
    routes: list[Route],
    auth: AdminAuth,
    services: ApiServices,
    health: HealthResource,
    ready: ReadyResource,
    metrics: MetricsResource,
    api: bool = True,
) -> server.Site:
    """The resource tree: ``/healthz``, ``/readyz``, ``/metrics``, ``/api/v1/...``."""
    root = resource.Resource()
    root.putChild(b"", JsonErrorPage())
    root.putChild(b"healthz", health)
    root.putChild(b"readyz", ready)
    # On the API listener /metrics needs a token with the read scope; the plain
    # listener for scrapers on a private network serves it openly.
    root.putChild(b"metrics", ScopedResource(metrics, auth, "read") if api else metrics)
    if api:
        prefix = resource.Resource()
        prefix.putChild(b"v1", ApiResource(routes, auth, services.audit, services.clock))
        root.putChild(b"api", prefix)
    site = AdminSite(
        _NotFoundFallback(root), requestFactory=LimitedRequest, reactor=services.clock
    )
    site.displayTracebacks = False
    return site


#: Paths probed and scraped constantly: kept out of the access log.
QUIET_PATHS = frozenset([b"/metrics", b"/healthz", b"/readyz"])


class AdminSite(server.Site):
    """The admin site: its access log leaves out probes and scrapes."""

    def log(self, request: http.Request) -> None:
        """Log API requests only (the URL never carries a secret)."""
        if request.path not in QUIET_PATHS:
            super().log(request)


class _NotFoundFallback(resource.Resource):
    """The root: known children, JSON 404 for everything else."""

    def __init__(self, root: resource.Resource) -> None:
        super().__init__()
        self._root = root

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        """The child of the wrapped root, or a JSON 404."""
        child = self._root.children.get(path)
        return child if child is not None else JsonErrorPage()


@attrs.frozen
class AdminListenSettings:
    """Where and how the admin plugin listens (from ``[admin]``)."""

    listen: str
    metrics_listen: str
    certificate: str
    private_key: str
    data_dir: str
    #: ``[security] fips``: FIPS-approved TLS suites and groups only.
    fips: bool = False


class NoDelayTLSProtocol(TLSMemoryBIOProtocol):
    """TLS that sets TCP_NODELAY on its TCP transport when connected."""

    def makeConnection(self, transport: ITransport) -> None:
        """Turn Nagle's algorithm off, then start TLS."""
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        super().makeConnection(transport)


class NoDelayTLSFactory(TLSMemoryBIOFactory):
    """
    TLS over TCP with Nagle's algorithm off: a response's last TLS record must not
    wait for the client's delayed ACK (40 ms per request on a kept-alive connection).
    """

    protocol = NoDelayTLSProtocol


class AdminService(service.Service):
    """
    Listens for HTTPS (and plain HTTP for metrics, when configured) and reloads
    the certificate on SIGHUP.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IWardenReactor,
        settings: AdminListenSettings,
        site: server.Site,
        plain_site: server.Site | None,
        install_signal: Callable[[Callable[[], None]], None] | None = None,
        exit: Callable[[int], None] | None = None,
    ) -> None:
        self._reactor = reactor
        self._exit = exit
        self.settings = settings
        self.site = site
        self.plain_site = plain_site
        self._install_signal = install_signal
        self.tls: ReloadableContextFactory | None = None
        self.ports: list[IListeningPort] = []

    def _certificate_files(self) -> tuple[str, str]:
        s = self.settings
        paths = (os.path.join(s.data_dir, CERT_FILE), os.path.join(s.data_dir, KEY_FILE))
        pair = certificate_pair(s.certificate, s.private_key, paths, self._reactor)
        if pair.generated:
            cert, fp = pair.cert_path, pair.generated
            self.log.info(
                "Generated a self-signed admin certificate {path}; SHA-256 fingerprint {fp}",
                path=cert, fp=fp,
            )  # fmt: skip
            print(f"Warden admin certificate {cert}\n  SHA-256 fingerprint {fp}", flush=True)
        return pair.cert_path, pair.key_path

    def startService(self) -> None:
        """Load the certificate and listen; a failure to listen stops Warden."""
        super().startService()
        try:
            cert, key = self._certificate_files()
            self.tls = ReloadableContextFactory(
                cert, key, policy=TlsPolicy(fips=self.settings.fips)
            )
        except (OSError, ValueError, SSL.Error):
            self._failed(Failure())
            return
        self.log.info(
            "Admin certificate {path}: SHA-256 fingerprint {fp}",
            path=cert,
            fp=self.tls.fingerprint,
        )
        factory = NoDelayTLSFactory(self.tls, False, self.site)
        d = self._listen(self.settings.listen, factory, "HTTPS")
        plain, metrics_listen = self.plain_site, self.settings.metrics_listen
        if plain is not None and metrics_listen:
            d.addCallback(lambda _: self._listen(metrics_listen, plain, "HTTP"))
        d.addErrback(self._failed)
        if self._install_signal is not None:
            self._install_signal(self.reload)

    def _listen(self, description: str, factory: IProtocolFactory, kind: str) -> Deferred[None]:
        endpoint = endpoints.serverFromString(self._reactor, description)
        d: Deferred[IListeningPort] = endpoint.listen(factory)

        def listening(port: IListeningPort) -> None:
            self.ports.append(port)
            host = port.getHost()
            self.log.info(
                "Admin {kind} listening on {host}:{port}",
                kind=kind, host=getattr(host, "host", "?"), port=getattr(host, "port", "?"),
            )  # fmt: skip

        return d.addCallback(listening)

    def _failed(self, failure: Failure) -> None:
        """
        Stop Warden with exit status 1: a listener that cannot bind (the port is
        taken, say by a second Warden on this host) is one line naming the
        endpoint and the fix; anything else is logged with its traceback.
        """
        error = failure.value
        if isinstance(error, CannotListenError):
            self.log.critical(
                "Warden could not start: the admin API cannot listen on {endpoint}"
                " ({reason}); choose another port with --admin-port PORT or"
                " [admin] listen, or run without the admin API: --admin-port 0",
                endpoint=_where(error),
                reason=_reason(error),
            )
        else:
            self.log.failure("The admin listener could not start", failure)
        if self._exit is not None:
            self._exit(1)
        else:
            self._reactor.stop()

    def reload(self) -> None:
        """Re-read the certificate and key (SIGHUP)."""
        if self.tls is not None:
            self.tls.reload()

    def stopService(self) -> Deferred[None]:
        """Stop listening."""
        super().stopService()
        return Deferred.fromCoroutine(self._stop_listening())

    async def _stop_listening(self) -> None:
        ports, self.ports = self.ports, []
        for port in ports:
            stopped = port.stopListening()
            if stopped is not None:
                await stopped

    def bound_ports(self) -> list[int]:
        """The ports listened on (HTTPS first)."""
        hosts = [p.getHost() for p in self.ports]
        return [h.port for h in hosts if isinstance(h, IPv4Address | IPv6Address)]


def _where(e: CannotListenError) -> str:
    host = e.interface or "*"
    return f"[{host}]:{e.port}" if ":" in host else f"{host}:{e.port}"


def _reason(e: CannotListenError) -> str:
    socket_error = e.socketError
    return str(getattr(socket_error, "strerror", None) or socket_error)


def thread_runner(reactor: IReactorThreads) -> Callable[..., Deferred[Any]]:
    """Runs blocking functions (scrypt) in the reactor's thread pool."""

    def run(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return run


def make_admin_service(
    reactor: IWardenReactor,
    listen: AdminListenSettings,
    auth_settings: AuthSettings,
    services: ApiServices,
    admin_store: IAdminStore,
    sip_bound: Callable[[], bool],
    store_ping: Callable[[], Deferred[int]],
    collector: WardenCollector,
    install_signals: bool = True,
    exit: Callable[[int], None] | None = None,
    factors: Sequence[IAuthenticationFactor] = (),
    endpoints: Sequence[IAdminEndpoints] = (),
) -> AdminService:
    """
    The admin service, wired from the composition root's objects; ``factors``
    are the enabled plugins' second factors of the login, ``endpoints`` their
    admin API endpoints.
    """
    auth = AdminAuth(reactor, admin_store, auth_settings, thread_runner(reactor), factors=factors)
    health = HealthResource()
    ready = ReadyResource(
        reactor, sip_bound, store_ping, lambda: bool(services.drain and services.drain.draining)
    )
    metrics = MetricsResource(collector, reactor, workers=services.workers)
    routes = api_routes(services, auth, endpoints)
    site = build_site(routes, auth, services, health, ready, metrics)
    plain = build_site([], auth, services, health, ready, metrics, api=False)
    return AdminService(
        reactor,
        listen,
        site,
        plain,
        install_sighup(reactor) if install_signals else None,
        exit,
    )
