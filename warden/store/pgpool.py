"""
A PostgreSQL connection pool on txpostgres: reconnects by itself and retries
transient failures a bounded number of times with back-off.

Every store method runs one named interaction through L{PostgreSQLPool.run}: an
``async def`` taking a txpostgres cursor (whose ``execute`` returns a Deferred),
run in one transaction (committed when it returns, rolled back when it raises).
The name labels ``warden_store_interactions_total{interaction, outcome}``, as for
SQLite (L{warden.store.interaction}).

Connections are opened on demand, up to ``size`` at once; a connection that
failed at the connection level (server restart, network error) is closed and
replaced by a fresh one for the next interaction. A transient failure (lost
connection, server starting or shutting down, serialization failure, deadlock)
is retried after ``backoff``, ``2 * backoff``, ... (at most ``max_backoff``) up
to ``attempts`` attempts in all; then the interaction fails with
L{StoreUnavailable}. Other errors (constraint violations, SQL errors) fail at
once. Interactions that may be retried must be idempotent: every Warden
interaction is (inserts are ``ON CONFLICT`` upserts or guarded by a key).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import psycopg2
from prometheus_client import Counter, Gauge
from psycopg2.extensions import QueryCanceledError, TransactionRollbackError
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import txpostgres
from txpostgres.reconnection import ConnectionDead

from warden.errors import StoreError, StoreUnavailable
from warden.store.interaction import count_interaction

__all__ = [
    "Cursor",
    "PostgreSQLPool",
    "StoreUnavailable",
    "connect_txpostgres",
    "is_transient",
    "one_line",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: A txpostgres cursor: ``execute`` returns a Deferred; fetch* are psycopg2's.
Cursor = Any

RETRIES = Counter(
    "warden_store_retries_total",
    "PostgreSQL interactions retried after a transient failure, by name.",
    ["interaction"],
)
CONNECTIONS = Gauge("warden_store_connections", "Open PostgreSQL connections of this process.")

# SQLSTATEs worth another attempt: serialization failure, deadlock, the server
# shutting down or starting, too many connections, connection exceptions.
_TRANSIENT_STATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300"})
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03"})


class _RollbackFailed(StoreError):
    """An interaction failed and so did its ROLLBACK: the connection is unusable."""


class Connection(Protocol):
    """
    What the pool and the store run lock (L{warden.runlock}) need of a connection
    (txpostgres.Connection has it): cursors whose ``execute`` returns a Deferred,
    single statements outside a transaction, and ``close``.
    """

    def cursor(self) -> Cursor: ...

    def runOperation(self, sql: str, params: tuple[object, ...] = ()) -> Deferred[None]: ...

    def runQuery(
        self, sql: str, params: tuple[object, ...] = ()
    ) -> Deferred[list[tuple[Any, ...]]]: ...

    def close(self) -> None: ...


def one_line(error: BaseException | Failure) -> str:
    """An error's message on one line (libpq's messages span several)."""
    if isinstance(error, Failure):
        text = error.getErrorMessage()
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` means the connection is unusable and must be replaced."""
    if isinstance(error, _RollbackFailed | ConnectionDead | psycopg2.InterfaceError):
        return True
    if isinstance(error, TransactionRollbackError | QueryCanceledError):
        return False
    if isinstance(error, psycopg2.OperationalError):
        # No SQLSTATE: libpq lost the connection. Otherwise only connection
        # exceptions and the server shutting down end the session; a
        # serialization failure or a cancelled query leave it usable.
        state = str(getattr(error, "pgcode", "") or "")
        return not state or state.startswith("08") or state in _SESSION_ENDED
    return False


# Connection failures that another attempt will not cure (libpq gives no SQLSTATE
# for them): wrong credentials, unknown database or role, refused by pg_hba.conf.
_PERMANENT_CONNECT = ("authentication failed", "does not exist", "no pg_hba.conf entry")


def is_transient(error: BaseException) -> bool:
    """Whether another attempt may succeed (see the module docstring)."""
    if isinstance(error, TransactionRollbackError):
        return True
    if isinstance(error, psycopg2.Error):
        state = str(getattr(error, "pgcode", "") or "")
        if state in _TRANSIENT_STATES or state.startswith("08"):
            return True
        if not state and any(text in str(error) for text in _PERMANENT_CONNECT):
            return False
    return is_connection_error(error)


class _TxConnection(txpostgres.Connection):  # type: ignore[misc]
    """
    A txpostgres connection that takes the server closing it while idle quietly:
    psycopg2 marks it closed and the pool replaces it at the next checkout.
    """

    _log = Logger()

    def doRead(self) -> None:
        try:
            super().doRead()
        except psycopg2.Error as e:
            self.reactor.removeReader(self)
            self._log.info("idle PostgreSQL connection lost: {error}", error=one_line(e))


