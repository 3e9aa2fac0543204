"""
Shared, short-lived state in Redis (through txredisapi): registrar bindings
(L{ILocationService}) and live-call summaries (L{ILiveCalls}), for several
Warden nodes serving one PBX; the connection and its command timeout
(L{RedisState}). Call and authentication-failure counters are in
L{warden.store.redis_counters}.

Every key lives under ``warden:<cluster>:`` so several clusters can share one
Redis. Layout:

- ``loc:<aor>``: hash, contact key -> binding (JSON); its TTL follows the latest
  expiry of the AOR's bindings (RFC 3261 §10.3: TTL = expiry).
- ``loc-expiry``: sorted set of ``<aor>\\n<key>`` scored by ``expires_at``, for
  ``expire``, ``count`` and ``all_bindings`` without scanning the key space.
- ``call:<call_id>``: a live-call summary (JSON) with a TTL, so the calls of a
  node that died vanish by themselves; ``calls``: sorted set of call_ids scored
  by ``started_at`` (ties ordered by call_id, as ``ILiveCalls.list`` wants).
- ``node:<node_id>``: a node's heartbeat (its start time), with a TTL.

Changes that touch several keys run as Lua scripts, so they are atomic. Every
command is bounded by a timeout on the injected clock: when Redis is down or
slow the caller gets L{StateUnavailable} instead of waiting, and the SIP layer
answers 503 with Retry-After. txredisapi reconnects by itself; the next command
after Redis returns succeeds.

Replies keep their type (``convertNumbers=False``): numbers are parsed here.
The commands of the registrar's hot path take the short way of
L{warden.store.redis_wire}: packed once, written straight to a pooled
connection, scripts run by SHA-1.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from prometheus_client import Counter, Gauge, Histogram
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.errors import StaleBindings, StateUnavailable
from warden.interfaces import IDurableLocation, IGuardedLocation, ILiveCalls
from warden.model import Binding, LiveCall
from warden.store.binding_json import BindingTexts, binding_from_json, binding_json
from warden.store.redis_wire import DirectSender, Script, direct_protocol, pack_command
from warden.store.state_url import PASSWORD_ENV, StateURL, StateURLError, parse_state_url
from warden.store.tables import extension_order

__all__ = [
    "RedisLiveCalls",
    "RedisLocationService",
    "RedisState",
    "StateURL",
    "StateURLError",
    "connect_state",
    "parse_state_url",
]

STATE_ERRORS = Counter(
    "warden_state_errors_total",
    "Shared-state (Redis) commands that failed or timed out",
    ["operation"],
)
STATE_SECONDS = Histogram(
    "warden_state_command_seconds", "Shared-state (Redis) command latency", ["operation"]
)
STATE_UP = Gauge("warden_state_up", "1 while the shared state (Redis) answers, else 0")


# Seconds between attempts to reconnect to a Redis that went away, at most.
RECONNECT_MAX_DELAY = 1.0


class RedisState:
    """
    One Redis database shared by the nodes of a cluster: a txredisapi connection
    handler, the key prefix and the command timeout.

    Args:
        client: a txredisapi connection handler (lazy: it reconnects by itself).
        clock: schedules the timeouts.
        cluster: the cluster name; keys start with ``warden:<cluster>:``.
        timeout: seconds a command may take before it fails with StateUnavailable.
    """

    log = Logger()

    def __init__(self, client: Any, clock: IReactorTime, cluster: str, timeout: float) -> None:
        self.client = client
        self.clock = clock
        self.prefix = f"warden:{cluster}:"
        self.timeout = timeout
        self.failures = 0
        self.up = True
        STATE_UP.set(1)
        # Commands go straight to a ready connection when the client has a
        # pool of them (see warden.store.redis_wire); a fake client has none.
        self._direct = DirectSender(getattr(client, "_factory", None))
        self._scripts: dict[str, Script] = {}
        self._latency: dict[str, Any] = {}

    def key(self, *parts: str) -> str:
        """The full name of a key: the prefix, then ``parts`` joined by ``:``."""
        return self.prefix + ":".join(parts)

    def call(self, operation: str, command: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """
        Run ``command()`` (one txredisapi call) within the timeout.

        Fires with its reply; fails with L{StateUnavailable} naming ``operation``
        when Redis does not answer in time, the connection fails, or Redis answers
        with an error. A reply arriving after the timeout is dropped.
        """
        result: Deferred[Any] = Deferred()
        started = self.clock.seconds()

        def expired() -> None:
            self._failed(result, operation, f"no answer within {self.timeout:g} s")

        def deadline() -> None:
            # Decide on the next reactor turn, after the reactor has read its
            # sockets: a reply that arrived in time while the reactor was busy
            # with other work still counts.
            self.clock.callLater(0, expired)

        timer: IDelayedCall = self.clock.callLater(self.timeout, deadline)

        def answered(reply: Any) -> None:
            if result.called:
                return
            if timer.active():
                timer.cancel()
            if isinstance(reply, Failure):
                self._failed(result, operation, reply.getErrorMessage())
            else:
                latency = self._latency.get(operation)
                if latency is None:
                    latency = self._latency[operation] = STATE_SECONDS.labels(operation)
                latency.observe(self.clock.seconds() - started)
                self._recovered()
                result.callback(reply)

        try:
            d = command()
        except Exception:
            d = defer.fail()
        d.addBoth(answered)
        return result

    def _failed(self, result: Deferred[Any], operation: str, why: str) -> None:
        if result.called:
            return
        self.failures += 1
        STATE_ERRORS.labels(operation).inc()
        if self.up:
            # Logged once per outage; each failed command is counted.
            self.up = False
            STATE_UP.set(0)
            self.log.warn("Redis unavailable ({operation}: {why})", operation=operation, why=why)
        result.errback(StateUnavailable(f"Redis {operation}: {why}"))

    def _recovered(self) -> None:
        if not self.up:
            self.up = True
            STATE_UP.set(1)
            self.log.info("Redis answers again")

    def command(self, operation: str, *args: str) -> Deferred[Any]:
        """Run the Redis command ``args`` (name first) within the timeout."""

        def send() -> Deferred[Any]:
            conn = self._direct.connection()
            if conn is None:
                return self.client.execute_command(*args)  # type: ignore[no-any-return]
            return conn.send(pack_command(args))

        return self.call(operation, send)

    def script(
        self, operation: str, source: str, keys: list[str], args: list[Any]
    ) -> Deferred[Any]:
        """Run the Lua ``source`` (as EVALSHA, by its SHA-1) within the timeout."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = Script.of(source)
        text = [a if isinstance(a, str) else str(a) for a in args]

        def send() -> Deferred[Any]:
            if self._direct.connection() is None:
                return self.client.eval(source, keys, text)  # type: ignore[no-any-return]
            return self._direct.script(script, keys, text)

        return self.call(operation, send)

    def ping(self) -> Deferred[None]:
        """Fire once Redis answers PING; fail with StateUnavailable otherwise."""
        return self.call("ping", self.client.ping).addCallback(lambda _: None)

    def close(self) -> Deferred[None]:
        """Close the connections."""
        d: Deferred[Any] = defer.maybeDeferred(self.client.disconnect)
        return d.addBoth(lambda _: None)


