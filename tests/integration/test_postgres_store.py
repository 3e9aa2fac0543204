"""
Warden on PostgreSQL (``[store] url = "postgresql://..."``), end to end: a real
``twistd warden`` and ``wardenctl`` on the throwaway PostgreSQL server, a role
that authenticates with a password from ``[store] password_file``.

- extensions provisioned with ``wardenctl --config`` land in PostgreSQL and
  phones register against them;
- a wrong password stops start-up (and wardenctl) with one clear line;
- the SIPp call tests run again with PostgreSQL as the store, and PostgreSQL
  restarting under a load of calls loses no call record: the spool holds them
  and flushes once the database is back;
- ``wardenctl migrate-store`` moves a SQLite installation to PostgreSQL;
- admin accounts live in PostgreSQL too.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from tests.integration import test_calls
from tests.integration.clients import LOCALHOST, poll
from tests.integration.harness import (
    WARDENCTL,
    IntegrationTestCase,
    WardenProcess,
    provision,
    run_process,
    sipp_command,
    spawn,
    user_password,
    wardenctl,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_stats
from tests.integration.test_calls import held_ports, poll_async
from tests.store.conformance import call_record
from warden.store.cdr import SQLCallRecordStore
from warden.store.migrate import apply_migrations
from warden.store.spool import SPOOL_FILENAME, decode_line
from warden.store.sqlite import open_sqlite_pool
from warden.testing import servers

ROLE = "warden_it"
_databases = itertools.count(1)


def postgresql_settings(test: Any, password: str = "it-secret") -> dict[str, dict[str, object]]:
    """
    ``[store]`` settings for a fresh database owned by role ``warden_it``, whose
    password is in a file (the right one unless ``password`` says otherwise).
    """
    server = servers.postgresql()
    name = f"warden_it_{next(_databases)}"
    server.create_database(name)
    server.create_role(ROLE, "it-secret", database=name)
    test.addCleanup(server.psql, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    password_file = Path(test.mktemp()).resolve()
    password_file.write_text(password + "\n")
    return {
        "store": {
            "url": f"postgresql://{ROLE}@{server.host}:{server.port}/{name}",
            "password_file": str(password_file),
        }
    }


def database_of(settings: dict[str, dict[str, object]]) -> str:
    return str(settings["store"]["url"]).rsplit("/", 1)[1]


def query(settings: dict[str, dict[str, object]], sql: str) -> str:
    """Run ``sql`` in the test's database as the superuser; the output, stripped."""
    return servers.postgresql().psql(sql, database=database_of(settings)).strip()


class PostgreSQLStoreTests(IntegrationTestCase):
    """Warden and wardenctl sharing one PostgreSQL database."""

    async def test_provision_and_register(self) -> None:
        """Extensions imported with wardenctl are rows in PostgreSQL; a phone
        registers against them and its binding is persisted there too."""
        settings = postgresql_settings(self)
        warden = await self.start_warden(settings)
        users = await provision(warden.config_path, 3, first=3000)
        self.assertEqual(query(settings, "SELECT count(*) FROM extensions"), "3")
        listed = await wardenctl(warden.config_path, "extension", "list", "--json")
        self.assertEqual(listed.code, 0, listed.stderr)
        self.assertEqual([e["number"] for e in json.loads(listed.stdout)], users.numbers)

        client = await self.sip_client(warden)
        number = users.numbers[0]
        contact = f"<sip:{number}@{LOCALHOST}:{client.local_port}>"
        response = await client.register(number, user_password(number), contact=contact)
        self.assertEqual(response.status, 200)
        self.assertTrue(
            await poll(lambda: query(settings, "SELECT aor FROM bindings") == number, 10),
            warden.log_tail(),
        )

    async def test_wrong_password_stops_startup(self) -> None:
        """With a wrong password twistd exits non-zero with one line naming the
        store and the cause (never the password); wardenctl fails the same way."""
        settings = postgresql_settings(self, password="not-the-password")
        warden = WardenProcess(self.workdir(), settings=settings)
        result = await run_process(warden.command(), warden.workdir, timeout=60)
        self.assertNotEqual(result.code, 0)
        output = result.stdout + result.stderr + warden.log_text()
        lines = [line for line in output.splitlines() if "password authentication failed" in line]
        self.assertEqual(len(lines), 1, output)
        self.assertIn(str(settings["store"]["url"]), lines[0])
        self.assertNotIn("not-the-password", output)
        self.assertNotIn("Traceback", output)

        ctl = await wardenctl(warden.config_path, "extension", "list")
        self.assertEqual(ctl.code, 1)
        self.assertEqual(len(ctl.stderr.strip().splitlines()), 1, ctl.stderr)
        self.assertIn("password authentication failed", ctl.stderr)
        self.assertNotIn("not-the-password", ctl.stderr)


