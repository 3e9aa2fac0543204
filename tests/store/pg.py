"""
PostgreSQL for the store tests: a fresh, migrated database per test on this
process's throwaway server (L{warden.testing.servers.postgresql}).

The schema is applied once, to a template database; each test then gets a copy
(``CREATE DATABASE ... TEMPLATE``), which is much quicker than migrating anew.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from warden.store.migrate import apply_migrations
from warden.store.pgpool import PostgreSQLPool, connect_txpostgres
from warden.store.url import parse_store_url
from warden.testing import servers

_TEMPLATE = "warden_template"
_numbers = itertools.count(1)
_template_ready = False


def make_pool(url: str, size: int = 4, **kw: Any) -> PostgreSQLPool:
    """A pool on the database at ``url`` (the real reactor: txpostgres needs it)."""
    kwargs = parse_store_url(url).connect_kwargs(None)
    return PostgreSQLPool(reactor, connect_txpostgres(reactor, kwargs), size=size, **kw)  # type: ignore[arg-type]


async def _template(server: servers.PostgreSQLServer) -> None:
    global _template_ready
    if _template_ready:
        return
    server.psql(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)')
    url = server.create_database(_TEMPLATE)
    pool = make_pool(url, size=1)
    try:
        await apply_migrations(pool)
    finally:
        pool.close()
    _template_ready = True


async def fresh_database(test: TestCase, migrated: bool = True) -> str:
    """
    The URL of a new database for ``test`` (dropped at cleanup): a copy of the
    migrated template, or empty when ``migrated`` is false.
    """
    server = servers.postgresql()
    name = f"warden_test_{next(_numbers)}"
    if migrated:
        await _template(server)
        server.psql(f'CREATE DATABASE "{name}" TEMPLATE "{_TEMPLATE}"')
        url = server.dsn(name)
    else:
        url = server.create_database(name)
    test.addCleanup(server.psql, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return url


async def fresh_pool(test: TestCase, migrated: bool = True, **kw: Any) -> PostgreSQLPool:
    """A pool on a L{fresh_database}, closed at cleanup."""
    pool = make_pool(await fresh_database(test, migrated), **kw)
    test.addCleanup(pool.close)
    return pool
