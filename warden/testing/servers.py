"""
Throwaway PostgreSQL and Redis servers for tests.

L{postgresql} and L{redis} each start one server per test process, the first time
they are called, on a free 127.0.0.1 port in a temporary directory, and tear it down
when the process exits (``atexit``). Both servers can be stopped and started again on
the same port, for fault tests.

PostgreSQL runs with ``fsync``, ``full_page_writes`` and ``synchronous_commit`` off:
its data is throwaway. When we are root, ``initdb`` and ``pg_ctl`` run as the
``postgres`` OS user (``runuser -u postgres --``), since PostgreSQL refuses to run as
root.

A missing binary skips the test with the reason (``unittest.SkipTest``), except under
``CI=true``, where it is an error: CI must run every test.

Start-up happens at test set-up, outside any reactor, so readiness waits are
synchronous and bounded: ``pg_ctl -w`` for PostgreSQL, and a bounded number of
connection attempts a short interval apart for Redis.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
from collections.abc import Sequence
from pathlib import Path

from warden.digits import is_digits

__all__ = [
    "PostgreSQLServer",
    "RedisServer",
    "ServerError",
    "free_tcp_port",
    "postgresql",
    "redis",
    "terminate",
]

LOCALHOST = "127.0.0.1"

# Redis readiness: up to _REDIS_ATTEMPTS connection attempts _REDIS_INTERVAL apart.
_REDIS_ATTEMPTS = 200
_REDIS_INTERVAL = 0.05
# Seconds pg_ctl -w may wait for the server to start or stop.
_PG_TIMEOUT = 60
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ServerError(RuntimeError):
    """A throwaway server failed to start, stop or answer."""


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def terminate(process: subprocess.Popen[bytes]) -> None:
    """End ``process``: SIGTERM, then SIGKILL if it lingers 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _missing(name: str, package: str) -> Exception:
    """The exception for a missing binary: a skip locally, an error under CI=true."""
    if os.environ.get("CI") == "true":
        return ServerError(
            f"{name} is not installed, and CI=true requires it (apt-get install {package})"
        )
    return unittest.SkipTest(f"{name} is not installed (apt-get install {package})")