def connect_state(
    url: str, clock: IReactorTime, cluster: str, timeout: float, poolsize: int = 1
) -> RedisState:
    """
    A L{RedisState} for ``url`` (see L{parse_state_url}); the password, if any,
    comes from ``$WARDEN_STATE_PASSWORD``. Connections are made in the background
    and remade after a failure.

    One connection is enough: txredisapi pipelines every non-blocking command on
    the first connection of its pool, whatever the pool's size.

    Raises:
        StateURLError: the URL is unusable.
    """
    import txredisapi

    parsed = parse_state_url(url)
    password = os.environ.get(PASSWORD_ENV) or None
    # Database 0 is where a connection starts: no SELECT round trip needed.
    dbid = parsed.db or None
    options: dict[str, Any] = {"password": password, "convertNumbers": False}
    if parsed.sentinel:
        sentinel = _sentinel_class(txredisapi)(
            list(parsed.hosts), connectTimeout=timeout, password=password, convertNumbers=False
        )
        sentinel.discovery_timeout = timeout
        master = sentinel.master_for(parsed.master, dbid=dbid, poolsize=poolsize, **options)
        client: Any = _SentinelClient(master, sentinel)
    else:
        host, port = parsed.hosts[0]
        client = txredisapi.lazyConnectionPool(
            host, port, dbid=dbid, poolsize=poolsize, reconnect=True, connectTimeout=timeout,
            **options,
        )  # fmt: skip
    factory = getattr(client, "_factory", None)
    if factory is not None:
        # Connections are made on a later reactor turn: every one of them
        # accepts the direct commands of RedisState.
        factory.protocol = direct_protocol(factory.protocol)
        # Retry a lost connection at least this often, so service resumes soon
        # after Redis does (txredisapi's default backs off to 10 s).
        factory.maxDelay = RECONNECT_MAX_DELAY
    return RedisState(client, clock, cluster, timeout)


