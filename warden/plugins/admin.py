"""
The admin API as a plugin: HTTPS API, ``/metrics``, health and readiness, and
the drain controller that SIGTERM and ``wardenctl drain`` use (L{warden.admin}).
"""

from __future__ import annotations

from types import MappingProxyType

from twisted.logger import Logger

from warden.admin.api import ApiServices
from warden.admin.auth import AuthSettings
from warden.admin.drain import DrainController
from warden.admin.metrics import LocalExposition, WardenCollector
from warden.admin.service import AdminListenSettings, make_admin_service
from warden.admin.workers import PbxWorkers, WorkerAnswers
from warden.config import AdminConfig
from warden.fips import fips_status
from warden.interfaces import (
    IAdminEndpoints,
    IAuthenticationFactor,
    ICallRecordStore,
    IDirectory,
    ILiveCalls,
    ILocationService,
)
from warden.plugin import BuildContext, BuiltinPlugin
from warden.process import process_exit
from warden.sip.service import SipService
from warden.store.backend import Stores, admin_stores
from warden.workerlink import ControlChannel, WorkerLinkService

_log = Logger()


class AdminPlugin(BuiltinPlugin):
    """``[admin]``: the HTTPS admin API and the drain controller."""

    name = "admin"
    description = "HTTPS admin API, /metrics, /readyz and call draining ([admin])"
    needs = ("sip", "stores", "directory", "location", "records", "live")
    provides = ("drain",)
    section_classes = MappingProxyType({"admin": AdminConfig})

    def make(self, context: BuildContext) -> None:
        """
        Provide the drain controller as ``drain`` and, when ``[admin] enabled``,
        run the admin service.
        """
        config, reactor = context.config, context.reactor
        admin = config.admin
        sip = context.need("sip", SipService)
        drain = DrainController(reactor, sip.calls, admin.drain_timeout)
        context.provide("drain", drain)
        collector = WardenCollector(sip.calls, sip.transactions)
        workers = None
        if config.worker >= 0:  # a SIP worker: the supervisor's channel (ADR 0035)
            answers = WorkerAnswers(drain, LocalExposition(collector))
            link = WorkerLinkService(reactor, ControlChannel(reactor, answers))
            context.add_service(link)
            workers = PbxWorkers(link.channel)
        if not admin.enabled:
            _log.info(
                "The admin API is off ([admin] enabled = false or --admin-port 0):"
                " no HTTPS API, /metrics, /readyz or wardenctl drain"
            )
            return
        stores = context.need("stores", Stores)
        accounts, audit = admin_stores(stores.pool)  # SQLite or PostgreSQL, as [store] url says
        services = ApiServices(
            clock=reactor,
            directory=context.need("directory", IDirectory),
            location=context.need("location", ILocationService),
            records=context.need("records", ICallRecordStore),
            live=context.need("live", ILiveCalls),
            audit=audit,
            realm=config.realm,
            node_id=config.node_id,
            calls=sip.calls,
            drain=drain,
            workers=workers,
            started_at=reactor.seconds(),
            fips=config.security.fips,
            fips_provider_active=fips_status().provider_active,
        )
        auth_settings = AuthSettings(
            session_seconds=admin.session_seconds,
            require_mfa=admin.require_mfa,
            fail_limit=admin.login_fail_limit,
            backoff_seconds=admin.login_backoff_seconds,
            backoff_max_seconds=admin.login_backoff_max_seconds,
            password_checks=admin.login_concurrency,
            token_seconds=admin.token_seconds,
            fips=config.security.fips,
        )
        listen = AdminListenSettings(
            listen=admin.listen,
            metrics_listen=admin.metrics_listen,
            certificate=admin.certificate,
            private_key=admin.private_key,
            data_dir=config.server.data_dir,
            fips=config.security.fips,
        )
        context.add_service(
            make_admin_service(
                reactor,
                listen,
                auth_settings,
                services,
                accounts,
                lambda: bool(sip.running),
                stores.directory.count_extensions,
                collector,
                exit=process_exit(reactor),
                factors=context.providers(IAuthenticationFactor),
                endpoints=context.providers(IAdminEndpoints),
            )
        )


plugin = AdminPlugin()
