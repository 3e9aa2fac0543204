"""
Music on hold end to end, with the default configuration (``[media]
hold_music = "default"``): a SIPp caller that sends no RTP calls a SIPp
callee whose SDP names this test's own UDP socket, holds it for 3 s
(re-INVITE ``a=sendonly``), resumes (``a=sendrecv``) and hangs up 2 s later.
The socket receives, from Warden's relay and only while the call is held,
the shipped music: PCMA (the callee's codec), 50 packets a second, payloads
equal to the shipped file's encoding from its start, and nothing after the
resume. With ``[media] engine = "rtpengine"`` rtpengine plays the file
(``play media``): the same, the payloads not compared byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.protocol import DatagramProtocol

from tests.integration.baresip import free_port_range
from tests.integration.clients import real_reactor
from tests.integration.harness import (
    LOCALHOST,
    IntegrationTestCase,
    free_port,
    poll,
    provision,
    require_sipp,
    run_sipp,
    sipp_uac_args,
    write_sipp_caller,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_messages, read_sipp_stats
from warden.rtp import g711
from warden.rtp.music import HoldMusic, shipped_music
from warden.testing.rtpengined import RtpengineServer

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


class Collector(DatagramProtocol):
    """Keeps every datagram with its time of arrival."""

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((real_reactor().seconds(), datagram))


class HoldMusicTests(IntegrationTestCase):
    """A held SIPp callee hears the shipped music from the built-in relay until resumed."""

    #: Whether the payloads are Warden's own encoding of the shipped file.
    exact = True

    def setUp(self) -> None:
        """SIPp is needed."""
        super().setUp()
        require_sipp(self)

    def settings(self) -> dict[str, Any]:
        """Warden's settings (its defaults)."""
        return {}

    async def test_held_party_hears_the_music(self) -> None:
        """The held callee hears 3 s of the shipped music in PCMA, and nothing after the resume."""
        warden = await self.start_warden(self.settings())
        users = await provision(warden.config_path, 2, first=4100)
        caller, callee = users.numbers
        collector = Collector()
        port = real_reactor().listenUDP(0, collector, interface=LOCALHOST)
        self.addCleanup(port.stopListening)
        rtp_port = port.getHost().port

        media_csv = self.workdir() / "media.csv"
        media_csv.write_text(f"SEQUENTIAL\n{rtp_port}\n")
        phone, phone_dir = await self.sipp_callee(
            warden, callee, users.passwords[callee], SCENARIOS / "hold_uas.xml",
            more=("-inf", str(media_csv)),
        )  # fmt: skip

        run_dir = self.workdir()
        caller_csv = write_sipp_caller(run_dir, caller, users.passwords[caller], callee)
        args = sipp_uac_args(
            warden.address, SCENARIOS / "hold_uac.xml", caller_csv,
            "-p", str(free_port()), "-trace_msg",
        )  # fmt: skip
        result = await run_sipp(args, run_dir, timeout=90)
        ended_at = real_reactor().seconds()
        stats = read_sipp_stats(run_dir)
        context = (
            f"UAC exit {result.code}\n{result.stderr}\n{read_sipp_errors(run_dir)}\n"
            f"{read_sipp_messages(run_dir)[-3000:]}\nUAS: {phone.output()}\n"
            f"{read_sipp_messages(phone_dir)[-3000:]}"
        )
        self.assertEqual((result.code, stats.successful, stats.failed), (0, 1, 0), context)
        self.assertTrue(await poll(lambda: not phone.running, 30), context)
        self.assertEqual(phone.code, 0, context)

        received = collector.received
        # 3 s of hold at 50 packets a second, and nothing before or after.
        self.assertTrue(120 <= len(received) <= 180, (len(received), context))
        span = received[-1][0] - received[0][0]
        self.assertTrue(2.5 <= span <= 3.6, span)
        self.assertGreater(ended_at - received[-1][0], 1.5)  # stopped at the resume
        first = received[0][1]
        self.assertEqual(first[1], 0x80 | 8)  # marker, PCMA
        payloads = b"".join(data[12:] for _, data in received)
        if self.exact:
            music = HoldMusic(shipped_music()).frames("PCMA")
            self.assertEqual(payloads, music[: len(payloads)])
        self.assertGreater(g711.level(g711.decode("PCMA", payloads)), 500)


class RtpengineHoldMusicTests(HoldMusicTests):
    """The same with rtpengine relaying: it plays the shipped file (ng play media)."""

    exact = False

    def setUp(self) -> None:
        """rtpengine runs for the test."""
        super().setUp()
        self.rtpengine = RtpengineServer(free_port_range(100))  # below the ephemeral ports
        self.addCleanup(self.rtpengine.destroy)
        self.rtpengine.start()

    def settings(self) -> dict[str, Any]:
        """``[media] engine = "rtpengine"`` at the test's daemon."""
        host, port = self.rtpengine.ng
        return {"media": {"engine": "rtpengine", "rtpengine_ng": f"{host}:{port}"}}
