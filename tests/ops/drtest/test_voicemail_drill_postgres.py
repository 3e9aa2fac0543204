"""
The restore drill's voicemail check on PostgreSQL, end to end: a real
``twistd warden`` on a throwaway PostgreSQL server, a SIPp caller leaving a
real message (the caller of ``bench/voicemail.py``), ``wardenctl backup`` and
``twistd warden-drtest``, which restores into a scratch PostgreSQL database and
plays the message from the restored rows and files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.voicemail import measure_message, voicemail_uac_args, write_callers, write_message
from tests.integration.harness import (
    IntegrationTestCase,
    WardenProcess,
    free_media_port,
    free_port,
    poll,
    provision,
    require_sipp,
    run_sipp,
    wardenctl,
)
from tests.integration.sipp_traces import read_sipp_errors
from tests.ops.drtest.test_drill import drtest
from warden.rtp import g711

DATABASE = "warden_dr_voicemail"
MESSAGE_SECONDS = 2.0


class VoicemailDrillOnPostgreSQLTests(IntegrationTestCase):
    """A message left on a PostgreSQL-backed Warden plays after a drill's restore."""

    def setUp(self) -> None:
        """A throwaway PostgreSQL server (skipped locally when it cannot run)."""
        super().setUp()
        from warden.testing.servers import postgresql

        self.pg = postgresql()

    def messages(self) -> list[list[str]]:
        """The live database's messages: [mailbox, caller, duration, audio, message_id]."""
        out = self.pg.psql(
            "SELECT mailbox, caller, duration, audio, message_id FROM voicemail_messages",
            DATABASE,
        )
        return [line.split("|") for line in out.splitlines() if line]

    async def backup_and_drill(self, warden: WardenProcess) -> tuple[int, Any]:
        """A full backup of the running Warden, then a drill of it: (exit code, report)."""
        made = await wardenctl(warden.config_path, "backup")
        self.assertEqual(made.code, 0, made.stderr)
        path = Path(made.stdout.split()[1])
        result, report = await drtest(
            warden.workdir, "--config", str(warden.config_path), "--backup", str(path)
        )
        self.assertIsNotNone(report, f"{result.stdout}{result.stderr}")
        return result.code, report

    async def test_left_message_plays_after_restore(self) -> None:
        """
        A 2 s tone left through SIPp is stored whole in PostgreSQL and the data
        directory; the drill restores it into a scratch database and reports it
        plays. A restored row whose duration no longer matches its audio fails
        the drill, naming the message.
        """
        require_sipp(self)
        url = self.pg.create_database(DATABASE)
        warden = await self.start_warden({"store": {"url": url}})
        users = await provision(warden.config_path, 2, first=7100)
        caller, mailbox = users.numbers
        run_dir = self.workdir()
        sent = write_message(run_dir, MESSAGE_SECONDS)
        inf = run_dir / "callers.csv"
        write_callers(inf, users, [caller], [mailbox])
        args = voicemail_uac_args(
            warden.address, run_dir, inf, 1, 1.0, MESSAGE_SECONDS, free_port(), free_media_port()
        )
        left = await run_sipp(args, run_dir, timeout=60)
        self.assertEqual(left.code, 0, left.stderr + read_sipp_errors(run_dir))
        self.assertTrue(await poll(lambda: bool(self.messages()), 15))
        [(box, by, duration, audio, message_id)] = self.messages()
        self.assertEqual((box, by), (mailbox, caller))
        pcm = g711.read_wav((warden.data_dir / "voicemail" / audio).read_bytes())
        measured = measure_message(float(duration), pcm, sent, 1.0)
        self.assertTrue(measured["ok"], measured)
        self.assertEqual(measured["lost_frames"], 0, measured)

        code, report = await self.backup_and_drill(warden)
        self.assertEqual(code, 0, report)
        steps = {s["name"]: s for s in report["steps"]}
        self.assertIn("into postgresql://", steps["restore-database"]["detail"])
        self.assertIn("1 voicemail messages play", steps["verify-restore"]["detail"])

        # The restored row, not the file, is what the check reads.
        self.pg.psql("UPDATE voicemail_messages SET duration = 9.5", DATABASE)
        code, report = await self.backup_and_drill(warden)
        self.assertEqual(code, 1, report)
        self.assertEqual(report["result"], "fail")
        problems = " ".join(report["problems"])
        self.assertIn(f"voicemail {message_id}: 2.00 s of audio, not 9.5 s", problems)
        databases = self.pg.psql("SELECT datname FROM pg_database ORDER BY datname")
        self.assertNotIn("warden_drtest_", databases)
