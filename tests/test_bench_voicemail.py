"""
The measurements of ``bench/voicemail.py`` (voicemail under load): how a
stored message is judged against what was sent, the summary, the step's
validity and the files a run sends. The benchmark itself is not run here
(``tests/ops/drtest/test_voicemail_drill_postgres`` leaves a real message with
its caller and judges it with L{measure_message}).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import voicemail
from bench.compare import quiet_enough
from warden.rtp import g711

FRAME = 320  # bytes of 16-bit PCM in 20 ms


def with_lost_frames(pcm: bytes, frames: list[int]) -> bytes:
    """``pcm`` with the 20 ms frames at ``frames`` silent, as a lost packet leaves them."""
    out = bytearray(pcm)
    for index in frames:
        out[index * FRAME : (index + 1) * FRAME] = bytes(FRAME)
    return bytes(out)


class MeasureMessageTests(SynchronousTestCase):
    def test_whole_message(self) -> None:
        """A message holding every frame sent, with the stored duration right, is ok."""
        pcm = g711.tone(1000, 30.0)
        measured = voicemail.measure_message(30.0, pcm, 1500, 1.0)
        self.assertEqual(
            measured,
            {
                "stored_seconds": 30.0, "file_seconds": 30.0, "audible_seconds": 30.0,
                "lost_frames": 0, "duration_error_pct": 0.0, "audible_error_pct": 0.0,
                "ok": True,
            },
        )  # fmt: skip

    def test_lost_frames_are_silence(self) -> None:
        """
        Frames lost inside the message leave its length alone but not its audible
        length: 15 of 1500 is -1.0% (within 1%), 16 is -1.067% (not).
        """
        pcm = g711.tone(1000, 30.0)
        lost = list(range(50, 1500, 100))
        fifteen = voicemail.measure_message(30.0, with_lost_frames(pcm, lost), 1500, 1.0)
        self.assertEqual((fifteen["lost_frames"], fifteen["audible_error_pct"]), (15, -1.0))
        self.assertEqual(fifteen["file_seconds"], 30.0)
        self.assertTrue(fifteen["ok"])
        sixteen = voicemail.measure_message(30.0, with_lost_frames(pcm, [0, *lost]), 1500, 1.0)
        self.assertEqual((sixteen["lost_frames"], sixteen["audible_error_pct"]), (16, -1.067))
        self.assertFalse(sixteen["ok"])

    def test_stored_duration_off(self) -> None:
        """A stored duration 1.5% short fails even when the audio is whole."""
        measured = voicemail.measure_message(29.55, g711.tone(1000, 30.0), 1500, 1.0)
        self.assertEqual(measured["duration_error_pct"], -1.5)
        self.assertFalse(measured["ok"])

    def test_audible_frames_counts_whole_frames(self) -> None:
        """Only 20 ms frames above the speech level count; a trailing partial frame does not."""
        pcm = bytes(FRAME * 5) + g711.tone(1000, 1.0) + g711.tone(1000, 0.01, amplitude=100)
        self.assertEqual(voicemail.audible_frames(pcm), 50)


class MeasureMessagesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        (self.root / "500").mkdir(parents=True)

    def row(
        self, mailbox: str, caller: str, pcm: bytes | None, duration: float
    ) -> dict[str, object]:
        name = f"{mailbox}/m{mailbox}.wav"
        if pcm is not None:
            (self.root / mailbox).mkdir(exist_ok=True)
            (self.root / name).write_bytes(g711.wav_bytes(pcm))
        return {"message_id": mailbox, "mailbox": mailbox, "caller": caller,
                "duration": duration, "audio": name}  # fmt: skip

    def test_summary(self) -> None:
        """
        Per expected mailbox: measured, missing, unreadable or left by the wrong
        caller; messages to other mailboxes are ignored; the summary counts them.
        """
        tone = g711.tone(1000, 5.0)
        rows = [
            self.row("501", "401", tone, 5.0),
            self.row("502", "402", with_lost_frames(tone, [3]), 5.0),
            self.row("503", "499", tone, 5.0),
            self.row("504", "404", None, 5.0),
            self.row("999", "400", tone, 5.0),
        ]
        expected = {"501": "401", "502": "402", "503": "403", "504": "404", "505": "405"}
        summary = voicemail.measure_messages(rows, self.root, expected, 250)
        by_mailbox = {m["mailbox"]: m for m in summary["messages"]}
        self.assertEqual(summary["messages_missing"], ["505"])
        self.assertEqual(summary["messages_stored"], 4)
        self.assertEqual(summary["messages_within_tolerance"], 2)
        self.assertEqual(summary["messages_without_lost_frames"], 2)
        self.assertEqual(summary["lost_frames_total"], 1)
        self.assertEqual((summary["audible_error_pct_min"], summary["audible_error_pct_max"]),
                         (-0.4, 0.0))  # fmt: skip
        self.assertFalse(summary["all_within_tolerance"])
        self.assertIn("left by 499, not 403", by_mailbox["503"]["problem"])
        self.assertIn("audio unreadable", by_mailbox["504"]["problem"])
        self.assertNotIn("999", by_mailbox)

    def test_all_within(self) -> None:
        """Every expected message there and whole: all within tolerance."""
        rows = [self.row("501", "401", g711.tone(1000, 5.0), 5.0)]
        summary = voicemail.measure_messages(rows, self.root, {"501": "401"}, 250)
        self.assertTrue(summary["all_within_tolerance"])


class ValidityAndVerdictTests(SynchronousTestCase):
    def document(self, other: float, valid: bool) -> dict[str, object]:
        return {
            "valid": valid,
            "max_other_pct": 10.0,
            "messages": {"messages_within_tolerance": 50, "messages_expected": 50,
                         "sent_seconds": 30.0, "lost_frames_total": 0},
            "relayed": {"succeeded": 200, "planned": 200},
            "window": {"warden_cpu_pct": 40.0, "other_cpu_pct": other},
        }  # fmt: skip

    def test_quiet_enough(self) -> None:
        """The step is valid below 10% of a core used by everything else, not at it."""
        self.assertTrue(quiet_enough({"other_cpu_pct": 9.9}))
        self.assertFalse(quiet_enough({"other_cpu_pct": 10.0}))

    def test_verdict(self) -> None:
        """The verdict line gives the figures and says whether they may be published."""
        valid = voicemail.verdict(self.document(3.0, True))
        self.assertIn("50/50 messages within 1% of the 30 s sent (0 frames lost)", valid)
        self.assertIn("200/200 relayed calls succeeded", valid)
        self.assertTrue(valid.endswith("VALID step (the machine was quiet enough)"))
        invalid = voicemail.verdict(self.document(55.0, False))
        self.assertIn("everything else 55.0%", invalid)
        self.assertIn("INVALID step", invalid)
        self.assertIn("publish no CPU or throughput figure", invalid)

    def test_relayed_ok(self) -> None:
        """Relayed calls are ok when every planned call succeeded with relay ports."""
        ok = {"failed": 0, "succeeded": 10, "answered_with_relay_ports": 10}
        self.assertTrue(voicemail.relayed_ok(ok, 10))
        self.assertFalse(voicemail.relayed_ok({**ok, "answered_with_relay_ports": 9}, 10))
        self.assertFalse(voicemail.relayed_ok({**ok, "failed": 1}, 10))


class RunFilesTests(SynchronousTestCase):
    def test_sizes(self) -> None:
        """The default is the issue's size; --quick a small one; sizes can be given."""
        full = voicemail.parse_args([])
        self.assertEqual((full.callers, full.message_seconds, full.relayed), (50, 30.0, 200))
        quick = voicemail.parse_args(["--quick"])
        self.assertEqual((quick.callers, quick.message_seconds, quick.relayed), (5, 5.0, 10))
        mine = voicemail.parse_args(["--quick", "--callers", "7"])
        self.assertEqual(mine.callers, 7)

    def test_message_pcap_holds_the_wav(self) -> None:
        """
        message.pcap carries message.wav as 20 ms A-law packets with running
        sequence numbers and timestamps; the scenario is copied next to it.
        """
        run_dir = Path(self.mktemp())
        run_dir.mkdir()
        self.assertEqual(voicemail.write_message(run_dir, 2.0), 100)
        self.assertTrue((run_dir / "voicemail_uac.xml").is_file())
        alaw = g711.encode("PCMA", g711.read_wav((run_dir / "message.wav").read_bytes()))
        data = (run_dir / "message.pcap").read_bytes()[24:]
        payloads, stamps = [], []
        while data:
            length = struct.unpack("<I", data[8:12])[0]
            frame, data = data[16 : 16 + length], data[16 + length :]
            rtp = frame[14 + 20 + 8 :]
            stamps.append(struct.unpack("!I", rtp[4:8])[0])
            payloads.append(rtp[12:])
        self.assertEqual(b"".join(payloads), alaw)
        self.assertEqual(stamps, [160 * i for i in range(100)])

    def test_greeting_wait_matches_the_scenario(self) -> None:
        """The scenario's first pause is GREETING_WAIT, and the shipped greeting fits in it."""
        text = (voicemail.SCENARIOS / "voicemail_uac.xml").read_text(encoding="ascii")
        pauses = re.findall(r'<pause milliseconds="(\d+)"/>', text)
        self.assertEqual(pauses, [str(round(voicemail.GREETING_WAIT * 1000))])
        self.assertLess(voicemail.check_greeting_fits(), voicemail.GREETING_WAIT - 1.0)
