"""
The composition root: L{build_server} builds the whole PBX once, the store
first and then every enabled plugin in order (L{warden.plugin}), each object with
its final collaborators; L{WardenService} runs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Protocol, cast

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface.interface import InterfaceClass

from warden import fips
from warden.admin.drain import DrainController
from warden.config import WardenConfig
from warden.errors import ConfigError, StoreError
from warden.interfaces import (
    ICallRecordStore,
    IDirectory,
    IDurableLocation,
    ILiveCalls,
    IMediaRelay,
    IWardenPlugin,
    IWardenReactor,
)
from warden.plugin import BuildContext
from warden.process import calm_collector, process_exit
from warden.rtp.endpoint import ListenUDP
from warden.runlock import RunLocks, run_locks
from warden.store.backend import Stores, open_stores
from warden.store.live import CoalescingLiveCalls
from warden.store.snapshot import SnapshotDirectory
from warden.store.spool import SpooledCallRecordStore, default_spool_path, fsync_in_thread


@attrs.frozen
class StoreParts:
    """
    A store already built (in memory: tests, benchmarks), as the plugins see it
    (L{warden.plugin.CORE_PARTS}); a plugin may still replace ``location`` and
    ``live`` (the cluster plugin does, with Redis).
    """

    directory: IDirectory
    location: IDurableLocation
    records: ICallRecordStore
    live: ILiveCalls


class StoreLifecycle(Protocol):
    """How Warden makes its store ready before the plugins start, and closes it."""

    def prepare(self) -> Deferred[int]:
        """Make the store ready (migrations, loading); fire with the bindings restored."""

    def close(self) -> Deferred[None]:
        """Write what is pending and close, once every plugin has stopped."""


@attrs.frozen
class DatabaseLifecycle:
    """
    The database's: migrations, the extension snapshot, the bindings, the spooled
    call records and the batched live-call writes.

    Attributes:
        migrate: applies pending schema migrations (once the run locks are held).
        directory: the extension snapshot.
        location: the bindings (the database's, or the cluster's in Redis).
        records: the spooled call records.
        live: the batching live-call writer.
        node_id: this node's name (its old live calls are cleared at start).
        clock: bounds the flushes at stop.
        close_pool: closes the database's connection pool (last).
    """

    log = Logger()

    migrate: Callable[[], Deferred[list[str]]]
    directory: SnapshotDirectory
    location: IDurableLocation
    records: SpooledCallRecordStore
    live: CoalescingLiveCalls
    node_id: str
    clock: IReactorTime
    close_pool: Callable[[], None]

    def prepare(self) -> Deferred[int]:
        """Migrate, load the extensions and bindings, replay the spool."""
        return Deferred.fromCoroutine(self._prepare())

    async def _prepare(self) -> int:
        await self.migrate()
        extensions = await self.directory.load()
        self.directory.start()
        self.log.info("{count} extensions loaded", count=extensions)
        loaded = await self.location.load()
        replayed = await self.records.recover()
        if replayed:
            self.log.info("Replayed {count} call records from the spool", count=replayed)
        await self.live.clear_node(self.node_id)
        return loaded

    def close(self) -> Deferred[None]:
        """Flush the bindings, live calls and call records, then close the pool."""
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        self.directory.stop()
        await self.location.close()
        try:
            await self.live.flush().addTimeout(5, self.clock)
        except Exception as e:
            self.log.warn("Live-call summaries not written at shutdown: {error}", error=e)
        try:
            await self.records.flush().addTimeout(10, self.clock)
        except defer.TimeoutError:
            depth = self.records.spool_depth
            self.log.warn("Call records left in the spool: {depth}", depth=depth)
        self.records.close()
        self.close_pool()


@attrs.frozen
class PreparedLifecycle:
    """A store built ready (L{StoreParts}): only its bindings are loaded and closed."""

    location: IDurableLocation

    def prepare(self) -> Deferred[int]:
        """Load the bindings."""
        return self.location.load()

    def close(self) -> Deferred[None]:
        """Close the bindings."""
        return self.location.close()


class WardenService(service.MultiService):
    """
    The whole PBX: prepares the store (migrations, loading bindings), then starts
    its children (the plugins' services); on stop, drains calls, stops them and
    closes the store.

    Args:
        store: prepares the store at start and closes it at stop.
        media: the media relay, closed at stop (None without one).
        exit: ends the process with a status (L{warden.process}).
        drain: SIGTERM drains calls through it first (None: no drain).
    """

    log = Logger()

    def __init__(
        self,
        store: StoreLifecycle,
        media: IMediaRelay | None,
        *,
        exit: Callable[[int], None],
        drain: DrainController | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.store = store
        self._media = media
        self._exit = exit
        self.drain = drain

    def startService(self) -> None:
        """Prepare the store, then start listening; a failure stops Warden."""
        service.Service.startService(self)  # type: ignore[no-untyped-call]
        self.store.prepare().addCallbacks(self._ready, self._failed)

    def _ready(self, loaded: int) -> None:
        self.log.info("Store ready; {count} bindings restored", count=loaded)
        calm_collector()  # everything loaded so far lives as long as the process
        for child in self:
            child.startService()

    def _failed(self, failure: Failure) -> None:
        """
        Stop with exit status 1. A store that cannot be used (unreachable, or a
        schema newer than this code after a rollback) is one line naming the
        problem; anything else is a bug, logged with its traceback.
        """
        if failure.check(StoreError):  # type: ignore[no-untyped-call]
            self.log.critical("Warden could not start: {error}", error=str(failure.value))
        else:
            self.log.failure("Warden could not start", failure)
        self._exit(1)

    def stopService(self) -> Deferred[None]:
        """Drain calls, stop children (flushing bindings), then close the store."""
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.drain is not None:
            await self.drain.for_shutdown()
        await defer.maybeDeferred(super().stopService)
        await self.store.close()
        if self._media is not None:
            self._media.close()


def warden_reactor(reactor: object) -> IWardenReactor:
    """
    ``reactor`` as L{IWardenReactor}, once it is checked to provide each of
    the reactor interfaces that one gathers.

    Raises:
        TypeError: ``reactor`` lacks one (named).
    """
    for interface in IWardenReactor.__bases__:
        if not cast(InterfaceClass, interface).providedBy(reactor):
            raise TypeError(f"{type(reactor).__name__} does not provide {interface.__name__}")
    return cast(IWardenReactor, reactor)


def build_server(
    reactor: IWardenReactor,
    config: WardenConfig,
    plugins: Sequence[IWardenPlugin],
    config_path: str | None = None,
    *,
    store: StoreParts | None = None,
    media: IMediaRelay | None = None,
    features: Sequence[object] = (),
    listen_udp: ListenUDP | None = None,
) -> WardenService:
    """
    Build Warden: the store's parts, then each of ``plugins`` (in the order
    L{warden.plugin.enabled_plugins} gives) with the parts it needs, then the
    root service over them all. First it reports the FIPS state of the OpenSSL
    in use (L{warden.fips.report}).

    Args:
        reactor: what everything runs on.
        config: the whole configuration.
        plugins: the enabled plugins, in build order.
        config_path: the configuration file (None: the defaults).
        store: a store built already (in memory); None opens ``[store] url``
            behind the run locks (L{warden.runlock}), with the extension
            snapshot, the call-record spool and batched live-call writes.
        media: a media relay provided as ``media`` before any plugin (a
            relay on a fake network); None: a plugin provides it.
        features: feature objects that are not installed plugins (call hooks,
            local applications in tests): each counts as a provider of the
            interfaces it provides, after the enabled plugins.
        listen_udp: binds media endpoints' UDP sockets (on a fake network);
            None: real sockets on ``reactor``.

    Raises:
        warden.runlock.LockFailed: a restore holds the data directory.
        ConfigError: a plugin refused its configuration (naming ``config_path``).
    """
    fips.report(config.security.fips)
    parts: dict[str, Callable[[], object]]
    if store is None:
        database = _open_database(reactor, config)
        parts = database.parts
    else:
        database = None
        parts = {
            "directory": lambda: store.directory,
            "location": lambda: store.location,
            "records": lambda: store.records,
            "live": lambda: store.live,
        }
    if media is not None:
        parts["media"] = lambda: media
    context = BuildContext(
        reactor, config, config_path, parts, plugins, features=features, listen_udp=listen_udp
    )
    for plugin in plugins:
        try:
            plugin.make(context)
        except ConfigError as e:  # a plugin's check of its section: name the file too
            if e.filename is not None or config_path is None:
                raise
            raise ConfigError(e.path, e.problem, config_path) from None
    location = context.need("location", IDurableLocation)
    lifecycle: StoreLifecycle
    if database is None:
        lifecycle = PreparedLifecycle(location)
    else:
        lifecycle = database.lifecycle(location, context.need("live", CoalescingLiveCalls))
    root = WardenService(
        lifecycle,
        context.optional("media", IMediaRelay),
        exit=process_exit(reactor),
        drain=context.optional("drain", DrainController),
    )
    for child, parent in context.services:
        child.setServiceParent(root if parent is None else parent)  # type: ignore[no-untyped-call]
    if database is not None:
        database.locks.setServiceParent(root)  # type: ignore[no-untyped-call]
    return root


@attrs.frozen
class _Database:
    """``[store] url`` opened behind the run locks, and the parts built on it."""

    reactor: IWardenReactor
    config: WardenConfig
    locks: RunLocks
    stores: Stores
    directory: SnapshotDirectory
    records: SpooledCallRecordStore

    @property
    def parts(self) -> dict[str, Callable[[], object]]:
        """The core's parts (L{warden.plugin.CORE_PARTS}), each built on first need."""
        stores = self.stores
        return {
            "stores": lambda: stores,
            "directory": lambda: self.directory,
            "records": lambda: self.records,
            "location": lambda: stores.location,
            # A batch every 0.5 s, not a write per change.
            "live": lambda: CoalescingLiveCalls(stores.live, self.reactor),
        }

    def lifecycle(
        self, location: IDurableLocation, live: CoalescingLiveCalls
    ) -> DatabaseLifecycle:
        """How Warden prepares and closes this database, with the final parts."""
        return DatabaseLifecycle(
            migrate=self.locks.before(self.stores.migrate),
            directory=self.directory,
            location=location,
            records=self.records,
            live=live,
            node_id=self.config.node_id,
            clock=self.reactor,
            close_pool=self.stores.close,
        )


def spool_path(config: WardenConfig) -> str:
    """
    The call-record spool: each SIP worker process (L{warden.workers}) has its
    own, next to the single process's (``cdr-spool.jsonl``), replayed by the
    worker of the same number.
    """
    path = default_spool_path(config.server.data_dir)
    if config.worker < 0:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}.worker{config.worker}{ext}"


def _open_database(reactor: IWardenReactor, config: WardenConfig) -> _Database:
    locks = run_locks(config, reactor)
    # [store] url: SQLite or PostgreSQL (warden.store.backend)
    stores = open_stores(
        config.store_url, reactor, config.store.password_file, config.store.pool_size
    )
    directory = SnapshotDirectory(
        stores.directory, reactor, config.store.directory_cache_seconds, stores.data_version
    )
    records = SpooledCallRecordStore(
        stores.records,
        reactor,
        spool_path(config),
        sync=fsync_in_thread(reactor),
    )
    return _Database(reactor, config, locks, stores, directory, records)
