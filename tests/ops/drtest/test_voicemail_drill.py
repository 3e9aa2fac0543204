"""The disaster-recovery drill's check that restored voicemail messages play."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from warden.backup.database import SQLiteTarget
from warden.ops.drtest.drill import verify_voicemail_plays
from warden.rtp import g711


class VoicemailPlaysTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        (self.root / "voicemail" / "100").mkdir(parents=True)
        self.database = str(self.root / "warden.db")
        with sqlite3.connect(self.database) as db:
            db.execute("CREATE TABLE voicemail_messages (message_id, audio, duration)")

    def message(self, message_id: str, duration: float, pcm: bytes | None) -> None:
        name = f"100/{message_id}.wav"
        if pcm is not None:
            (self.root / "voicemail" / name).write_bytes(g711.wav_bytes(pcm))
        with sqlite3.connect(self.database) as db:
            db.execute(
                "INSERT INTO voicemail_messages VALUES (?, ?, ?)", (message_id, name, duration)
            )

    def test_restored_messages_play(self) -> None:
        """A message whose WAV is there and lasts its duration plays."""
        self.message("a" * 32, 1.0, g711.tone(400, 1.0))
        self.assertEqual(verify_voicemail_plays(SQLiteTarget(self.database), self.root), (1, []))

    def test_missing_short_or_broken(self) -> None:
        """A missing file, one of another length or not a WAV is a problem each."""
        self.message("b" * 32, 1.0, None)
        self.message("c" * 32, 2.0, g711.tone(400, 1.0))
        self.message("d" * 32, 1.0, b"")
        (self.root / "voicemail" / "100" / ("d" * 32 + ".wav")).write_bytes(b"not a wav")
        played, problems = verify_voicemail_plays(SQLiteTarget(self.database), self.root)
        self.assertEqual(played, 0)
        self.assertEqual(len(problems), 3, problems)
        self.assertIn("1.00 s of audio, not 2.0 s", problems[1])

    def test_database_without_voicemail(self) -> None:
        """A database from before voicemail: nothing to check."""
        other = str(self.root / "old.db")
        sqlite3.connect(other).close()
        self.assertEqual(verify_voicemail_plays(SQLiteTarget(other), self.root), (0, []))
