"""
The composition root: L{build_server} builds the whole PBX once, the store
first and then every enabled plugin in order (L{warden.plugin}), each object with
its final collaborators; L{WardenService} runs it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import cast

from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface.interface import InterfaceClass

from warden.admin.drain import DrainController
from warden.config import WardenConfig
from warden.errors import StoreError
from warden.interfaces import IDurableLocation, IMediaRelay, IWardenPlugin, IWardenReactor
from warden.plugin import BuildContext
from warden.process import process_exit
from warden.runlock import run_locks
from warden.store.backend import open_stores
from warden.store.live import CoalescingLiveCalls
from warden.store.snapshot import SnapshotDirectory
from warden.store.spool import SpooledCallRecordStore, default_spool_path, fsync_in_thread


class WardenService(service.MultiService):
    """
    The whole PBX: prepares the store (migrations, loading bindings), then starts
    its children (the plugins' services); on stop, drains calls, stops them and
    closes the store.

    Args:
        close_store: closes the database's connection pool (last).
        location: the bindings (the database's, or the cluster's in Redis).
        directory: the extension snapshot.
        clock: bounds the flushes at stop.
        records: the spooled call records.
        live: the batching live-call writer.
        media: the media relay, closed at stop (None without one).
        node_id: this node's name.
        migrate: applies pending schema migrations.
        exit: ends the process with a status (L{warden.process}).
        drain: SIGTERM drains calls through it first (None: no drain).
    """

    log = Logger()

    def __init__(
        self,
        close_store: Callable[[], None],
        location: IDurableLocation,
        directory: SnapshotDirectory,
        clock: IReactorTime,
        records: SpooledCallRecordStore,
        live: CoalescingLiveCalls,
        media: IMediaRelay | None,
        node_id: str,
        *,
        migrate: Callable[[], Deferred[list[str]]],
        exit: Callable[[int], None],
        drain: DrainController | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._exit = exit
        self._close_store = close_store
        self._location = location
        self._directory = directory
        self._clock = clock
        self._records = records
        self._live = live
        self._media = media
        self._node_id = node_id
        self.drain = drain
        self.migrate = migrate

    def startService(self) -> None:
        """Migrate and load, then start listening; a failure stops Warden."""
        service.Service.startService(self)  # type: ignore[no-untyped-call]
        d = Deferred.fromCoroutine(self._prepare())
        d.addCallbacks(self._ready, self._failed)

    async def _prepare(self) -> int:
        await self.migrate()
        extensions = await self._directory.load()
        self._directory.start()
        self.log.info("{count} extensions loaded", count=extensions)
        loaded = await self._location.load()
        replayed = await self._records.recover()
        if replayed:
            self.log.info("Replayed {count} call records from the spool", count=replayed)
        await self._live.clear_node(self._node_id)
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
        """Drain calls, stop children (flushing bindings), then close the database."""
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.drain is not None:
            await self.drain.for_shutdown()
        await defer.maybeDeferred(super().stopService)
        self._directory.stop()
        await self._location.close()
        try:
            await self._live.flush().addTimeout(5, self._clock)
        except Exception as e:
            self.log.warn("Live-call summaries not written at shutdown: {error}", error=e)
        try:
            await self._records.flush().addTimeout(10, self._clock)
        except defer.TimeoutError:
            depth = self._records.spool_depth
            self.log.warn("Call records left in the spool: {depth}", depth=depth)
        self._records.close()
        if self._media is not None:
            self._media.close()
        self._close_store()


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
) -> WardenService:
    """
    Build Warden: the store's parts, then each of ``plugins`` (in the order
    L{warden.plugin.enabled_plugins} gives) with the parts it needs, then the
    root service over them all.

    Raises:
        warden.runlock.LockFailed: a restore holds the data directory.
    """
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
        default_spool_path(config.server.data_dir),
        sync=fsync_in_thread(reactor),
    )
    context = BuildContext(
        reactor,
        config,
        config_path,
        {
            "stores": lambda: stores,
            "directory": lambda: directory,
            "records": lambda: records,
            "location": lambda: stores.location,
            # A batch every 0.5 s, not a write per change.
            "live": lambda: CoalescingLiveCalls(stores.live, reactor),
        },
        plugins,
    )
    for plugin in plugins:
        plugin.make(context)
    root = WardenService(
        stores.close,
        context.need("location", IDurableLocation),
        directory,
        reactor,
        records,
        context.need("live", CoalescingLiveCalls),
        context.optional("media", IMediaRelay),
        config.node_id,
        migrate=locks.before(stores.migrate),
        exit=process_exit(reactor),
        drain=context.optional("drain", DrainController),
    )
    for child, parent in context.services:
        child.setServiceParent(root if parent is None else parent)  # type: ignore[no-untyped-call]
    locks.setServiceParent(root)  # type: ignore[no-untyped-call]
    return root
