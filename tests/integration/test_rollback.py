"""
A rollback to an older Warden after a schema migration (docs/RUNBOOK.md, "Roll
back"): a real ``twistd warden`` on a database whose schema is newer than it
knows refuses to start with exit status 1 and one log line naming the versions,
without a traceback, and leaves the database as it was.
"""

from __future__ import annotations

import sqlite3

from tests.integration.harness import IntegrationTestCase, WardenProcess, run_process


class NewerSchemaTests(IntegrationTestCase):
    """An older Warden meets a newer database."""

    async def test_refuses_newer_schema(self) -> None:
        """Exit status 1, one critical line, no traceback, the database untouched."""
        warden = WardenProcess(self.workdir())
        self._wardens.append(warden)
        await warden.start()
        await warden.stop()
        database = sqlite3.connect(warden.database_path)
        self.addCleanup(database.close)
        # A migration from a later release, applied before the rollback.
        database.execute("INSERT INTO schema_version VALUES (9999, '9999_later_release')")
        database.commit()
        before = database.execute("SELECT * FROM schema_version ORDER BY version").fetchall()
        warden.log_path.unlink()
        result = await run_process(warden.command(), warden.workdir, timeout=60)
        log = warden.log_text()
        self.assertEqual(result.code, 1, log)
        self.assertNotIn("Traceback", log)
        lines = [line for line in log.splitlines() if "Warden could not start" in line]
        self.assertEqual(len(lines), 1, log)
        self.assertIn("schema version 9999, newer than this Warden knows", lines[0])
        after = database.execute("SELECT * FROM schema_version ORDER BY version").fetchall()
        self.assertEqual(after, before)