def _sentinel_class(txredisapi: Any) -> Any:
    """
    txredisapi's Sentinel, with master discovery whose timeout timers are
    cancelled once they are moot (an answer, or ``disconnect``), so closing the
    state leaves nothing scheduled.
    """

    class Sentinel(txredisapi.Sentinel):  # type: ignore[misc]
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self._timers: set[IDelayedCall] = set()
            self._closed = False

        def discover_master(self, service_name: str) -> Deferred[tuple[str, int]]:
            result: Deferred[tuple[str, int]] = Deferred()
            if self._closed:
                result.errback(txredisapi.MasterNotFoundError("Sentinel connections closed"))
                return result

            def on_response(response: dict[str, Any]) -> None:
                state = response.get(service_name)
                if not result.called and state and self.check_master_state(state):
                    finish()
                    result.callback((state["ip"], int(state["port"])))

            def on_timeout() -> None:
                self._timers.discard(timer)
                if not result.called:
                    result.errback(
                        txredisapi.MasterNotFoundError(f"No master found for {service_name}")
                    )

            def finish() -> None:
                if timer in self._timers:
                    self._timers.discard(timer)
                    timer.cancel()

            from twisted.internet import reactor

            timer = reactor.callLater(self.discovery_timeout, on_timeout)
            self._timers.add(timer)
            for sentinel in self.sentinels:
                sentinel.sentinel_masters().addCallbacks(on_response, lambda _: None)
            return result

        def disconnect(self) -> Deferred[Any]:
            self._closed = True
            for timer in list(self._timers):
                timer.cancel()
            self._timers.clear()
            return super().disconnect()  # type: ignore[no-any-return]

    return Sentinel


class _SentinelClient:
    """The master's connection handler, which also closes the Sentinel connections."""

    def __init__(self, master: Any, sentinel: Any) -> None:
        self._master = master
        self._sentinel = sentinel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._master, name)

    def disconnect(self) -> Deferred[Any]:
        return defer.gatherResults(
            [
                defer.maybeDeferred(self._master.disconnect),
                defer.maybeDeferred(self._sentinel.disconnect),
            ],
            consumeErrors=True,
        )


# -- bindings ------------------------------------------------------------------------

# ARGV[4], when not empty, guards the write: the SHA-1 of the hash's values as
# the writer last saw them, joined by newlines; if they differ now, nothing is
# written and the reply is 'stale' followed by the values.
_APPLY = """
local aor, now, nrem, guard = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local h, z = KEYS[1], KEYS[2]
if guard ~= '' then
  local held = redis.call('HVALS', h)
  if redis.sha1hex(table.concat(held, '\\n')) ~= guard then
    table.insert(held, 1, 'stale')
    return held
  end
end
local i = 5
for _ = 1, nrem do
  redis.call('HDEL', h, ARGV[i])
  redis.call('ZREM', z, aor .. '\\n' .. ARGV[i])
  i = i + 1
end
while i <= #ARGV do
  redis.call('HSET', h, ARGV[i], ARGV[i + 2])
  redis.call('ZADD', z, ARGV[i + 1], aor .. '\\n' .. ARGV[i])
  i = i + 3
end
local latest = nil
for _, k in ipairs(redis.call('HKEYS', h)) do
  local s = tonumber(redis.call('ZSCORE', z, aor .. '\\n' .. k))
  if s and (latest == nil or s > latest) then latest = s end
end
if latest then
  redis.call('PEXPIRE', h, math.max(1000, math.ceil((latest - now) * 1000) + 1000))
end
return redis.call('HVALS', h)
"""

_EXPIRE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, m in ipairs(gone) do
  local sep = string.find(m, '\\n', 1, true)
  redis.call('HDEL', ARGV[2] .. string.sub(m, 1, sep - 1), string.sub(m, sep + 1))
