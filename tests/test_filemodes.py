"""
L{warden.filemodes}: files and directories open to other users are made private
(symbolic links left alone), and the server says so with a warning.
"""

from __future__ import annotations

import os
import stat

from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from warden.filemodes import secure_directories, tighten


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class TightenTests(SynchronousTestCase):
    """tighten() and secure_directories()."""

    def setUp(self) -> None:
        """A data directory with a world-readable database and backup, and a link out."""
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "backups", "b1"))
        self.outside = os.path.abspath(self.mktemp())
        with open(self.outside, "w") as f:
            f.write("not Warden's")
        os.chmod(self.outside, 0o644)
        for name in ("warden.db", os.path.join("backups", "b1", "warden.db")):
            with open(os.path.join(self.root, name), "w") as f:
                f.write("ha1")
            os.chmod(os.path.join(self.root, name), 0o644)
        for name in ("", "backups", os.path.join("backups", "b1")):
            os.chmod(os.path.join(self.root, name), 0o755)
        os.symlink(self.outside, os.path.join(self.root, "link"))

    def test_open_paths_become_private(self) -> None:
        """Directories become 0700, files 0600; the link's target is not touched."""
        changed, failed = tighten([self.root, os.path.join(self.root, "missing")])
        self.assertEqual((len(changed), failed), (5, []))
        for directory, _dirs, files in os.walk(self.root):
            self.assertEqual(_mode(directory), 0o700)
            for name in files:
                if name != "link":
                    self.assertEqual(_mode(os.path.join(directory, name)), 0o600)
        self.assertEqual(_mode(self.outside), 0o644)
        self.assertEqual(tighten([self.root]), ([], []))

    def test_warning(self) -> None:
        """secure_directories logs one warning with the count; none when all is private."""
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        secure_directories([self.root])
        secure_directories([self.root])
        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["count"], 5)
