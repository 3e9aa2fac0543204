"""
L{PostgreSQLPool}: reconnection, bounded retries with back-off, and the limit
on open connections, with fake connections and a Clock (no server), then a
real PostgreSQL restart under the pool.
"""

from __future__ import annotations

from typing import Any

import psycopg2
from prometheus_client import REGISTRY
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.store.pg import fresh_database, make_pool
from warden.errors import StoreError
from warden.store.pgpool import PostgreSQLPool, StoreUnavailable, is_transient, one_line
from warden.testing import servers


class FakeCursor:
    """A cursor of FakeConnection: BEGIN fails or waits as its connection says."""

    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection
        self.number = connection.number

    def execute(self, sql: str) -> Deferred[FakeCursor]:
        connection = self.connection
        connection.statements.append(sql)
        if connection.closed:
            return defer.fail(psycopg2.InterfaceError("connection already closed"))
        if sql == "BEGIN" and connection.fail_with is not None:
            error, connection.fail_with = connection.fail_with, None
            if connection.dies:
                connection.closed = True
            return defer.fail(error)
        if sql == "BEGIN" and connection.hold is not None:
            return connection.hold.addCallback(lambda _: self)
        return defer.succeed(self)

    def close(self) -> None:
        pass


class FakeConnection:
    """Hands out FakeCursors; its next BEGIN fails (``fail_with``) or waits (``hold``)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False
        self.fail_with: BaseException | None = None
        self.dies = False
        self.hold: Deferred[None] | None = None
        self.statements: list[str] = []

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def close(self) -> None:
        self.closed = True


class Connector:
    """The pool's connect(): hands out FakeConnections, or refuses as told."""

    def __init__(self) -> None:
        self.made: list[FakeConnection] = []
        self.refuse = 0

    def __call__(self) -> Deferred[Any]:
        if self.refuse:
            self.refuse -= 1
            return defer.fail(psycopg2.OperationalError("connection refused"))
        connection = FakeConnection(len(self.made))
        self.made.append(connection)
        return defer.succeed(connection)


async def which(cursor: Any) -> int:
    """An interaction that answers with the fake connection's number."""
    return int(cursor.number)


def _retries(name: str) -> float:
    return REGISTRY.get_sample_value("warden_store_retries_total", {"interaction": name}) or 0.0


def _interactions(name: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "warden_store_interactions_total", {"interaction": name, "outcome": outcome}
        )
        or 0.0
    )


