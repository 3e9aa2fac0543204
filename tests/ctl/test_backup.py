"""wardenctl backup and restore (L{warden.ctl.backup}), in-process on real files."""

from __future__ import annotations

import io
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.backup.helpers import make_installation
from warden.config import parse_config_text

NOW = 1_764_100_000.0


class WardenctlTests(SynchronousTestCase):
    """wardenctl backup and restore, run in-process on real files."""

    def run_ctl(self, *argv: str) -> tuple[int, str, str]:
        from warden.ctl.backup import run_standalone
        from warden.ctl.main import build_parser

        args = build_parser().parse_args(["--config", str(self.config), *argv])
        config = parse_config_text(self.config.read_text())
        out, err = io.StringIO(), io.StringIO()
        clock = Clock()
        clock.advance(NOW)
        code = run_standalone(args, config, clock, out, err)
        return code, out.getvalue(), err.getvalue()

    def setUp(self) -> None:
        """An installation on disk."""
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        self.root = root
        sources = make_installation(root)
        assert sources.config_path is not None
        self.config = Path(sources.config_path)

    def test_backup_then_restore_elsewhere(self) -> None:
        """backup prints the new path; restore into an empty file succeeds."""
        code, out, err = self.run_ctl("backup", "--to", str(self.root / "b"), "--type", "database")
        self.assertEqual(code, 0, err)
        path = out.split()[1]
        # The configuration names a backup key: the backup is an encrypted archive.
        self.assertTrue(path.endswith("-database.tar.aesgcm"), path)
        target = self.root / "restored.db"
        code, out, err = self.run_ctl("restore", path, "--to-database", f"sqlite://{target}")
        self.assertEqual(code, 0, err)
        self.assertIn(f"restored the database into sqlite://{target}", out)

    def test_failures_exit_1_and_bad_url_exits_2(self) -> None:
        """A missing backup exits 1 naming it; a malformed database URL exits 2."""
        code, _, err = self.run_ctl("restore", str(self.root / "nope"))
        self.assertEqual(code, 1)
        self.assertIn("nope: no such backup", err)
        code, _, err = self.run_ctl(
            "restore", str(self.root / "nope"), "--to-database", "postgresql://u:pw@h/db"
        )
        self.assertEqual(code, 2)
        self.assertNotIn("pw", err.replace("password", ""))