# Imported as a module: a SippCallTests name here would run the SQLite tests twice.
class PostgreSQLSippCallTests(test_calls.SippCallTests):
    """The SIPp call tests with PostgreSQL as the store."""

    async def start_warden(
        self,
        settings: dict[str, dict[str, object]] | None = None,
        workdir: Path | None = None,
    ) -> WardenProcess:
        """Every Warden of these tests keeps its data in a fresh PostgreSQL database."""
        self.pg_settings = postgresql_settings(self)
        merged = {**(settings or {}), **self.pg_settings}
        return await super().start_warden(merged, workdir)

    async def test_database_lost_mid_call(self) -> None:
        """
        PostgreSQL restarts while 12 calls come and go (SIPp, RTP through the
        relay): every call completes, and every call record reaches PostgreSQL
        once it is back (through the spool), none lost, none twice.
        """
        calls = 12
        warden, _users, uas, uac_args = await self.call_setup(calls)
        uac_dir = self.workdir()
        uac, uac_process = spawn(sipp_command([*uac_args, "-r", "3", "-d", "2000"]), uac_dir)
        self.addCleanup(lambda: uac_process.signalProcess("KILL") if uac.running else None)
        server = servers.postgresql()

        def records() -> int:
            return int(query(self.pg_settings, "SELECT count(*) FROM call_records"))

        # Down once the first calls have been recorded, for a few seconds of calls.
        self.assertTrue(await poll(lambda: records() >= 1, 30), warden.log_tail())
        server.stop()
        self.addCleanup(lambda: None if server.running else server.start())
        # Up again once several calls have ended while it was down (spooled).
        spool = warden.data_dir / SPOOL_FILENAME

        def spooled() -> int:
            return spool.read_bytes().count(b"\n") if spool.exists() else 0

        self.assertTrue(await poll(lambda: spooled() >= 3, 30), warden.log_tail())
        server.start()

        self.assertTrue(await poll(lambda: not uac.running, 90), "the calls did not end")
        stats = read_sipp_stats(uac_dir)
        context = f"UAC exit {uac.code}\n{uac.output()}\n{read_sipp_errors(uac_dir)}"
        self.assertEqual((uac.code, stats.successful, stats.failed), (0, calls, 0), context)
        await poll(lambda: not uas.running, 15)

        self.assertTrue(await poll(lambda: records() == calls, 60), warden.log_tail())
        distinct = query(self.pg_settings, "SELECT count(DISTINCT call_id) FROM call_records")
        self.assertEqual(distinct, str(calls))

        async def listed() -> bool:
            result = await wardenctl(warden.config_path, "cdr", "list", "--json")
            return result.code == 0 and len(json.loads(result.stdout)) == calls

        self.assertTrue(await poll_async(listed, 30))

        def nothing_pending() -> bool:
            # The spool may keep lines already stored (replayed harmlessly;
            # truncated with nothing pending once 1,000 are): none of its
            # lines may be missing from PostgreSQL.
            lines = spool.read_bytes().splitlines()
            spooled = {decode_line(line).call_id for line in lines if line.strip()}
            stored = set(query(self.pg_settings, "SELECT call_id FROM call_records").split())
            return spooled <= stored

        self.assertTrue(await poll(nothing_pending, 30))
        self.assertEqual(held_ports((32000, 32200)), [])


