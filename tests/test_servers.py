"""
The throwaway PostgreSQL and Redis servers of L{warden.testing.servers}: they start,
answer, and come back on the same port after a restart.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from warden.testing import servers


def _redis_command(server: servers.RedisServer, *words: bytes) -> bytes:
    """Send one RESP command to ``server``; the first reply chunk."""
    frame = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
    with socket.create_connection((server.host, server.port), timeout=5.0) as sock:
        sock.sendall(frame)
        return sock.recv(1024)


class PostgreSQLServerTests(SynchronousTestCase):
    """The throwaway PostgreSQL server."""

    def test_answers(self) -> None:
        """The server answers SQL on its port, and the admin DSN names that port."""
        server = servers.postgresql()
        self.assertEqual(server.psql("SELECT 40 + 2").strip(), "42")
        self.assertEqual(
            server.admin_dsn, f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        )
        self.assertEqual(server.psql("SHOW fsync").strip(), "off")

    def test_create_database(self) -> None:
        """create_database() gives a fresh empty database: a second call drops the first."""
        server = servers.postgresql()
        url = server.create_database("servers_fresh")
        self.assertEqual(url, f"postgresql://postgres@127.0.0.1:{server.port}/servers_fresh")
        server.psql("CREATE TABLE t (x integer)", database="servers_fresh")
        server.create_database("servers_fresh")
        tables = server.psql(
            "SELECT count(*) FROM pg_tables WHERE tablename = 't'", database="servers_fresh"
        )
        self.assertEqual(tables.strip(), "0")

    def test_bad_database_name(self) -> None:
        """A name that is not a plain identifier is refused before it reaches SQL."""
        server = servers.postgresql()
        for name in ['x"; DROP', "Upper", "postgres", ""]:
            with self.assertRaises(ValueError):
                server.create_database(name)

    def test_restart(self) -> None:
        """After stop() the port refuses; start() brings it back on the same port with the data."""
        server = servers.postgresql()
        server.create_database("servers_restart")
        server.psql(
            "CREATE TABLE kept (x integer); INSERT INTO kept VALUES (7)", "servers_restart"
        )
        port = server.port
        server.stop()
        with self.assertRaises(OSError):
            socket.create_connection((server.host, port), timeout=2.0).close()
        server.start()
        self.assertEqual(server.port, port)
        self.assertEqual(server.psql("SELECT x FROM kept", "servers_restart").strip(), "7")

    def test_same_server(self) -> None:
        """postgresql() returns the one server of this process, restarting it if stopped."""
        first = servers.postgresql()
        first.stop()
        second = servers.postgresql()
        self.assertIs(first, second)
        self.assertEqual(second.psql("SELECT 1").strip(), "1")


class RedisServerTests(SynchronousTestCase):
    """The throwaway Redis server."""

    def test_answers(self) -> None:
        """The server answers commands on the port its URL names."""
        server = servers.redis()
        self.assertEqual(server.url, f"redis://127.0.0.1:{server.port}/0")
        self.assertEqual(_redis_command(server, b"SET", b"k", b"v"), b"+OK\r\n")
        self.assertEqual(_redis_command(server, b"GET", b"k"), b"$1\r\nv\r\n")

    def test_restart(self) -> None:
        """After stop() the port refuses; start() brings it back, empty, on the same port."""
        server = servers.redis()
        _redis_command(server, b"SET", b"gone", b"1")
        port = server.port
        server.stop()
        self.assertFalse(server.ping())
        server.start()
        self.assertEqual(server.port, port)
        self.assertEqual(_redis_command(server, b"GET", b"gone"), b"$-1\r\n")

    def test_same_server(self) -> None:
        """redis() returns the one server of this process, restarting it if stopped."""
        first = servers.redis()
        first.stop()
        second = servers.redis()
        self.assertIs(first, second)
        self.assertTrue(second.ping())


class PostgreSQLAuthenticationTests(SynchronousTestCase):
    """Roles other than the superuser need their password over TCP."""

    def test_role_password(self) -> None:
        """A role created with a password connects with it and not with another."""
        import psycopg2

        server = servers.postgresql()
        server.create_database("servers_auth")
        server.create_role("servers_user", "right'pw", database="servers_auth")
        common = {"host": server.host, "port": server.port, "dbname": "servers_auth"}
        connection = psycopg2.connect(user="servers_user", password="right'pw", **common)
        connection.close()
        with self.assertRaises(psycopg2.OperationalError) as caught:
            psycopg2.connect(user="servers_user", password="wrong", **common)
        self.assertIn("password authentication failed", str(caught.exception))
        server.create_role("servers_user", "changed")
        psycopg2.connect(user="servers_user", password="changed", **common).close()
