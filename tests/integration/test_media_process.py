"""
The built-in relay's media process (``[media] relay_process``, ADR 0033), end
to end with a real ``twistd warden``. The media process is the default, so the
other integration suites run their calls through it; here its child is killed
and Warden starts it again (the next calls' media flows, no process is left
behind when Warden stops), and the opt-out, ``relay_process = false`` (the
relay in the SIP process), runs the SIPp calls of
tests/integration/test_calls.py and the media suites (SRTP, recording,
voicemail, IVR, hold music, baresip's call records that count every packet and
DTMF event). Skipped locally without SIPp or baresip; an error under CI=true.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.integration import (
    test_baresip,
    test_calls,
    test_hold_music,
    test_ivr,
    test_recording,
    test_srtp,
    test_voicemail,
)
from tests.integration.baresip import free_port_range
from tests.integration.harness import poll, wardenctl


def children(pid: int) -> set[int]:
    """The child processes of ``pid`` (``/proc/<pid>/task/*/children``)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def media_processes(pid: int) -> set[int]:
    """Warden's children running ``warden.rtp.mediaproc``."""
    found = set()
    for child in children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"warden.rtp.mediaproc" in cmdline:
            found.add(child)
    return found


class MediaProcessCallTests(test_calls.SippCallTests):
    """SIPp UAC -> Warden (B2BUA) with the relay in the media process -> SIPp UAS."""

    def setUp(self) -> None:
        super().setUp()
        # Free ports below the ephemeral range, not the other tests' ranges.
        self.media_range = free_port_range(200)

    async def test_media_process_killed_and_restarted(self) -> None:
        """A killed media process is started again, and calls' media flows through it."""
        calls = 2
        warden, users, uas, uac_args = await self.call_setup(calls)
        self.assertTrue(await poll(lambda: len(media_processes(warden.pid)) == 1, 15))
        (first,) = media_processes(warden.pid)
        os.kill(first, signal.SIGKILL)
        restarted = await poll(lambda: len(media_processes(warden.pid) - {first}) == 1, 15)
        self.assertTrue(restarted, warden.log_tail())
        await self.run_uac([*uac_args, "-r", "2", "-d", "3000"], calls, uas)
        await self.assertAllRelayed(warden, users, calls)
        self.assertIn("Media process ended", warden.log_tail(400))
        (second,) = media_processes(warden.pid)
        await warden.stop()
        self.assertTrue(await poll(lambda: not Path(f"/proc/{second}").exists(), 15))


class MediaProcessesCallTests(test_calls.SippCallTests):
    """
    ``[media] relay_processes = 2``: two media processes, each with half the
    ports; calls go to both, and one killed is started again on its own.
    """

    def setUp(self) -> None:
        super().setUp()
        self.media_range = free_port_range(200)

    def media_config(self) -> dict[str, object]:
        """Warden's ``[media]``: the built-in relay in two media processes."""
        return {**super().media_config(), "relay_processes": 2}

    async def test_calls_spread_and_one_process_restarted(self) -> None:
        """Calls' media goes through both processes' ports; a killed one comes back."""
        calls = 4
        warden, users, uas, uac_args = await self.call_setup(calls)
        self.assertTrue(await poll(lambda: len(media_processes(warden.pid)) == 2, 15))
        before = media_processes(warden.pid)
        killed = min(before)
        os.kill(killed, signal.SIGKILL)
        restarted = await poll(
            lambda: (
                len(media_processes(warden.pid) - before) == 1
                and len(media_processes(warden.pid)) == 2
            ),
            15,
        )
        self.assertTrue(restarted, warden.log_tail())
        self.assertIn(max(before), media_processes(warden.pid))  # the other lived on
        await self.run_uac([*uac_args, "-r", "2", "-d", "3000"], calls, uas)
        await self.assertAllRelayed(warden, users, calls)
        listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
        low, high = self.media_range
        middle = low + (high - low + 1) // 2
        halves = {
            record["media"][side]["rtp_port"] < middle
            for record in json.loads(listed.stdout)
            for side in ("a", "b")
        }
        self.assertEqual(halves, {True, False}, listed.stdout)  # both processes relayed
        remaining = media_processes(warden.pid)
        await warden.stop()
        self.assertTrue(
            await poll(lambda: not any(Path(f"/proc/{p}").exists() for p in remaining), 15)
        )


class InProcessCallTests(test_calls.SippCallTests):
    """SIPp calls with ``relay_process = false``: the relay in the SIP process."""

    def setUp(self) -> None:
        super().setUp()
        self.media_range = free_port_range(200)

    def media_config(self) -> dict[str, object]:
        """Warden's ``[media]``: the built-in relay, in process."""
        return {**super().media_config(), "relay_process": False}


IN_PROCESS = {"relay_process": False}


class InProcessSrtpTests(test_srtp.SrtpCallTests):
    """SRTP calls (ADR 0019) with the relay in the SIP process."""

    media_settings = IN_PROCESS


class InProcessRecordingTests(test_recording.RecordingTests):
    """Call recording, the tap in the SIP process."""

    media_settings = IN_PROCESS


class InProcessVoicemailTests(test_voicemail.VoicemailTests):
    """Voicemail with the relay in the SIP process."""

    media_settings = IN_PROCESS


class InProcessIvrTests(test_ivr.IvrTests):
    """IVR menus, digits counted in the SIP process."""

    media_settings = IN_PROCESS


class InProcessHoldMusicTests(test_hold_music.HoldMusicTests):
    """Hold music played by the SIP process."""

    media_settings = IN_PROCESS


class InProcessBaresipTests(test_baresip.BaresipCallTests):
    """baresip calls with the relay in the SIP process."""

    media_settings = IN_PROCESS