end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
return #gone
"""

_ALL = """
local found = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')) do
  local sep = string.find(m, '\\n', 1, true)
  local v = redis.call('HGET', ARGV[2] .. string.sub(m, 1, sep - 1), string.sub(m, sep + 1))
  if v then found[#found + 1] = v end
end
return found
"""

_REMOVE_AOR = """
local keys = redis.call('HKEYS', KEYS[1])
for _, k in ipairs(keys) do redis.call('ZREM', KEYS[2], ARGV[1] .. '\\n' .. k) end
redis.call('DEL', KEYS[1])
return #keys
"""


def _number(text: float) -> str:
    """A float as Redis reads it back exactly (``repr`` round-trips)."""
    if not math.isfinite(text):
        raise ValueError(f"not a finite time: {text!r}")
    return repr(float(text))


@implementer(IDurableLocation, IGuardedLocation)
class RedisLocationService:
    """
    Bindings in Redis, shared by every node of the cluster.

    Each AOR is one hash whose TTL follows its latest binding, so Redis forgets
    bindings nobody refreshes even if no node runs ``expire``; reads still
    compare ``expires_at`` with ``now``, so a binding is gone exactly at expiry.
    Writes are acknowledged by Redis before the Deferred fires, so ``flush`` has
    nothing to wait for.
    """

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._expiry = state.key("loc-expiry")
        # The bindings an apply left, while its Deferred's callbacks run: the
        # registrar's read right after its write needs no second round trip.
        self._fresh: dict[str, list[Binding]] = {}
        self._texts = BindingTexts()

    def _hash(self, aor: str) -> str:
        return self._state.key("loc", aor)

    def bindings_for(self, aor: str, now: float) -> Deferred[list[Binding]]:
        """Fire with the unexpired bindings of ``aor``."""
        fresh = self._fresh.get(aor)
        if fresh is not None:
            return defer.succeed([b for b in fresh if b.expires_at > now])

        def decode(reply: list[str]) -> list[Binding]:
            found = self._texts.decode(aor, reply, {})
            return [b for b in found if b.expires_at > now]

        return self._state.command("bindings_for", "HVALS", self._hash(aor)).addCallback(decode)

    def view(self, aor: str, now: float) -> list[Binding] | None:
        """The bindings of ``aor`` this node last read or wrote, unchecked; None if none."""
        last = self._texts.last(aor)
        if last is None:
            return None
        return [b for b in last[1] if b.expires_at > now]

    def apply(
        self, aor: str, upserts: Sequence[Binding], removals: Sequence[str]
    ) -> Deferred[None]:
        """Remove ``removals`` (keys), then add or replace ``upserts``, atomically."""
        return self._apply(aor, upserts, removals, "")

    def apply_unchanged(
        self, aor: str, upserts: Sequence[Binding], removals: Sequence[str]
    ) -> Deferred[None]:
        """
        L{apply}, in the same round trip checking that ``aor``'s hash still
        holds what L{view} saw; fails with L{StaleBindings} otherwise.
        """
        last = self._texts.last(aor)
        if last is None:
            return defer.fail(StaleBindings(f"no view of AOR {aor!r}"))
        held = "\n".join(last[0]).encode()
        return self._apply(
            aor, upserts, removals, hashlib.sha1(held, usedforsecurity=False).hexdigest()
        )

    def _apply(
        self, aor: str, upserts: Sequence[Binding], removals: Sequence[str], guard: str
    ) -> Deferred[None]:
        if "\n" in aor or any(b.aor != aor for b in upserts):
            return defer.fail(ValueError(f"every binding must belong to AOR {aor!r}"))
        args: list[Any] = [aor, _number(self._state.clock.seconds()), len(removals), guard]
        args.extend(removals)
        written: dict[str, Binding] = {}
        for b in upserts:
            text = binding_json(b)
            written[text] = b
            args.extend([b.key, _number(b.expires_at), text])
        d = self._state.script("apply", _APPLY, [self._hash(aor), self._expiry], args)
        result: Deferred[None] = Deferred()

        def applied(reply: list[str]) -> None:
            if reply and reply[0] == "stale":
                self._texts.decode(aor, reply[1:], {})
                result.errback(StaleBindings(f"the bindings of AOR {aor!r} changed"))
                return
            self._fresh[aor] = self._texts.decode(aor, reply, written)
            try:
                result.callback(None)
            finally:
                del self._fresh[aor]

        d.addCallbacks(applied, result.errback)
        return result

    def remove_aor(self, aor: str) -> Deferred[int]:
        """Remove every binding of ``aor``; fire with how many there were."""
        keys = [self._hash(aor), self._expiry]
        self._texts.forget(aor)
        return self._state.script("remove_aor", _REMOVE_AOR, keys, [aor]).addCallback(int)

    def expire(self, now: float) -> Deferred[int]:
        """Remove bindings with ``expires_at <= now``; fire with how many."""
        args = [_number(now), self._state.key("loc", "")]
        return self._state.script("expire", _EXPIRE, [self._expiry], args).addCallback(int)

    def all_bindings(self, now: float) -> Deferred[list[Binding]]:
        """Fire with every unexpired binding, ordered by AOR then key."""

        def decode(reply: list[str]) -> list[Binding]:
            found = [binding_from_json(v) for v in reply]
            return sorted(
                (b for b in found if b.expires_at > now),
                key=lambda b: (extension_order(b.aor), b.key),
            )

        args = [_number(now), self._state.key("loc", "")]
        d = self._state.script("all_bindings", _ALL, [self._expiry], args)
        return d.addCallback(decode)

    def count(self, now: float) -> Deferred[int]:
        """Fire with the number of unexpired bindings."""
        lower = "(" + _number(now)
        return self._state.command("count", "ZCOUNT", self._expiry, lower, "+inf").addCallback(int)

    def flush(self) -> Deferred[None]:
        """Fire at once: every write was acknowledged by Redis already."""
        return defer.succeed(None)

    def load(self) -> Deferred[int]:
        """Start-up: fire with the number of bindings Redis holds (checks it answers)."""
        return self.count(self._state.clock.seconds())

    def close(self) -> Deferred[None]:
        """Nothing is pending: every write was acknowledged."""
        return defer.succeed(None)


# -- live calls ------------------------------------------------------------------------

_PUBLISH = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 0
"""

_LIST = """
local found = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then found[#found + 1] = v else redis.call('ZREM', KEYS[1], id) end
end
return found
"""

_CLEAR_NODE = """
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('GET', ARGV[1] .. id)
  if not v then
    redis.call('ZREM', KEYS[1], id)
  elseif cjson.decode(v)['node_id'] == ARGV[2] then
    redis.call('DEL', ARGV[1] .. id)
    redis.call('ZREM', KEYS[1], id)
    n = n + 1
  end
end
return n
"""

_REMOVE_CALL = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
"""


_LIVE_FIELDS = frozenset(f.name for f in attrs.fields(LiveCall))


@implementer(ILiveCalls)
class RedisLiveCalls:
    """
    Live-call summaries in Redis, so ``wardenctl calls`` on any node sees the
    calls of every node.

    Each summary expires ``ttl`` seconds after it was last published: the node
    handling a call republishes answered calls every few seconds, so the calls of
    a node that died disappear by themselves. ``ttl`` must exceed the ring
    timeout (ringing calls are published once).
    """

    def __init__(self, state: RedisState, ttl: float = 120.0) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be > 0, got {ttl}")
        self._state = state
        self._ttl_ms = int(ttl * 1000)
        self._index = state.key("calls")
        self._call_prefix = state.key("call", "")

    def publish(self, call: LiveCall) -> Deferred[None]:
        """Add or replace the summary of ``call.call_id``."""
        text = json.dumps(attrs.asdict(call), separators=(",", ":"))
        keys = [self._call_prefix + call.call_id, self._index]
        args = [text, self._ttl_ms, _number(call.started_at), call.call_id]
        return self._state.script("publish", _PUBLISH, keys, args).addCallback(lambda _: None)

    def remove(self, call_id: str) -> Deferred[None]:
        """Forget the summary of ``call_id``, if any."""
        keys = [self._call_prefix + call_id, self._index]
        d = self._state.script("remove_call", _REMOVE_CALL, keys, [call_id])
        return d.addCallback(lambda _: None)

    def list(self) -> Deferred[builtins.list[LiveCall]]:
        """Fire with every summary, ordered by ``(started_at, call_id)``."""

        def decode(reply: builtins.list[str]) -> builtins.list[LiveCall]:
            # Fields this version does not know (a newer node's) are left out,
            # so nodes of two versions can share the summaries while upgrading.
            calls = [
                LiveCall(**{k: v for k, v in json.loads(text).items() if k in _LIVE_FIELDS})
                for text in reply
            ]
            return sorted(calls, key=lambda c: (c.started_at, c.call_id))

        d = self._state.script("list_calls", _LIST, [self._index], [self._call_prefix])
        return d.addCallback(decode)

    def clear_node(self, node_id: str) -> Deferred[int]:
        """Forget the summaries of ``node_id``; fire with how many there were."""
        args = [self._call_prefix, node_id]
        return self._state.script("clear_node", _CLEAR_NODE, [self._index], args).addCallback(int)