class MigrateStoreTests(IntegrationTestCase):
    """``wardenctl migrate-store`` from a used SQLite store to PostgreSQL."""

    async def test_sqlite_to_postgresql(self) -> None:
        """
        Extensions and call records of a SQLite Warden are copied with verified
        counts; a Warden on PostgreSQL then lets the migrated phones register
        (their HA1 values came along) and lists the same records; a second run
        is refused because the target holds data.
        """
        sqlite_warden = WardenProcess(self.workdir())
        users = await provision(sqlite_warden.config_path, 5, first=4000)
        records = [call_record(f"migrated-{n}", 1_700_000_000.0 + n) for n in range(25)]
        pool = open_sqlite_pool(str(sqlite_warden.database_path))
        self.addCleanup(pool.close)
        await apply_migrations(pool)
        for record in records:
            await SQLCallRecordStore(pool).add(record)
        before = await wardenctl(sqlite_warden.config_path, "cdr", "list", "--json")

        settings = postgresql_settings(self)
        store = settings["store"]
        result = await run_process(
            [
                *WARDENCTL,
                "migrate-store",
                "--from",
                f"sqlite:{sqlite_warden.database_path}",
                "--to",
                str(store["url"]),
                "--to-password-file",
                str(store["password_file"]),
            ],
            sqlite_warden.workdir,
            timeout=120,
        )
        self.assertEqual(result.code, 0, result.stderr)
        self.assertIn("migrated 5 extensions and 25 call records", result.stdout.splitlines()[-1])
        self.assertIn("(verified)", result.stdout)

        warden = await self.start_warden(settings)
        after = await wardenctl(warden.config_path, "cdr", "list", "--json")
        self.assertEqual(after.code, 0, after.stderr)
        self.assertEqual(json.loads(after.stdout), json.loads(before.stdout))
        client = await self.sip_client(warden)
        number = users.numbers[-1]
        contact = f"<sip:{number}@{LOCALHOST}:{client.local_port}>"
        response = await client.register(number, user_password(number), contact=contact)
        self.assertEqual(response.status, 200)

        again = await run_process(
            [
                *WARDENCTL,
                "migrate-store",
                "--from",
                f"sqlite:{sqlite_warden.database_path}",
                "--to",
                str(store["url"]),
                "--to-password-file",
                str(store["password_file"]),
            ],
            sqlite_warden.workdir,
            timeout=120,
        )
        self.assertEqual(again.code, 1)
        self.assertIn("already holds 5 extensions and 25 call records", again.stderr)


class PostgreSQLAdminTests(IntegrationTestCase):
    """Admin accounts live in the configured store, PostgreSQL included."""

    async def test_admin_accounts_in_postgresql(self) -> None:
        """``wardenctl admin add`` writes the account to PostgreSQL; ``list`` shows it."""
        settings = postgresql_settings(self)
        warden = WardenProcess(self.workdir(), settings=settings)
        added = await wardenctl(warden.config_path, "admin", "add", "carol")
        self.assertEqual(added.code, 0, added.stderr)
        self.assertEqual(query(settings, "SELECT name FROM admin_accounts"), "carol")
        listed = await wardenctl(warden.config_path, "admin", "list")
        self.assertEqual(listed.code, 0, listed.stderr)
        self.assertIn("carol", listed.stdout)


class MigrateStoreArgumentTests(IntegrationTestCase):
    """``wardenctl migrate-store`` refuses what it cannot do, in one line."""

    async def test_bad_arguments(self) -> None:
        """A password in a URL is refused (exit 2, not echoed); the same store on
        both sides is refused (exit 1); an unreachable target fails in one line."""
        workdir = self.workdir()
        with_password = await run_process(
            [*WARDENCTL, "migrate-store", "--from", "sqlite:/tmp/a.db",
             "--to", "postgresql://w:hunter2@127.0.0.1/w"],
            workdir, timeout=60,
        )  # fmt: skip
        self.assertEqual(with_password.code, 2)
        self.assertIn("must not contain a password", with_password.stderr)
        self.assertNotIn("hunter2", with_password.stderr)
        same = await run_process(
            [*WARDENCTL, "migrate-store", "--from", f"sqlite:{workdir}/a.db",
             "--to", f"sqlite://{workdir}/a.db"],
            workdir, timeout=60,
        )  # fmt: skip
        self.assertEqual(same.code, 1)
        self.assertIn("name the same store", same.stderr)
        port = servers.free_tcp_port()
        unreachable = await run_process(
            [*WARDENCTL, "migrate-store", "--from", f"sqlite:{workdir}/a.db",
             "--to", f"postgresql://w@127.0.0.1:{port}/w"],
            workdir, timeout=60,
        )  # fmt: skip
        self.assertEqual(unreachable.code, 1)
        self.assertEqual(len(unreachable.stderr.strip().splitlines()), 1, unreachable.stderr)
        self.assertIn("cannot connect", unreachable.stderr)
