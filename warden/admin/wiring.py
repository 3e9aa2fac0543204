"""
How the composition root (``warden.tap.makeService``) adds the admin plugin and
drain: one call, L{add_admin}, with the objects it has already built.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application import service
from twisted.logger import Logger

from warden.admin.api import ApiServices
from warden.admin.auth import AuthSettings
from warden.admin.drain import DrainController
from warden.admin.metrics import WardenCollector
from warden.admin.service import AdminListenSettings, make_admin_service, with_port
from warden.config import WardenConfig
from warden.errors import ConfigError
from warden.process import process_exit
from warden.store.backend import admin_stores

_log = Logger()


def override_port(config: WardenConfig, port: int | None) -> WardenConfig:
    """
    ``config`` with ``--admin-port`` applied to ``[admin] listen``; port 0 turns
    the admin API off (as ``[admin] enabled = false``).
    """
    if port is None:
        return config
    if port == 0:
        return attrs.evolve(config, admin=attrs.evolve(config.admin, enabled=False))
    try:
        listen = with_port(config.admin.listen, port)
    except ValueError as e:
        raise ConfigError("admin.listen", str(e), "command line") from None
    return attrs.evolve(config, admin=attrs.evolve(config.admin, listen=listen))


def add_admin(
    root: Any,
    config: WardenConfig,
    reactor: Any,
    pool: Any,
    directory: Any,
    location: Any,
    records: Any,
    live: Any,
    sip: Any,
    store_ping: Any,
) -> service.IService | None:
    """
    Give ``root`` its drain controller (``root.drain``, used on SIGTERM) and, when
    ``[admin] enabled``, the admin service as a child. Returns the admin service.
    """
    admin = config.admin
    drain = DrainController(reactor, sip.calls, admin.drain_timeout)
    root.drain = drain
    if not admin.enabled:
        _log.info(
            "The admin API is off ([admin] enabled = false or --admin-port 0):"
            " no HTTPS API, /metrics, /readyz or wardenctl drain"
        )
        return None
    accounts, audit = admin_stores(pool)  # SQLite or PostgreSQL, as [store] url says
    services = ApiServices(
        clock=reactor, directory=directory, location=location, records=records, live=live,
        audit=audit, realm=config.realm, node_id=config.node_id, calls=sip.calls, drain=drain,
        started_at=reactor.seconds(),
    )  # fmt: skip
    auth_settings = AuthSettings(
        session_seconds=admin.session_seconds,
        require_mfa=admin.require_mfa,
        fail_limit=admin.login_fail_limit,
        backoff_seconds=admin.login_backoff_seconds,
        backoff_max_seconds=admin.login_backoff_max_seconds,
        password_checks=admin.login_concurrency,
        token_seconds=admin.token_seconds,
    )
    listen = AdminListenSettings(
        listen=admin.listen,
        metrics_listen=admin.metrics_listen,
        certificate=admin.certificate,
        private_key=admin.private_key,
        data_dir=config.server.data_dir,
    )
    collector = WardenCollector(sip.calls, sip.transactions)
    admin_service = make_admin_service(
        reactor, listen, auth_settings, services, accounts,
        lambda: bool(sip.running), store_ping, collector, exit=process_exit(reactor),
    )  # fmt: skip
    admin_service.setServiceParent(root)
    return admin_service
