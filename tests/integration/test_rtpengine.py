"""
Calls end to end with rtpengine as the media engine (ADR 0025): a real
``twistd warden`` with ``[media] engine = "rtpengine"``, a real userspace
rtpengine on free ports, and the same SIPp calls as tests/integration/test_calls.py
(G.711 RTP from a pcap, echoed by the callee): RTP must flow both ways through
rtpengine's ports, the call records must hold its counters, and its ports must
be released. Skipped locally without rtpengine or SIPp; an error under CI=true.
"""

from __future__ import annotations

from typing import Any

from tests.integration import test_calls
from warden.testing.rtpengined import RtpengineServer


class RtpengineCallTests(test_calls.SippCallTests):
    """SIPp UAC -> Warden (B2BUA) with rtpengine relaying the media -> SIPp UAS."""

    # Not the built-in tests' range: both may run at once on one machine.
    media_range = (33000, 33200)

    def setUp(self) -> None:
        """SIPp, its pcap and rtpengine are needed; rtpengine runs for the test."""
        super().setUp()
        self.rtpengine = RtpengineServer(self.media_range)
        self.addCleanup(self.rtpengine.destroy)
        self.rtpengine.start()

    def media_config(self) -> dict[str, object]:
        """Warden's ``[media]``: rtpengine at the test's daemon."""
        host, port = self.rtpengine.ng
        return {"engine": "rtpengine", "rtpengine_ng": f"{host}:{port}"}

    def assertRelayed(self, record: dict[str, Any], caller: str, callee: str) -> None:
        """Relayed both ways through rtpengine's ports, with rtpengine's counters."""
        super().assertRelayed(record, caller, callee)
        for side in ("a", "b"):
            self.assertEqual(record["media"][side]["engine"], "rtpengine", record["media"])
