"""
Call recording end to end: a real ``twistd warden`` with ``[recording]`` set,
two baresip phones each playing its own tone (A 1000 Hz, B 440 Hz) into a call
through Warden's relay; the recording the call record names must be a stereo
WAV with A's tone on the left channel and B's on the right.
"""

from __future__ import annotations

import json
import struct
import wave
from pathlib import Path
from typing import Any

from tests.integration.admin_client import AdminClient, new_admin
from tests.integration.baresip import BaresipPhone, BaresipTestCase, free_port_range
from tests.integration.baresip_audio import SAMPLE_RATE, analyse_tone, write_tone
from tests.integration.clients import pause, poll_async
from tests.integration.harness import WardenProcess, provision, wardenctl

TONES = {"A": 1000.0, "B": 440.0}
TONE_SECONDS = 90.0
PACKETS_PER_SECOND = 50


def stereo_channels(path: Path) -> tuple[list[int], list[int]]:
    """The left and right samples of a 16-bit 8 kHz stereo WAV file."""
    with wave.open(str(path), "rb") as wav:
        layout = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
        if layout != (2, 2, SAMPLE_RATE):
            raise ValueError(f"{path}: (channels, width, rate) {layout}")
        count = wav.getnframes()
        frames = struct.unpack(f"<{2 * count}h", wav.readframes(count))
    return list(frames[0::2]), list(frames[1::2])


class RecordingTests(BaresipTestCase):
    """baresip A calls baresip B through Warden, which records the call."""

    async def _call(
        self, recording: dict[str, Any]
    ) -> tuple[WardenProcess, BaresipPhone, BaresipPhone]:
        """A Warden with ``[recording]`` set to ``recording``; A has called B, who answered."""
        low, high = free_port_range()
        warden = await self.start_warden(
            {"media": {"port_min": low, "port_max": high}, "recording": recording}
        )
        users = await provision(warden.config_path, 2, first=3001)
        phones = []
        for name, number in zip("AB", users.numbers):
            tone = write_tone(self.workdir() / f"{name}.wav", TONES[name], TONE_SECONDS)
            phone = await self.start_phone(name, warden, number, users.passwords[number], tone)
            phones.append(phone)
        a, b = phones
        for phone in phones:
            await phone.wait_registered()
        await a.command("dial", b.aor)
        await b.wait_event("CALL_INCOMING")
        await b.command("accept")
        await a.wait_event("CALL_ESTABLISHED")
        await b.wait_event("CALL_ESTABLISHED")
        return warden, a, b

    async def _hang_up(
        self, warden: WardenProcess, a: BaresipPhone, b: BaresipPhone
    ) -> dict[str, Any]:
        """A hangs up; the call's record, once written (waits up to 15 s)."""
        await a.command("hangup")
        await a.wait_event("CALL_CLOSED")
        await b.wait_event("CALL_CLOSED")
        for _ in range(30):
            listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
            self.assertEqual(listed.code, 0, listed.stderr)
            records: list[dict[str, Any]] = json.loads(listed.stdout)
            if records:
                return records[0]
            await pause(0.5)
        self.fail("no call record was written")

    async def _recording_shown(
        self, warden: WardenProcess, admin: AdminClient
    ) -> tuple[bool, bool]:
        """Whether the one live call is shown recorded by ``wardenctl calls`` and the API."""
        listed = await wardenctl(warden.config_path, "calls", "--json")
        self.assertEqual(listed.code, 0, listed.stderr)
        (summary,) = json.loads(listed.stdout)
        table = await wardenctl(warden.config_path, "calls")
        self.assertIn("REC", table.stdout)
        self.assertEqual(summary["recording"], " yes " in table.stdout, table.stdout)
        api = await admin.request("GET", "/api/v1/calls")
        self.assertEqual(api.status, 200, api.body)
        (call,) = api.json()["items"]
        return bool(summary["recording"]), bool(call["recording"])

    async def _channels(
        self, warden: WardenProcess, record: dict[str, Any]
    ) -> tuple[list[int], list[int]]:
        """The recording's channels, once the writer has finished the file (up to 10 s)."""
        self.assertTrue(record["recording"], record)
        path = warden.data_dir / "recordings" / record["recording"]
        for _ in range(20):
            try:
                return stereo_channels(path)
            except (OSError, EOFError, wave.Error, struct.error):
                await pause(0.5)
        return stereo_channels(path)

    def _assert_tone(
        self, samples: list[int], frequency: float, seconds: float, what: str
    ) -> None:
        analysis = analyse_tone(samples, frequency)
        message = f"{what}: {analysis.describe(frequency)}"
        self.assertGreaterEqual(analysis.tone_seconds, seconds, message)
        self.assertLessEqual(abs(analysis.dominant - frequency), 20, message)

    async def test_always(self) -> None:
        """
        With ``always = ["*"]`` a 3 s call is recorded from its answer: the
        record names the file and says ``always``; the left channel holds A's
        1000 Hz tone, the right B's 440 Hz tone, each for most of the call.
        """
        warden, a, b = await self._call({"always": ["*"]})
        for phone in (a, b):
            await phone.wait_rtp_received(3 * PACKETS_PER_SECOND)
        record = await self._hang_up(warden, a, b)
        self.assertEqual(record["recording_info"]["trigger"], "always", record)
        left, right = await self._channels(warden, record)
        self.assertEqual(len(left), len(right))
        self._assert_tone(left, TONES["A"], 2.5, "left (caller)")
        self._assert_tone(right, TONES["B"], 2.5, "right (callee)")

    async def test_on_demand(self) -> None:
        """
        With ``on_demand = ["*"]`` nothing is recorded until A dials ``*1``
        (RFC 4733 events through the relay); then the call is recorded, the
        record saying on demand, by A. ``wardenctl calls`` (JSON and table) and
        ``/api/v1/calls`` show the call not recorded before ``*1`` and recorded
        after it.
        """
        warden, a, b = await self._call({"on_demand": ["*"]})
        admin, _ = await new_admin(warden)
        await b.wait_rtp_received(PACKETS_PER_SECOND)
        self.assertFalse((warden.data_dir / "recordings").exists())
        self.assertEqual(await self._recording_shown(warden, admin), (False, False))
        await a.command("sndcode", "*1")
        await b.wait_event("CALL_DTMF_END", count=2)
        shown: list[tuple[bool, bool]] = []

        async def shown_recording() -> bool:
            shown.append(await self._recording_shown(warden, admin))
            return shown[-1] == (True, True)

        self.assertTrue(await poll_async(shown_recording, 15), shown)
        await b.wait_rtp_received(4 * PACKETS_PER_SECOND)
        record = await self._hang_up(warden, a, b)
        info = record["recording_info"]
        self.assertEqual((info["trigger"], info["by"]), ("on_demand", a.number), record)
        left, right = await self._channels(warden, record)
        self._assert_tone(left, TONES["A"], 1.0, "left (caller)")
        self._assert_tone(right, TONES["B"], 1.0, "right (callee)")
