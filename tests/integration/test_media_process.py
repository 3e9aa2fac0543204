"""
Calls end to end with the built-in relay in its own media process
(``[media] relay_process = true``, ADR 0033): the SIPp calls of
tests/integration/test_calls.py through a real ``twistd warden`` whose relay
runs in a child process, and that child killed: Warden starts it again and the
next calls' media flows. Then the media suites (SRTP, recording, voicemail,
IVR, hold music) and tests/integration/test_baresip.py (call records that
count every packet and DTMF event: the media process's final counters, ADR
0033) run again with the media process.
Skipped locally without SIPp or baresip; an error under CI=true.
"""

from __future__ import annotations

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
from tests.integration.harness import poll


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

    # Not the other tests' ranges: they may run at once on one machine.
    media_range = (34000, 34200)

    def media_config(self) -> dict[str, object]:
        """Warden's ``[media]``: the built-in relay, out of process."""
        return {**super().media_config(), "relay_process": True}

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


PROCESS = {"relay_process": True}


class MediaProcessSrtpTests(test_srtp.SrtpCallTests):
    """SRTP calls (ADR 0019) with the relay in the media process."""

    media_settings = PROCESS


class MediaProcessRecordingTests(test_recording.RecordingTests):
    """Call recording (the tap's audio crosses the control channel)."""

    media_settings = PROCESS


class MediaProcessVoicemailTests(test_voicemail.VoicemailTests):
    """Voicemail (Warden's endpoint is a phone to the media process)."""

    media_settings = PROCESS


class MediaProcessIvrTests(test_ivr.IvrTests):
    """IVR menus, digits through the media process."""

    media_settings = PROCESS


class MediaProcessHoldMusicTests(test_hold_music.HoldMusicTests):
    """Hold music played by the media process."""

    media_settings = PROCESS


class MediaProcessBaresipTests(test_baresip.BaresipCallTests):
    """baresip calls; their records count every packet (the process's final counters)."""

    media_settings = PROCESS
