"""
``twistd warden-drtest`` on backups holding call records that were pending in
the CDR spool: the scratch Warden replays them into its database, and a damaged
spool copy fails the drill with the file named.
"""

from __future__ import annotations

from pathlib import Path

from tests.backup.helpers import make_installation, manifest_of
from tests.integration.harness import IntegrationTestCase
from tests.ops.drtest.test_drill import drtest
from tests.store.conformance import call_record
from warden.backup.backup import create_backup
from warden.backup.spool import SPOOL_COPY
from warden.store.spool import default_spool_path, encode_record

NOW = 1_764_100_000.0


class DrillWithSpoolTests(IntegrationTestCase):
    """SQLite installations whose spool holds records the database does not."""

    def backup_with_spool(self) -> tuple[Path, Path, str]:
        """(root, backup, config path): two records pending, one already stored."""
        root = self.workdir()
        sources = make_installation(root)
        Path(default_spool_path(sources.data_dir)).write_bytes(
            encode_record(call_record("call-0", 900.0))  # stored, not yet compacted away
            + encode_record(call_record("pending-1", 1500.0))
            + encode_record(call_record("pending-2", 1510.0))
        )
        path = create_backup(sources, "full", root / "backups", NOW)
        manifest = manifest_of(path, sources)
        assert manifest.database is not None
        self.assertEqual(manifest.database.spool.records, 2)
        assert sources.config_path is not None
        return root, path, sources.config_path

    async def test_scratch_warden_replays_the_spool(self) -> None:
        """
        The drill restores the pending records into the scratch spool, checks them
        apart from the row counts, and sees the scratch Warden store them.
        """
        root, path, config = self.backup_with_spool()
        result, report = await drtest(
            root, "--config", config, "--backup", str(path), "--target-rpo", "1e12"
        )
        self.assertEqual(result.code, 0, f"{result.stdout}{result.stderr}")
        steps = {s["name"]: s for s in report["steps"]}
        self.assertIn(
            "2 pending call records into the CDR spool", steps["restore-database"]["detail"]
        )
        self.assertIn("2 pending call records in the CDR spool", steps["verify-restore"]["detail"])
        self.assertEqual(
            steps["replay-spool"]["detail"], "2 spooled call records are in the database"
        )
        names = [s["name"] for s in report["steps"]]
        self.assertLess(names.index("start-scratch-warden"), names.index("replay-spool"))
        self.assertTrue(steps["prove-call"]["ok"])

    async def test_corrupted_spool_copy_fails(self) -> None:
        """A flipped byte in the backup's spool copy: exit 1, the report names the file."""
        root, path, config = self.backup_with_spool()
        copy = path / SPOOL_COPY
        data = bytearray(copy.read_bytes())
        data[len(data) // 2] ^= 0x20
        copy.write_bytes(bytes(data))
        result, report = await drtest(
            root, "--config", config, "--backup", str(path), "--target-rpo", "1e12"
        )
        self.assertEqual(result.code, 1, result.stdout)
        self.assertEqual(report["result"], "fail")
        expected = f"{SPOOL_COPY}: SHA-256 mismatch"
        self.assertTrue(any(expected in p for p in report["problems"]), report["problems"])
        self.assertIn(expected, result.stdout)
        self.assertNotIn("restore-database", [s["name"] for s in report["steps"]])
