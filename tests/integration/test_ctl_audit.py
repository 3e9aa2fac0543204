"""
Real ``wardenctl`` processes on a real SQLite store write audit entries for
extension edits, admin accounts, backups and restores, named after the local
user (``cli:<name>``), into the same log the admin API shows.
"""

from __future__ import annotations

import json
import sqlite3

from tests.integration.harness import IntegrationTestCase, WardenProcess, wardenctl
from warden.ctl.audit import cli_actor


def audit_rows(warden: WardenProcess) -> list[tuple[str, str, str, int, dict[str, object]]]:
    """(actor, action, target, status, detail) of every audit entry, in order."""
    connection = sqlite3.connect(warden.database_path)
    try:
        rows = connection.execute(
            "SELECT actor, action, target, status, detail FROM audit_log ORDER BY id"
        ).fetchall()
    finally:
        connection.close()
    return [(a, b, c, d, json.loads(e)) for a, b, c, d, e in rows]


class CtlAuditTests(IntegrationTestCase):
    """wardenctl's changes reach the audit log."""

    async def test_changes_backup_and_restore_audited(self) -> None:
        """Each change is one entry; a restore (and a failed one) is recorded after it ran."""
        warden = WardenProcess(self.workdir())
        config = warden.config_path
        for argv in (("extension", "add", "100"), ("admin", "add", "ops"),
                     ("extension", "set", "100", "--new-password")):  # fmt: skip
            result = await wardenctl(config, *argv)
            self.assertEqual(result.code, 0, result.stderr)
        self.assertEqual(
            [(r[0], r[1], r[2], r[3]) for r in audit_rows(warden)],
            [(cli_actor(), "wardenctl extension add", "100", 0),
             (cli_actor(), "wardenctl admin add", "ops", 0),
             (cli_actor(), "wardenctl extension set", "100", 0)],
        )  # fmt: skip
        backup = await wardenctl(config, "backup")
        self.assertEqual(backup.code, 0, backup.stderr)
        self.assertEqual(audit_rows(warden)[-1][1:4], ("wardenctl backup", "", 0))
        path = backup.stdout.split()[1]
        restored = await wardenctl(config, "restore", path, "--force")
        self.assertEqual(restored.code, 0, restored.stderr)
        missing = await wardenctl(config, "restore", path + "-missing")
        self.assertEqual(missing.code, 1)
        rows = audit_rows(warden)
        # The restored database holds the log as it was when the backup was made,
        # then the restore itself and the failed attempt.
        self.assertEqual([r[1] for r in rows[-2:]], ["wardenctl restore", "wardenctl restore"])
        self.assertEqual([(r[2], r[3]) for r in rows[-2:]], [(path, 0), (path + "-missing", 1)])
        self.assertTrue(rows[-2][4]["force"])