def _postgresql_bin(name: str) -> str:
    """The path of PostgreSQL's ``name``: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")

    def version(path: str) -> tuple[int, ...]:
        parts = Path(path).parts[-3].split(".")
        return tuple(int(p) for p in parts if is_digits(p))

    candidates.sort(key=version)
    if candidates:
        return candidates[-1]
    raise _missing(name, "postgresql")


def _run(args: list[str], what: str, timeout: float = _PG_TIMEOUT) -> str:
    """Run ``args``; its stdout, or L{ServerError} naming ``what`` with its output."""
    try:
        done = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ServerError(f"{what}: no answer within {timeout} s") from e
    if done.returncode != 0:
        raise ServerError(
            f"{what} failed (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


class ScratchServer:
    """A throwaway server living in its own directory, which L{destroy} removes."""

    directory: Path

    def stop(self) -> None:
        """Stop the server (each kind has its own way)."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class ChildServer(ScratchServer):
    """A scratch server that is one child process of the tests."""

    _process: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL if it lingers); its data is gone."""
        process, self._process = self._process, None
        if process is not None:
            terminate(process)


class PostgreSQLServer(ScratchServer):
    """
    A throwaway PostgreSQL cluster on 127.0.0.1, trust authentication, superuser
    ``postgres``.

    Args:
        host: the address it listens on (127.0.0.1 by default).
        prefix: a command every PostgreSQL program runs under, such as
            ``ip netns exec NAME`` for a server inside a network namespace.
        clients: the network (CIDR) allowed to connect; ``host/32`` by default.

    Attributes:
        host: the address it listens on.
        port: the TCP port it listens on.
        admin_dsn: a libpq URL for the superuser and the ``postgres`` database.
        directory: the temporary directory holding data, socket and log.
    """

    def __init__(
        self, host: str = LOCALHOST, prefix: Sequence[str] = (), clients: str = ""
    ) -> None:
        self._prefix = list(prefix)
        self._initdb = _postgresql_bin("initdb")
        self._pg_ctl = _postgresql_bin("pg_ctl")
        self._psql = _postgresql_bin("psql")
        self.host = host
        self._clients = clients or f"{host}/32"
        self.port = free_tcp_port()
        self.admin_dsn = f"postgresql://postgres@{self.host}:{self.port}/postgres"
        self.directory = Path(tempfile.mkdtemp(prefix="warden-pg-"))
        self._data = self.directory / "data"
        self._log = self.directory / "postgresql.log"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise _missing("runuser", "util-linux")
            self._as_postgres = [runuser, "-u", "postgres", "--"]
        self._as_postgres = [*self._prefix, *self._as_postgres]
        self.running = False
        try:
            if self._as_postgres:
                shutil.chown(self.directory, user="postgres")
            self._init()
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    def _init(self) -> None:
        _run(
            [
                *self._as_postgres,
                self._initdb,
                "--pgdata",
                str(self._data),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
            "initdb",
        )
        # The superuser needs no password; every other role authenticates with
        # SCRAM, so tests can check what a wrong password does.
        hba = self._data / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            f"host all postgres {self._clients} trust\n"
            f"host all all {self._clients} scram-sha-256\n"
        )

    def start(self) -> None:
        """Start the server (again) on the same port; returns when it accepts connections."""
        options = " ".join(
            [
                f"-p {self.port}",
                f"-c listen_addresses={self.host}",
                f"-c unix_socket_directories={self.directory}",
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c synchronous_commit=off",
                "-c max_connections=200",
            ]
        )
        _run(
            [
                *self._as_postgres,
                self._pg_ctl,
                "start",
                "-w",
                "-t",
                str(_PG_TIMEOUT),
                "-D",
                str(self._data),
                "-l",
                str(self._log),
                "-o",
                options,
            ],
            f"pg_ctl start (log: {self._log})",
            timeout=_PG_TIMEOUT + 5,
        )
        self.running = True

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are closed)."""
        if not self.running:
            return
        _run(
            [
                *self._as_postgres,
                self._pg_ctl,
                "stop",
                "-w",
                "-t",
                str(_PG_TIMEOUT),
                "-m",
                "fast",
                "-D",
                str(self._data),
            ],
            "pg_ctl stop",
            timeout=_PG_TIMEOUT + 5,
        )
        self.running = False

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser with ``psql``; its unaligned, tuples-only output."""
        return _run(
            [
                *self._prefix,
                self._psql,
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            "psql",
        )

    def dsn(self, database: str, user: str = "postgres") -> str:
        """A libpq URL for ``database`` on this server."""
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """
        Create a fresh, empty database ``name`` (dropping one of that name first);
        returns its libpq URL.

        Raises:
            ValueError: ``name`` is not a plain lower-case identifier.
        """
        if not _DATABASE_NAME.match(name) or name in ("postgres", "template0", "template1"):
            raise ValueError(f"not a usable database name: {name!r}")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def create_role(self, name: str, password: str, database: str = "") -> None:
        """
        Create (or re-create) login role ``name`` with ``password`` (SCRAM); it
        owns ``database`` when one is named.

        Raises:
            ValueError: ``name`` is not a plain lower-case identifier.
        """
        if not _DATABASE_NAME.match(name) or name == "postgres":
            raise ValueError(f"not a usable role name: {name!r}")
        literal = "'" + password.replace("'", "''") + "'"
        exists = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{name}'").strip()
        verb = "ALTER" if exists else "CREATE"
        self.psql(f'{verb} ROLE "{name}" LOGIN PASSWORD {literal}')
        if database:
            self.psql(f'ALTER DATABASE "{database}" OWNER TO "{name}"')
            self.psql(f'GRANT ALL ON SCHEMA public TO "{name}"', database=database)


class RedisServer(ChildServer):
    """
    A throwaway ``redis-server`` on 127.0.0.1 without persistence. It also
    listens on a Unix socket in its directory, where readiness is checked, so a
    server started under ``prefix`` (``ip netns exec NAME``) on another ``host``
    is checked from here too.

    Attributes:
        host: the address it listens on.
        port: the TCP port it listens on.
        url: ``redis://127.0.0.1:PORT/0``.
        directory: its temporary working directory (holds its log).
    """

    def __init__(self, host: str = LOCALHOST, prefix: Sequence[str] = ()) -> None:
        found = shutil.which("redis-server")
        if found is None:
            raise _missing("redis-server", "redis-server")
        self._binary = found
        self._prefix = list(prefix)
        self.host = host
        self.port = free_tcp_port()
        self.url = f"redis://{self.host}:{self.port}/0"
        self.directory = Path(tempfile.mkdtemp(prefix="warden-redis-"))
        self._log = self.directory / "redis.log"
        self._socket = self.directory / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        """Start the server (again) on the same port; returns when it answers PING."""
        if self._process is not None:
            return
        self._process = subprocess.Popen(
            [
                *self._prefix,
                self._binary,
                "--unixsocket",
                str(self._socket),
                "--unixsocketperm",
                "700",
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self._log),
                "--daemonize",
                "no",
                # Clients on another address than the loopback (a private test
                # network) are refused in protected mode.
                "--protected-mode",
                "yes" if self.host == LOCALHOST else "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(_REDIS_ATTEMPTS):
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise ServerError(f"redis-server exited with {code} (log: {self._log})")
            if self.ping():
                return
            time.sleep(_REDIS_INTERVAL)
        self.stop()
        raise ServerError(
            f"redis-server did not answer within {_REDIS_ATTEMPTS} attempts (log: {self._log})"
        )

    def ping(self) -> bool:
        """Whether the server answers ``PING`` with ``+PONG`` right now."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self._socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


_postgresql: PostgreSQLServer | None = None
_redis: RedisServer | None = None


def postgresql() -> PostgreSQLServer:
    """
    This process's throwaway PostgreSQL server, started on first use and destroyed
    at exit. If a test stopped it, it is started again.
    """
    global _postgresql
    if _postgresql is None:
        server = PostgreSQLServer()
        atexit.register(server.destroy)
        _postgresql = server
    if not _postgresql.running:
        _postgresql.start()
    return _postgresql


def redis() -> RedisServer:
    """
    This process's throwaway Redis server, started on first use and destroyed at
    exit. If a test stopped it, it is started again.
    """
    global _redis
    if _redis is None:
        server = RedisServer()
        atexit.register(server.destroy)
        _redis = server
    if not _redis.running:
        _redis.start()
    return _redis
