"""
The short way from L{warden.store.redis.RedisState} to Redis, for the commands
every REGISTER sends.

txredisapi spends more CPU per command than Redis does: each call looks its
connection up through an C{inlineCallbacks} generator and a queue, encodes every
argument (and every argument's length) through a chain of type checks, and
Lua scripts go through its own SHA-1 bookkeeping. Here a command is packed in
one call (by hiredis when it is installed) and written straight to a connected
txredisapi protocol of the pool; its reply comes back through the protocol's
reply queue as usual, so ordering and connection loss behave as for any other
txredisapi command. Lua scripts run as C{EVALSHA}, falling back to C{EVAL} when
Redis does not know the script (a restarted Redis, C{SCRIPT FLUSH}).

When hiredis is importable, txredisapi also parses replies with it
(C{HiredisProtocol}) instead of its pure-Python line parser, which costs a
reactor turn for every bulk string.

txredisapi is imported lazily (it imports the global reactor).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = ["DirectCommands", "DirectSender", "Script", "direct_protocol", "pack_command"]


def _hiredis_packer() -> Callable[[tuple[str | bytes, ...]], bytes] | None:
    """hiredis's C command packer, if hiredis is installed."""
    try:
        import hiredis
    except ImportError:
        return None
    # (its stub declares a one-element tuple)
    return hiredis.pack_command  # type: ignore[return-value]


_hiredis_pack = _hiredis_packer()


def _python_pack(args: Sequence[str | bytes]) -> bytes:
    """RESP: an array of bulk strings (str as UTF-8)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def pack_command(args: Sequence[str | bytes]) -> bytes:
    """One Redis command as the bytes sent for it (RESP, strings as UTF-8)."""
    if _hiredis_pack is not None:
        return _hiredis_pack(tuple(args))
    return _python_pack(args)


@attrs.frozen
class Script:
    """A Lua script and its SHA-1 (the name C{EVALSHA} knows it by)."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        """The script ``source``."""
        return cls(source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())

    def evalsha(self, keys: Sequence[str], args: Sequence[str]) -> bytes:
        """The packed C{EVALSHA} command running this script."""
        return pack_command(["EVALSHA", self.sha, str(len(keys)), *keys, *args])

    def eval(self, keys: Sequence[str], args: Sequence[str]) -> bytes:
        """The packed C{EVAL} command, sending the whole source."""
        return pack_command(["EVAL", self.source, str(len(keys)), *keys, *args])


class DirectCommands:
    """
    Mixed into txredisapi's protocol class: L{send} writes a packed command and
    fires with its reply, without txredisapi's per-command machinery.
    """

    connected: int
    pipelining: bool
    inMulti: bool
    transport: Any
    replyQueue: Any

    def can_send(self) -> bool:
        """True while the connection is up and not inside MULTI or a pipeline."""
        return bool(self.connected) and not (self.pipelining or self.inMulti)

    def send(self, packed: bytes) -> Deferred[Any]:
        """Write ``packed``; fire with the reply, or fail with Redis's error."""
        self.transport.write(packed)
        d: Deferred[Any] = self.replyQueue.get()
        return d.addCallback(_raise_errors)


def _raise_errors(reply: Any) -> Any:
    # txredisapi queues an error reply (or a lost connection) as an exception.
    if isinstance(reply, Exception):
        raise reply
    return reply


def direct_protocol(base: type[Any]) -> type[Any]:
    """``base`` (a txredisapi protocol class) with L{DirectCommands} mixed in."""
    return type(base.__name__, (DirectCommands, base), {})


class DirectSender:
    """
    Sends packed commands on a ready connection of a txredisapi pool, or
    reports that none is ready (the caller then uses the txredisapi client,
    which waits for a connection).

    Args:
        factory: the pool's txredisapi factory, whose protocol class was made
            with L{direct_protocol}; None for a client without one (a fake).
    """

    def __init__(self, factory: Any) -> None:
        self._pool: list[Any] = factory.pool if factory is not None else []

    def connection(self) -> DirectCommands | None:
        """A connection that can send now, if any."""
        for conn in self._pool:
            if isinstance(conn, DirectCommands) and conn.can_send():
                return conn
        return None

    def script(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Deferred[Any]:
        """
        Run ``script`` by its SHA-1 on a ready connection, sending the source
        only if Redis does not have it. The caller checks L{connection} first.
        """
        conn = self.connection()
        assert conn is not None
        d = conn.send(script.evalsha(keys, args))

        def unknown(failure: Failure) -> Deferred[Any] | Failure:
            if not str(failure.value).startswith("NOSCRIPT"):
                return failure
            retry = self.connection()
            if retry is None:
                return failure
            return retry.send(script.eval(keys, args))

        return d.addErrback(unknown)
