"""
Calls end to end with rtpengine as the media engine (ADR 0025): a real
``twistd warden`` with ``[media] engine = "rtpengine"``, a real userspace
rtpengine on free ports, and the same SIPp calls as tests/integration/test_calls.py
(G.711 RTP from a pcap, echoed by the callee): RTP must flow both ways through
rtpengine's ports, the call records must hold its counters, and its ports must
be released; with rtpengine not answering, a call is refused with 503. Skipped
locally without rtpengine or SIPp; an error under CI=true.
"""

from __future__ import annotations

from typing import Any

from tests.integration import test_calls
from tests.integration.baresip import free_port_range
from tests.integration.clients import SipUdpClient
from tests.integration.harness import LOCALHOST, IntegrationTestCase, provision
from warden.sip.auth import answer_challenge
from warden.sip.message import new_tag
from warden.testing.rtpengined import RtpengineServer, free_udp_port
from warden.testing.rtpnet import sdp_body


class RtpengineCallTests(test_calls.SippCallTests):
    """SIPp UAC -> Warden (B2BUA) with rtpengine relaying the media -> SIPp UAS."""

    def setUp(self) -> None:
        """SIPp, its pcap and rtpengine are needed; rtpengine runs for the test."""
        super().setUp()
        # Free ports below the ephemeral range (a fixed range inside it was
        # once held by some client's socket when the test checked it).
        self.media_range = free_port_range(200)
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


class RtpengineDownTests(IntegrationTestCase):
    """rtpengine not answering at ``[media] rtpengine_ng``: calls get 503, Warden stays up."""

    async def test_call_refused_with_503(self) -> None:
        """An authenticated INVITE is answered 503 with Retry-After; OPTIONS still 200."""
        # A free port with nothing behind it: requests go unanswered (or refused).
        ng = f"{LOCALHOST}:{free_udp_port()}"
        warden = await self.start_warden({"media": {"engine": "rtpengine", "rtpengine_ng": ng}})
        users = await provision(warden.config_path, 2, first=2100)
        caller, callee = users.numbers
        sip = await SipUdpClient.open(warden.address)
        self.addCleanup(sip.close)
        contact = f"<sip:{callee}@{LOCALHOST}:{sip.local_port}>"
        registered = await sip.register(callee, users.passwords[callee], contact)
        self.assertEqual(registered.status, 200, registered)
        host, port = warden.address
        uri = f"sip:{callee}@{host}:{port}"
        common = [
            ("From", f"<sip:{caller}@{host}>;tag={new_tag()}"),
            ("To", f"<{uri}>"),
            ("Call-ID", f"{new_tag()}@{LOCALHOST}"),
            ("Contact", f"<sip:{caller}@{LOCALHOST}:{sip.local_port}>"),
            ("Content-Type", "application/sdp"),
        ]
        body = sdp_body(LOCALHOST, free_udp_port())
        challenged = await sip.request("INVITE", uri, [*common, ("CSeq", "1 INVITE")], body=body)
        self.assertEqual(challenged.status, 407, challenged)
        challenge = challenged.get("Proxy-Authenticate")
        assert challenge is not None
        credentials = answer_challenge(challenge, caller, users.passwords[caller], "INVITE", uri)
        refused = await sip.request(
            "INVITE",
            uri,
            [*common, ("CSeq", "2 INVITE"), ("Proxy-Authorization", credentials)],
            timeout=30,
            body=body,
        )
        self.assertEqual((refused.status, refused.get("Retry-After")), (503, "5"), refused)
        self.assertIn("No media for a call", warden.log_text())
        self.assertNotIn("Traceback", warden.log_text())
        self.assertEqual((await sip.options()).status, 200)
