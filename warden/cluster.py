"""
Several Warden nodes serving one PBX: the shared state in Redis and each node's
heartbeat.

L{open_state} builds the Redis-backed stores from ``[state]`` and ``[cluster]``;
L{NodeService} keeps this node's heartbeat key (``warden:<cluster>:node:<id>``)
alive with a TTL of three intervals, so the other nodes (and operators, through
``wardenctl``) see which nodes are alive, and closes the Redis connections when
the node stops.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import attrs
from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from warden.config import WardenConfig
from warden.errors import StateUnavailable
from warden.sip.auth import NonceManager
from warden.sip.hop import NodeHop
from warden.sip.service import ClusterLink
from warden.store.redis import RedisLiveCalls, RedisLocationService, RedisState, connect_state
from warden.store.redis_counters import RedisAuthFailureCounter, RedisCallCounters, shared_secret

# A node counts as dead once its heartbeat is this many intervals old.
MISSED_HEARTBEATS = 3


@attrs.frozen
class NodeInfo:
    """
    A node's heartbeat, as other nodes and operators see it.

    Attributes:
        node_id: the node's name.
        sip: where it takes SIP (``host:port``).
        started_at: when it started (clock time).
        seen_at: its last heartbeat (clock time).
    """

    node_id: str
    sip: str
    started_at: float
    seen_at: float


@attrs.frozen
class SharedState:
    """
    The Redis-backed stores of one node, and how it joins the cluster: L{link}
    for its SIP service, then L{node_service} to run that service under.
    """

    state: RedisState
    location: RedisLocationService
    live: RedisLiveCalls
    counters: RedisCallCounters
    auth_failures: RedisAuthFailureCounter
    node_id: str
    #: Where other nodes reach this node's SIP, as configured (``host:port``).
    sip_address: str
    heartbeat_interval: float
    #: ``[cluster] path_mtu``: 0 when unknown.
    path_mtu: int = 0

    def link(self, connector: IReactorTCP) -> ClusterLink:
        """
        What the SIP service needs to be a member: it counts authentication
        failures cluster-wide, routes calls through the node holding a phone's
        flow (L{warden.sip.hop}) and sends large requests to other nodes over
        TCP opened with ``connector`` (L{warden.sip.node_streams}).
        """
        host = self.sip_address.rpartition(":")[0].strip("[]")

        def nodes() -> Deferred[dict[str, str]]:
            d = live_nodes(self.state)
            return d.addCallback(lambda found: {n.node_id: n.sip for n in found})

        return ClusterLink(
            auth_failures=self.auth_failures,
            connector=connector,
            path_mtu=self.path_mtu,
            local_host="" if host in ("0.0.0.0", "::") else host,
            live_nodes=nodes,
        )

    def node_service(
        self, nonces: NonceManager, hop: NodeHop, port: Callable[[], int]
    ) -> NodeService:
        """
        This node's heartbeat service, the parent of the SIP service whose
        ``nonces``, ``hop`` and bound ``port`` it shares with the cluster.
        """
        return NodeService(
            self.state, self.node_id, self.sip_address, self.heartbeat_interval,
            self.counters, nonces=nonces, hop=hop, port=port,
        )  # fmt: skip


def open_state(
    url: str,
    clock: IReactorTime,
    cluster: str,
    node_id: str,
    sip_address: str,
    timeout: float,
    heartbeat_interval: float,
    live_call_ttl: float,
    path_mtu: int = 0,
) -> SharedState:
    """
    Connect to the Redis at ``url`` (connections are made in the background) and
    build the stores and this node's heartbeat service on it.

    Raises:
        warden.store.state_url.StateURLError: the URL is unusable.
    """
    state = connect_state(url, clock, cluster, timeout)
    return SharedState(
        state=state,
        location=RedisLocationService(state),
        live=RedisLiveCalls(state, ttl=live_call_ttl),
        counters=RedisCallCounters(state, node_id),
        auth_failures=RedisAuthFailureCounter(state),
        node_id=node_id,
        sip_address=sip_address,
        heartbeat_interval=heartbeat_interval,
        path_mtu=path_mtu,
    )


def shared_state(config: WardenConfig, clock: IReactorTime) -> SharedState | None:
    """The Redis-backed state of ``config``'s ``[state] url``; None when it is ""."""
    if not config.state.url:
        return None
    sip_host = config.cluster.address or config.sip.interface or "0.0.0.0"
    return open_state(
        config.state.url,
        clock,
        config.cluster.name,
        config.node_id,
        f"{sip_host}:{config.sip.port}",
        config.state.timeout,
        config.state.heartbeat_interval,
        # Ringing calls are published once: their summaries must outlive the ring.
        live_call_ttl=max(60.0, 2 * config.calls.ring_timeout + 10.0),
        path_mtu=config.cluster.path_mtu,
    )


