"""
``twistd warden``: command-line options and the one composition root.

``makeService`` reads the configuration, opens the store and builds the SIP
stack, passing every dependency explicitly.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from warden.admin.wiring import add_admin, override_port
from warden.backup.schedule import backup_service
from warden.cluster import shared_state
from warden.config import WardenConfig, load_effective_config
from warden.digits import parse_uint
from warden.errors import ConfigError, StoreError
from warden.filemodes import private_directories, private_umask, secure_directories
from warden.netutil import host_matcher, local_addresses, local_names
from warden.process import process_exit
from warden.rtp import udp as media_udp
from warden.rtp.policy import MediaPolicy
from warden.rtp.relay import MediaRelay
from warden.runlock import LockFailed, run_locks
from warden.sip.registrar import ExpiryPolicy
from warden.sip.service import CallServices, SipService, SipSettings
from warden.sip.timers import TimerSettings
from warden.store.backend import check_store, open_stores
from warden.store.live import CoalescingLiveCalls
from warden.store.migrate import apply_migrations
from warden.store.snapshot import SnapshotDirectory
from warden.store.spool import SpooledCallRecordStore, default_spool_path, fsync_in_thread
from warden.store.sqlite import SQLiteLocationService


def _port(value: str) -> int:
    port = parse_uint(value, 65535)
    if port is None:
        raise usage.UsageError(f"--sip-port: must be a port number 0..65535, got {value!r}")
    return port


class Options(usage.Options):
    """Options of ``twistd warden``; each overrides the configuration file."""

    optParameters = [  # noqa: RUF012
        ["config", "c", None, "Configuration file (TOML). Default: embedded defaults."],
        ["data-dir", "d", None, "Data directory (database, keys). Default: ./var"],
        ["sip-port", "p", None, "SIP port for UDP and TCP. Default: 5060", _port],
        ["sip-interface", "i", None, "Address to listen on. Default: all interfaces"],
        [
            "admin-port",
            None,
            None,
            "Admin HTTPS port (overrides [admin] listen); 0 turns the admin API off",
            _port,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["domain"] = []
        self.config: WardenConfig | None = None

    def opt_domain(self, name: str) -> None:
        """A domain served by this PBX (repeatable)."""
        self["domain"].append(name)

    def postOptions(self) -> None:  # noqa: N802
        """Load the configuration now, so a bad one stops start-up with one line."""
        private_umask()  # before check_store creates the data directory
        try:
            self.config = load_effective_config(
                self["config"],
                data_dir=self["data-dir"],
                sip_port=self["sip-port"],
                sip_interface=self["sip-interface"],
                domains=self["domain"],
            )
            self.config = override_port(self.config, self["admin-port"])
            # A wrong store URL, password or database stops start-up with one line.
            check_store(self.config.store_url, self.config.store.password_file)
        except (ConfigError, StoreError) as e:
            raise usage.UsageError(str(e)) from None


class WardenService(service.MultiService):
    """
    The whole PBX: prepares the store (migrations, loading bindings), then starts
    its children; on stop, stops them and closes the store.
    """

    log = Logger()

    def __init__(
        self,
        pool: Any,
        location: SQLiteLocationService,
        directory: SnapshotDirectory,
        reactor: Any,
        records: SpooledCallRecordStore,
        live: CoalescingLiveCalls,
        media: MediaRelay,
        node_id: str,
        exit: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        # Ends the process with a status (warden.process); None: only stop the reactor.
        self._exit = exit
        self._pool = pool
        self._location = location
        self._directory = directory
        self._reactor = reactor
        self._records = records
        self._live = live
        self._media = media
        self._node_id = node_id
        self.drain: Any = None  # a DrainController: SIGTERM drains calls first
        # Applies pending schema migrations (the store's dialect; set by makeService).
        self.migrate: Callable[[], Deferred[list[str]]] = lambda: apply_migrations(pool)

    def startService(self) -> None:  # noqa: N802
        """Migrate and load, then start listening; a failure stops Warden."""
        service.Service.startService(self)
        d = self._prepare()
        d.addCallbacks(self._ready, self._failed)

    @defer.inlineCallbacks
    def _prepare(self):  # type: ignore[no-untyped-def]
        yield self.migrate()
        extensions = yield self._directory.load()
        self._directory.start()
        self.log.info("{count} extensions loaded", count=extensions)
        loaded = yield self._location.load()
        replayed = yield self._records.recover()
        if replayed:
            self.log.info("Replayed {count} call records from the spool", count=replayed)
        yield self._live.clear_node(self._node_id)
        return loaded

    def _ready(self, loaded: int) -> None:
        self.log.info("Store ready; {count} bindings restored", count=loaded)
        # Everything loaded so far lives as long as the process: keep it out of
        # the collector's way, and collect the youngest generation less often
        # (each lingering transaction is a few objects). The older generations
        # keep their default ratios so that cyclic garbage of ended calls is
        # still collected promptly.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        for child in self:
            child.startService()

    def _failed(self, failure: Any) -> None:
        """
        Stop with exit status 1. A store that cannot be used (unreachable, or a
        schema newer than this code after a rollback) is one line naming the
        problem; anything else is a bug, logged with its traceback.
        """
        if failure.check(StoreError):
            self.log.critical("Warden could not start: {error}", error=str(failure.value))
        else:
            self.log.failure("Warden could not start", failure)
        if self._exit is not None:
            self._exit(1)
        else:
            self._reactor.stop()

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[no-untyped-def]  # noqa: N802
        """Drain calls, stop children (flushing bindings), then close the database."""
        if self.drain is not None:
            yield self.drain.for_shutdown()
        yield super().stopService()
        self._directory.stop()
        yield self._location.close()
        try:
            yield self._live.flush().addTimeout(5, self._reactor)
        except Exception as e:
            self.log.warn("Live-call summaries not written at shutdown: {error}", error=e)
        try:
            yield self._records.flush().addTimeout(10, self._reactor)
        except defer.TimeoutError:
            depth = self._records.spool_depth
            self.log.warn("Call records left in the spool: {depth}", depth=depth)
        self._records.close()
        self._media.close()
        self._pool.close()


def makeService(options: Options, reactor: Any = None) -> service.IService:  # noqa: N802
    """Build Warden from parsed options."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    config = options.config
    assert config is not None
    private_umask()  # the database, spool and backups hold password equivalents
    os.makedirs(config.server.data_dir, exist_ok=True)
    secure_directories(private_directories(config))
    try:  # held while Warden runs: a restore refuses to write under it (warden.runlock)
        locks = run_locks(config, reactor)
    except LockFailed as e:
        raise SystemExit(f"twistd warden: {e}") from None
    clock: IReactorTime = reactor
    # [store] url: SQLite or PostgreSQL (warden.store.backend)
    stores = open_stores(
        config.store_url, reactor, config.store.password_file, config.store.pool_size
    )
    pool, sqlite_directory = stores.pool, stores.directory
    directory = SnapshotDirectory(
        sqlite_directory,
        clock,
        config.store.directory_cache_seconds,
        stores.data_version,
    )
    location: Any = stores.location
    records = SpooledCallRecordStore(
        stores.records,
        clock,
        default_spool_path(config.server.data_dir),
        sync=fsync_in_thread(reactor),
    )
    live: Any = stores.live
    shared = shared_state(config, clock)  # [state] url: bindings and live calls in Redis
    if shared is not None:
        location, live = shared.location, shared.live
    live = CoalescingLiveCalls(live, clock)  # a batch every 0.5 s, not a write per change
    media = MediaRelay(
        clock,
        functools.partial(media_udp.listen_udp, reactor),
        media_address(config),
        port_range=(config.media.port_min, config.media.port_max),
        interface=config.media.address or config.sip.interface or "",
        media_timeout=config.media.timeout,
        policy=media_policy(config),
    )
    root = WardenService(
        pool, location, directory, reactor, records, live, media, config.node_id,
        exit=process_exit(reactor),
    )  # fmt: skip
    root.migrate = locks.before(stores.migrate)
    if shared is not None:
        shared.node.setServiceParent(root)
    names = local_names(config.server.domains, [config.sip.interface])
    sip = SipService(
        clock, sip_settings(config), directory, location, host_matcher(names),
        CallServices(media=media, records=records, live=live,
                     counters=shared.counters if shared is not None else None),
    )  # fmt: skip
    if shared is not None:
        shared.attach(sip, reactor)  # the SIP service runs under the cluster node service
    else:
        sip.setServiceParent(root)
    add_admin(root, config, reactor, pool, directory, location, records, live, sip,
              sqlite_directory.count_extensions)  # fmt: skip
    backups = backup_service(config, options["config"], reactor)
    if backups is not None:
        backups.setServiceParent(root)
    locks.setServiceParent(root)
    return root