def connect_txpostgres(
    reactor: Any, connect_kwargs: dict[str, str]
) -> Callable[[], Deferred[Connection]]:
    """
    A connection factory for L{PostgreSQLPool}: txpostgres on ``reactor``.

    libpq does not enforce ``connect_timeout`` on asynchronous connections, so
    the factory does: a connection not made within that many seconds (10 if
    unset) is abandoned and fails with a (transient) ``OperationalError``.
    """
    timeout = float(connect_kwargs.get("connect_timeout") or 10)

    def connect() -> Deferred[Connection]:
        connection = _TxConnection(reactor=reactor)
        result: Deferred[Connection] = Deferred()

        def close() -> None:
            try:
                connection.close()
            except Exception:  # half-open connection, nothing to close
                pass

        def timed_out() -> None:
            close()
            result.errback(psycopg2.OperationalError(f"no connection within {timeout:g} s"))

        timer = reactor.callLater(timeout, timed_out)

        def done(outcome: Any) -> None:
            if not timer.active():
                return  # timed out already; the connection was closed
            timer.cancel()
            if isinstance(outcome, Failure):
                close()
                result.errback(outcome)
            else:
                result.callback(connection)

        connection.connect(**connect_kwargs).addBoth(done)
        return result

    return connect


class PostgreSQLPool:
    """
    Args:
        clock: schedules the back-off between attempts.
        connect: opens one connection (L{connect_txpostgres}).
        size: the most connections open at once.
        attempts: the most attempts per interaction (>= 1).
        backoff: seconds before the first retry; doubled for each further one.
        max_backoff: the longest wait between two attempts.
        description: how errors name this database (a URL without password).
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        connect: Callable[[], Deferred[Connection]],
        size: int = 4,
        attempts: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        description: str = "PostgreSQL",
    ) -> None:
        if size < 1 or attempts < 1:
            raise ValueError("size and attempts must be >= 1")
        self._clock = clock
        self._connect = connect
        self._slots = defer.DeferredSemaphore(size)
        self._idle: list[Connection] = []
        self._open = 0
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self.description = description
        self.running = True

    @property
    def open_connections(self) -> int:
        """Connections currently open (idle or in use)."""
        return self._open

    def run(
        self,
        name: str,
        interaction: Callable[Concatenate[Cursor, _P], Coroutine[Any, Any, _T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        """
        Run ``interaction(cursor, *args, **kwargs)`` in one transaction, retrying
        transient failures; fire with its result.
        """
        d = Deferred.fromCoroutine(self._run(name, interaction, args, kwargs))

        def ok(result: _T) -> _T:
            count_interaction(name, "ok")
            return result

        def failed(reason: Failure) -> Failure:
            count_interaction(name, "error")
            return reason

        d.addCallbacks(ok, failed)
        return d

    async def _run(
        self,
        name: str,
        interaction: Callable[..., Coroutine[Any, Any, _T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> _T:
        def in_transaction(cursor: Cursor) -> Coroutine[Any, Any, _T]:
            return interaction(cursor, *args, **kwargs)

        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            if not self.running:
                raise StoreError(f"{self.description}: the connection pool is closed")
            try:
                result: _T = await self._slots.run(self._attempt, in_transaction)
                return result
            except Exception as e:
                if not is_transient(e):
                    raise
                if attempt == self._attempts:
                    raise StoreUnavailable(
                        f"{self.description}: unavailable after {attempt} attempts ({one_line(e)})"
                    ) from e
                RETRIES.labels(interaction=name).inc()
                self._log.warn(
                    "{interaction} failed ({error}); attempt {next} of {attempts} in {delay} s",
                    interaction=name,
                    error=one_line(e),
                    next=attempt + 1,
                    attempts=self._attempts,
                    delay=delay,
                )
                await task.deferLater(self._clock, delay, lambda: None)
                delay = min(delay * 2, self._max_backoff)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, in_transaction: Callable[[Cursor], Coroutine[Any, Any, _T]]) -> _T:
        connection = await self._checkout()
        try:
            result = await self._transaction(connection, in_transaction)
        except Exception as e:
            if is_connection_error(e) or isinstance(e, _RollbackFailed):
                # The server probably restarted: the idle connections are dead too.
                self._discard(connection)
                self._discard_idle()
            else:
                self._release(connection)
            raise
        self._release(connection)
        return result

    async def _transaction(
        self, connection: Connection, in_transaction: Callable[[Cursor], Coroutine[Any, Any, _T]]
    ) -> _T:
        """BEGIN, the interaction, COMMIT; ROLLBACK when anything fails."""
        cursor = connection.cursor()
        try:
            await cursor.execute("BEGIN")
            result = await in_transaction(cursor)
            await cursor.execute("COMMIT")
        except Exception as e:
            try:
                await cursor.execute("ROLLBACK")
            except Exception:
                # The session is gone (or in an unknown state): so is the connection.
                if is_connection_error(e):
                    raise
                raise _RollbackFailed(one_line(e)) from e
            raise
        finally:
            try:
                cursor.close()
            except Exception:  # the connection is already closed
                pass
        return result

    def _release(self, connection: Connection) -> None:
        if self.running:
            self._idle.append(connection)
        else:
            self._discard(connection)

    async def _checkout(self) -> Connection:
        while self._idle:
            connection = self._idle.pop()
            # psycopg2 marks a connection closed once it saw the server go away.
            if not getattr(connection, "closed", False):
                return connection
            self._discard(connection)
        connection = await self._connect()
        self._open += 1
        CONNECTIONS.inc()
        return connection

    def _discard(self, connection: Connection) -> None:
        self._open -= 1
        CONNECTIONS.dec()
        try:
            connection.close()
        except Exception as e:
            self._log.debug("closing a broken connection: {error}", error=one_line(e))

    def _discard_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            self._discard(connection)

    def close(self) -> None:
        """Close the idle connections; the pool refuses new interactions."""
        self.running = False
        self._discard_idle()
