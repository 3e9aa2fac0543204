"""
Counters shared by the nodes of a cluster, in Redis (L{warden.store.redis}):
concurrent calls per extension (L{ICallCounters}), failed authentications per
source (L{IAuthFailureCounter}), and the cluster's secrets (the nonce secret).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.interfaces import IAuthFailureCounter, ICallCounters
from warden.store.redis import RedisState

__all__ = ["RedisAuthFailureCounter", "RedisCallCounters", "shared_secret"]


# -- call counters ---------------------------------------------------------------------

# ARGV[1]: key prefix; ARGV[2]: this node. Counts of nodes without a heartbeat
# are dropped as they are met: a node that died holds no calls.
_COUNT_FUNCTION = """
local prefix, me = ARGV[1], ARGV[2]
local function current(number)
  local key = prefix .. 'active:' .. number
  local h = redis.call('HGETALL', key)
  local total = 0
  for i = 1, #h, 2 do
    if h[i] == me or redis.call('EXISTS', prefix .. 'node:' .. h[i]) == 1 then
      total = total + tonumber(h[i + 1])
    else
      redis.call('HDEL', key, h[i])
    end
  end
  return total
end
"""

_ACQUIRE = (
    _COUNT_FUNCTION
    + """
local limit = tonumber(ARGV[3])
for i = 4, #ARGV do
  if current(ARGV[i]) >= limit then return 0 end
end
for i = 4, #ARGV do
  redis.call('HINCRBY', prefix .. 'active:' .. ARGV[i], me, 1)
  redis.call('SADD', prefix .. 'active-by:' .. me, ARGV[i])
end
return 1
"""
)

_RELEASE = """
local prefix, me = ARGV[1], ARGV[2]
for i = 3, #ARGV do
  local key = prefix .. 'active:' .. ARGV[i]
  local n = tonumber(redis.call('HGET', key, me) or '0')
  if n > 1 then redis.call('HINCRBY', key, me, -1) else redis.call('HDEL', key, me) end
end
return 0
"""

_ACTIVE = _COUNT_FUNCTION + "\nreturn current(ARGV[3])\n"

_CLEAR_COUNTS = """
local prefix, node = ARGV[1], ARGV[2]
local by = prefix .. 'active-by:' .. node
local total = 0
for _, number in ipairs(redis.call('SMEMBERS', by)) do
  local key = prefix .. 'active:' .. number
  total = total + tonumber(redis.call('HGET', key, node) or '0')
  redis.call('HDEL', key, node)
end
redis.call('DEL', by)
return total
"""


@implementer(ICallCounters)
class RedisCallCounters:
    """
    Concurrent calls per extension across the cluster: ``active:<number>`` is a
    hash of node_id -> calls. Only nodes with a live heartbeat
    (``node:<node_id>``) count, besides this node itself, so the calls of a node
    that died stop counting once its heartbeat expires.
    """

    def __init__(self, state: RedisState, node_id: str) -> None:
        self._state = state
        self._node_id = node_id
        self._prefix = state.key("")

    def _args(self, *rest: Any) -> list[Any]:
        return [self._prefix, self._node_id, *rest]

    def acquire(self, numbers: Sequence[str], limit: int) -> Deferred[bool]:
        """Count a call for each number, unless one is at ``limit``; atomically."""
        d = self._state.script("acquire", _ACQUIRE, [], self._args(limit, *numbers))
        return d.addCallback(lambda reply: int(reply) == 1)

    def release(self, numbers: Sequence[str]) -> Deferred[None]:
        """Count a call less for each number (never below zero)."""
        d = self._state.script("release", _RELEASE, [], self._args(*numbers))
        return d.addCallback(lambda _: None)

    def active(self, number: str) -> Deferred[int]:
        """Fire with the calls ``number`` takes part in, on every live node."""
        return self._state.script("active", _ACTIVE, [], self._args(number)).addCallback(int)

    def clear_node(self, node_id: str) -> Deferred[int]:
        """Forget the counts of ``node_id``; fire with how many there were."""
        args = [self._prefix, node_id]
        return self._state.script("clear_counts", _CLEAR_COUNTS, [], args).addCallback(int)


# -- authentication failures and the nonce secret ---------------------------------------

_RECORD_FAILURE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""

_SECRET = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""


@implementer(IAuthFailureCounter)
class RedisAuthFailureCounter:
    """
    Failed authentications per source in ``authfail:<source>``, a counter that
    expires ``window`` seconds after the window's first failure.
    """

    def __init__(self, state: RedisState) -> None:
        self._state = state

    def record_failure(self, source: str, window: float) -> Deferred[int]:
        """Count a failure of ``source``; fire with its count in the window."""
        keys = [self._state.key("authfail", source)]
        ttl_ms = max(1, int(window * 1000))
        return self._state.script("auth_failure", _RECORD_FAILURE, keys, [ttl_ms]).addCallback(int)


def shared_secret(state: RedisState, name: str, candidate: bytes) -> Deferred[bytes]:
    """
    The cluster's secret ``name``: the first node to ask stores ``candidate``;
    every node then fires with the stored value (hex in Redis).
    """
    keys = [state.key("secret", name)]
    d = state.script("secret", _SECRET, keys, [candidate.hex()])
    return d.addCallback(bytes.fromhex)