class PoolTests(SynchronousTestCase):
    """The pool's behaviour, step by step on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.connect = Connector()
        self.pool = PostgreSQLPool(
            self.clock, self.connect, size=2, attempts=3, backoff=0.5, max_backoff=0.75
        )

    def test_reuses_connection(self) -> None:
        """Sequential interactions share one connection; none is opened before use."""
        self.assertEqual(self.pool.open_connections, 0)
        self.assertEqual(self.successResultOf(self.pool.run("t", which)), 0)
        self.assertEqual(self.successResultOf(self.pool.run("t", which)), 0)
        self.assertEqual(len(self.connect.made), 1)

    def test_at_most_size_connections(self) -> None:
        """With size 2, a third concurrent interaction waits for a free connection
        and then runs on the first one released."""
        self.successResultOf(self.pool.run("t", which))
        first = self.connect.made[0]
        first.hold = Deferred()
        d1 = self.pool.run("t", which)
        d2 = self.pool.run("t", which)
        second = self.connect.made[1]
        self.assertEqual(self.successResultOf(d2), 1)
        second.hold = Deferred()
        d2 = self.pool.run("t", which)
        d3 = self.pool.run("t", which)
        self.assertEqual(len(self.connect.made), 2)
        self.assertNoResult(d3)
        first.hold.callback(None)
        self.assertEqual(self.successResultOf(d1), 0)
        self.assertEqual(self.successResultOf(d3), 0)
        second.hold.callback(None)
        self.assertEqual(self.successResultOf(d2), 1)
        self.assertEqual(self.pool.open_connections, 2)

    def test_transaction_statements(self) -> None:
        """Each interaction is BEGIN ... COMMIT; a failing one is rolled back."""
        self.successResultOf(self.pool.run("t", which))

        async def bad(cursor: Any) -> None:
            raise ValueError("bug")

        self.failureResultOf(self.pool.run("t", bad), ValueError)
        self.assertEqual(self.connect.made[0].statements, ["BEGIN", "COMMIT", "BEGIN", "ROLLBACK"])

    def test_connection_error_reconnects_and_retries(self) -> None:
        """A lost connection is closed, every idle one with it, and the retry after
        the back-off runs on a fresh connection."""
        self.successResultOf(self.pool.run("t", which))
        dead = self.connect.made[0]
        dead.fail_with = psycopg2.OperationalError("server closed the connection unexpectedly")
        dead.dies = True
        before = _retries("reconnect")
        d = self.pool.run("reconnect", which)
        self.assertNoResult(d)
        self.assertTrue(dead.closed)
        self.assertEqual(self.pool.open_connections, 0)
        self.clock.advance(0.499)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(_retries("reconnect"), before + 1)

    def test_bounded_retries(self) -> None:
        """While the server refuses, attempts wait 0.5 s then 0.75 s (capped) and the
        third failure gives StoreUnavailable with the cause on one line."""
        self.connect.refuse = 10
        d = self.pool.run("t", which)
        self.clock.advance(0.5)
        self.assertNoResult(d)
        self.clock.advance(0.749)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        failure = self.failureResultOf(d, StoreUnavailable)
        self.assertIn("after 3 attempts", str(failure.value))
        self.assertIn("connection refused", str(failure.value))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_recovers_within_retries(self) -> None:
        """A server back before the attempts run out answers the interaction."""
        self.connect.refuse = 2
        d = self.pool.run("t", which)
        self.clock.advance(0.5)
        self.clock.advance(0.75)
        self.assertEqual(self.successResultOf(d), 0)

    def test_interactions_counted(self) -> None:
        """Each interaction is counted once by its name and outcome, retries or not."""
        ok, error = _interactions("counted", "ok"), _interactions("counted", "error")
        self.successResultOf(self.pool.run("counted", which))
        self.connect.made[0].fail_with = psycopg2.errors.SerializationFailure("conflict")
        d = self.pool.run("counted", which)
        self.clock.advance(0.5)
        self.successResultOf(d)

        async def bad(cursor: Any) -> None:
            raise ValueError("bug")

        self.failureResultOf(self.pool.run("counted", bad), ValueError)
        self.assertEqual(_interactions("counted", "ok") - ok, 2)
        self.assertEqual(_interactions("counted", "error") - error, 1)

    def test_sql_error_not_retried(self) -> None:
        """An error in the SQL fails at once and keeps the connection."""
        self.successResultOf(self.pool.run("t", which))

        async def bad(cursor: Any) -> None:
            raise psycopg2.errors.UniqueViolation("duplicate key")

        self.failureResultOf(self.pool.run("t", bad), psycopg2.errors.UniqueViolation)
        self.assertEqual(self.pool.open_connections, 1)
        self.assertFalse(self.connect.made[0].closed)

    def test_serialization_failure_retried(self) -> None:
        """A serialization failure (40001) is retried on the same connection."""
        self.successResultOf(self.pool.run("t", which))
        self.connect.made[0].fail_with = psycopg2.errors.SerializationFailure("conflict")
        d = self.pool.run("t", which)
        self.clock.advance(0.5)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(len(self.connect.made), 1)

    def test_closed_pool(self) -> None:
        """After close() the idle connections are closed and interactions fail."""
        self.successResultOf(self.pool.run("t", which))
        self.pool.close()
        self.assertTrue(self.connect.made[0].closed)
        self.assertEqual(self.pool.open_connections, 0)
        self.failureResultOf(self.pool.run("t", which), StoreError)

    def test_classification(self) -> None:
        """Wrong credentials and unknown databases are not transient; refusals are."""
        self.assertFalse(
            is_transient(psycopg2.OperationalError('password authentication failed for "w"'))
        )
        self.assertFalse(is_transient(psycopg2.OperationalError('database "x" does not exist')))
        self.assertTrue(is_transient(psycopg2.OperationalError("Connection refused")))
        self.assertFalse(is_transient(ValueError("bug")))
        self.assertEqual(one_line(ValueError("a\n\tb  c\n")), "a b c")


class RealRestartTests(TestCase):
    """The pool across a real restart of the throwaway PostgreSQL server."""

    async def test_pool_survives_restart(self) -> None:
        """After the server restarts, the next interaction reconnects and succeeds
        without the caller seeing an error; the pool holds no broken connection."""
        server = servers.postgresql()
        pool = make_pool(await fresh_database(self), attempts=20, backoff=0.1, max_backoff=0.5)
        self.addCleanup(pool.close)

        async def one(cursor: Any) -> int:
            await cursor.execute("SELECT 1")
            return int(cursor.fetchone()[0])

        self.assertEqual(await pool.run("t", one), 1)
        server.stop()
        server.start()
        self.assertEqual(await pool.run("t", one), 1)

    async def test_interaction_waits_for_server(self) -> None:
        """An interaction issued while the server is down succeeds once it is back
        (within the retries)."""
        server = servers.postgresql()
        from twisted.internet import reactor

        pool = make_pool(await fresh_database(self), attempts=40, backoff=0.1, max_backoff=0.25)
        self.addCleanup(pool.close)

        async def one(cursor: Any) -> int:
            await cursor.execute("SELECT 1")
            return int(cursor.fetchone()[0])

        server.stop()
        d = pool.run("t", one)
        await task.deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(d.called)
        server.start()
        self.assertEqual(await d, 1)

    async def test_idle_connection_lost_quietly(self) -> None:
        """The server closing an idle connection is noticed by the reactor without
        an unhandled error; the next interaction runs on a new connection."""
        from twisted.internet import reactor

        server = servers.postgresql()
        pool = make_pool(await fresh_database(self), attempts=20, backoff=0.1, max_backoff=0.5)
        self.addCleanup(pool.close)

        async def backend_pid(cursor: Any) -> int:
            await cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])

        first = await pool.run("t", backend_pid)
        idle = pool._idle[0]
        server.psql(f"SELECT pg_terminate_backend({first})")
        for _ in range(100):
            if idle.closed:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertTrue(idle.closed)
        self.assertNotEqual(await pool.run("t", backend_pid), first)
        self.assertEqual(pool.open_connections, 1)

    async def test_connect_timeout(self) -> None:
        """A server that accepts TCP but never answers: the connection attempt is
        abandoned after connect_timeout and the interaction fails (bounded)."""
        import socket

        from twisted.internet import reactor

        from warden.store.pgpool import connect_txpostgres

        silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        kwargs = {
            "host": "127.0.0.1",
            "port": str(silent.getsockname()[1]),
            "dbname": "x",
            "user": "x",
            "connect_timeout": "0.3",
        }
        pool = PostgreSQLPool(
            reactor, connect_txpostgres(reactor, kwargs), attempts=2, backoff=0.1
        )
        self.addCleanup(pool.close)

        async def one(cursor: Any) -> None:
            await cursor.execute("SELECT 1")

        with self.assertRaises(StoreUnavailable) as caught:
            await pool.run("t", one)
        self.assertIn("no connection within 0.3 s", str(caught.exception))
        self.assertEqual(pool.open_connections, 0)