class NodeService(service.MultiService):
    """
    This node's membership of the cluster, and the parent of the SIP service.

    At start it forgets the calls it counted before (a restart ends them), gives
    ``nonces`` the cluster's nonce secret (so any node recognises a nonce another
    issued), starts its heartbeat every ``interval`` seconds, then its children.
    On stop: children first, then the heartbeat is removed and the Redis
    connections closed.
    """

    log = Logger()

    def __init__(
        self,
        state: RedisState,
        node_id: str,
        sip_address: str,
        interval: float,
        counters: RedisCallCounters | None = None,
        *,
        nonces: NonceManager | None = None,
        hop: NodeHop | None = None,
        port: Callable[[], int] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._state = state
        self._counters = counters
        self.node_id = node_id
        self._sip = sip_address
        self.interval = interval
        self.nonces = nonces
        #: Routing through other nodes (L{warden.sip.hop.NodeHop}): gets the
        #: cluster's secret at join and the live nodes after every heartbeat.
        self.hop = hop
        #: The SIP port actually bound, when it differs from the configured one.
        self.port = port
        self._started_at = 0.0
        self._loop = task.LoopingCall(self.beat)
        self._loop.clock = state.clock

    def _key(self, node_id: str) -> str:
        return self._state.key("node", node_id)

    @property
    def sip_address(self) -> str:
        """Where other nodes reach this node's SIP, as configured (``host:port``)."""
        return self._sip

    def startService(self) -> None:
        """Join the cluster, then start the children (the SIP service)."""
        service.Service.startService(self)  # type: ignore[no-untyped-call]
        self._started_at = self._state.clock.seconds()
        d = self.join()
        d.addErrback(lambda f: self.log.failure("Could not join the cluster cleanly", f))
        d.addCallback(lambda _: self._start_children())

    def _start_children(self) -> None:
        if not self.running:
            return
        self._loop.start(self.interval, now=True)
        for child in self:
            child.startService()

    def join(self) -> Deferred[None]:
        """Clear this node's old call counts and adopt the cluster's nonce secret."""
        return Deferred.fromCoroutine(self._join())

    async def _join(self) -> None:
        if self._counters is not None:
            cleared = await self._counters.clear_node(self.node_id)
            if cleared:
                self.log.info("Forgot {count} call counts of a previous run", count=cleared)
        if self.nonces is not None:
            secret = await shared_secret(self._state, "nonce", os.urandom(32))
            self.nonces.use_secret(secret)
        if self.hop is not None:
            secret = await shared_secret(self._state, "hop", os.urandom(32))
            self.hop.use_secret(secret)

    def beat(self) -> Deferred[None]:
        """Publish one heartbeat; a failure is logged by the state and retried next time."""
        now = self._state.clock.seconds()
        sip = self._sip
        if self.port is not None:
            sip = f"{sip.rpartition(':')[0]}:{self.port()}"
        info = NodeInfo(self.node_id, sip, self._started_at, now)
        text = json.dumps(attrs.asdict(info))
        ttl_ms = int(self.interval * MISSED_HEARTBEATS * 1000)
        keys = [self._key(self.node_id), self._state.key("nodes")]
        d = self._state.script("heartbeat", _BEAT, keys, [text, ttl_ms, self.node_id])
        if self.hop is not None:
            d.addCallback(lambda _: self.refresh_nodes())
        return d.addCallbacks(lambda _: None, _ignore_unavailable)

    def refresh_nodes(self) -> Deferred[None]:
        """Tell the hop (L{warden.sip.hop.NodeHop}) which nodes are alive now."""
        hop = self.hop
        assert hop is not None
        d = self.nodes()
        return d.addCallback(lambda nodes: hop.set_nodes({n.node_id: n.sip for n in nodes}))

    def stopService(self) -> Deferred[None]:
        """Stop the children, then the heartbeat (removed, best effort); close Redis."""
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await defer.maybeDeferred(super().stopService)
        if self._loop.running:
            self._loop.stop()
        try:
            await self._state.call(
                "node_leave", lambda: self._state.client.delete(self._key(self.node_id))
            )
        except StateUnavailable:
            pass
        await self._state.close()

    def nodes(self) -> Deferred[list[NodeInfo]]:
        """Fire with every node whose heartbeat is alive, ordered by node_id."""
        return live_nodes(self._state)


def _ignore_unavailable(failure: Failure) -> None:
    failure.trap(StateUnavailable)  # type: ignore[no-untyped-call]


_BEAT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 0
"""

_NODES = """
local found = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then found[#found + 1] = v else redis.call('SREM', KEYS[1], id) end
end
return found
"""


def live_nodes(state: RedisState) -> Deferred[list[NodeInfo]]:
    """Fire with every node of ``state``'s cluster whose heartbeat is alive, by node_id."""

    def decode(values: list[str]) -> list[NodeInfo]:
        found = [NodeInfo(**json.loads(v)) for v in values]
        return sorted(found, key=lambda n: n.node_id)

    d = state.script("nodes", _NODES, [state.key("nodes")], [state.key("node", "")])
    return d.addCallback(decode)