def sip_settings(config: WardenConfig) -> SipSettings:
    """The SIP service's settings from the configuration."""
    sip, reg = config.sip, config.registrar
    return SipSettings(
        interface=sip.interface,
        port=sip.port,
        transports=tuple(sip.transports),
        max_message_bytes=sip.max_message_bytes,
        udp_receive_buffer=sip.udp_receive_buffer,
        tcp_idle_timeout=sip.tcp_idle_timeout,
        tcp_message_timeout=sip.tcp_message_timeout,
        tcp_connections_per_ip=sip.tcp_connections_per_ip,
        timers=TimerSettings(t1=sip.t1, t2=sip.t2, t4=sip.t4).lasting_ring(
            config.calls.ring_timeout
        ),
        realm=config.realm,
        node_id=config.node_id,
        algorithms=tuple(reg.digest_algorithms),
        expiry=ExpiryPolicy(reg.min_expires, reg.default_expires, reg.max_expires),
        nonce_lifetime=reg.nonce_lifetime,
        auth_fail_limit=reg.auth_fail_limit,
        auth_fail_extension_limit=reg.auth_fail_extension_limit,
        accept_rfc2069=reg.accept_rfc2069,
        server_header=sip.server_header,
        nat=sip.nat,
        auth_fail_window=reg.auth_fail_window,
        auth_block_seconds=reg.auth_block_seconds,
        ring_timeout=config.calls.ring_timeout,
        max_calls_per_extension=config.calls.max_calls_per_extension,
        qualify_interval=config.calls.qualify_interval,
        dialplan=config.dialplan.rules,
        dialog_token_lifetime=config.cluster.dialog_token_lifetime,
    )


def media_policy(config: WardenConfig) -> MediaPolicy:
    """The relay's media rules; this host's addresses are never a destination."""
    media = config.media
    own = [media_address(config), media.address, config.sip.interface, *local_addresses()]
    return MediaPolicy(media.latch, media.destinations, media.latch_packets, own)


def media_address(config: WardenConfig) -> str:
    """
    The address the relay advertises: ``[media] address``, else the SIP interface,
    else this host's first non-loopback IPv4 address (127.0.0.1 when it has none).
    """
    if config.media.address:
        return config.media.address
    if config.sip.interface and config.sip.interface not in ("0.0.0.0", "::"):
        return config.sip.interface
    candidates = sorted(a for a in local_addresses() if "." in a and not a.startswith("127."))
    return candidates[0] if candidates else "127.0.0.1"
