"""
Encrypted media end to end (ADR 0019): baresip phones registered over SIP/TLS
offer SRTP with SDES keys (``mediaenc=srtp-mand``: ``RTP/SAVP`` and
``a=crypto``) and call through a real ``twistd warden``, which keys each leg on
its own and decrypts and re-encrypts in its relay. Each phone plays its own
tone (A 1000 Hz, B 440 Hz); a test hears whether the audio crossed.
"""

from __future__ import annotations

import json
import re
import socket
import struct
from typing import Any

from tests.integration.baresip import BaresipPhone, BaresipTestCase, free_port_range
from tests.integration.baresip_audio import analyse_tone, write_tone
from tests.integration.clients import LOCALHOST, pause
from tests.integration.harness import WardenProcess, free_port, provision, wardenctl

TONES = {"A": 1000.0, "B": 440.0}
TONE_SECONDS = 90.0
PACKETS_PER_SECOND = 50
_CRYPTO = re.compile(r"^a=crypto:\d+ \S+ inline:(\S+)", re.M)


def crypto_keys(body: str) -> list[str]:
    """The inline keys of an SDP body's ``a=crypto`` lines."""
    return [key.split("|")[0] for key in _CRYPTO.findall(body)]


class SrtpCallTests(BaresipTestCase):
    """baresip A -> Warden -> baresip B, with SRTP on the legs whose phone is on TLS."""

    def setUp(self) -> None:
        """baresip's srtp module is needed too."""
        super().setUp()
        if not (self.baresip_modules / "srtp.so").exists():
            self.fail(f"baresip module srtp.so missing from {self.baresip_modules}")

    async def _start(
        self, secure: tuple[bool, bool], srtp: str = "optional"
    ) -> tuple[WardenProcess, list[BaresipPhone]]:
        """A Warden with TLS; phones A and B, each on TLS + SRTP when ``secure`` says."""
        self.media_range = free_port_range()
        tls_port = free_port()
        settings: dict[str, dict[str, object]] = {
            "sip": {"transports": ["udp", "tcp", "tls"], "tls_port": tls_port},
            "media": {
                "port_min": self.media_range[0],
                "port_max": self.media_range[1],
                **({"srtp": srtp} if srtp != "optional" else {}),
            },
        }
        warden = await self.start_warden(settings)
        users = await provision(warden.config_path, 2, first=3001)
        phones = []
        for name, number, tls in zip("AB", users.numbers, secure, strict=True):
            tone = write_tone(self.workdir() / f"{name}.wav", TONES[name], TONE_SECONDS)
            phones.append(
                await self.start_phone(
                    name, warden, number, users.passwords[number], tone,
                    registrar=(LOCALHOST, tls_port) if tls else warden.address,
                    transport="tls" if tls else "udp", mediaenc="srtp-mand" if tls else "",
                )
            )  # fmt: skip
        for phone in phones:
            await phone.wait_registered()
        return warden, phones

    async def _call(self, a: BaresipPhone, b: BaresipPhone) -> None:
        """A calls B, B answers, media flows 3 s both ways, A hangs up."""
        await a.command("dial", a.dial_uri(b.number))
        await b.wait_event("CALL_INCOMING")
        await b.command("accept")
        await a.wait_event("CALL_ESTABLISHED")
        await b.wait_event("CALL_ESTABLISHED")
        for phone in (a, b):
            await phone.wait_rtp_received(3 * PACKETS_PER_SECOND)

    async def _hang_up(self, a: BaresipPhone, b: BaresipPhone) -> None:
        await a.command("hangup")
        await a.wait_event("CALL_CLOSED")
        await b.wait_event("CALL_CLOSED")

    async def _assert_hears(self, phone: BaresipPhone, frequency: float) -> None:
        """``phone`` received at least 2.5 s of a ``frequency`` Hz tone."""
        analysis = analyse_tone(await phone.received_audio(), frequency)
        message = phone.describe(f"received: {analysis.describe(frequency)}")
        self.assertGreaterEqual(analysis.tone_seconds, 2.5, message)
        self.assertLessEqual(abs(analysis.dominant - frequency), 20, message)

    async def _record(self, warden: WardenProcess) -> dict[str, Any]:
        """The one call record, once written."""
        for _ in range(30):
            listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
            self.assertEqual(listed.code, 0, listed.stderr)
            records: list[dict[str, Any]] = json.loads(listed.stdout)
            if records:
                self.assertEqual(len(records), 1, records)
                return records[0]
            await pause(0.5)
        self.fail("no call record")

    def _invites(self, phone: BaresipPhone, received: bool) -> list[str]:
        """
        The SDP of the INVITEs ``phone`` received from Warden (over TLS, on its
        own connection: RFC 5923) or sent to it.
        """
        warden = f"{phone.registrar[0]}:{phone.registrar[1]}"
        return [
            m.body
            for m in phone.sip_trace()
            if m.start_line.startswith("INVITE ")
            and (m.source if received else m.destination) == warden
        ]

    async def test_srtp_on_both_legs(self) -> None:
        """
        Two SRTP phones on TLS: B is offered RTP/SAVP with a key of Warden's, not
        A's; both hear each other's tone; the call record says both legs were
        encrypted and nothing failed authentication.
        """
        warden, (a, b) = await self._start((True, True))
        await self._call(a, b)
        await self._hang_up(a, b)
        await self._assert_hears(b, TONES["A"])
        await self._assert_hears(a, TONES["B"])
        [offered] = self._invites(b, received=True)
        self.assertIn("RTP/SAVP", offered)
        a_keys, b_keys = crypto_keys(self._invites(a, received=False)[-1]), crypto_keys(offered)
        self.assertTrue(a_keys and b_keys, (a_keys, b_keys))
        self.assertFalse(set(a_keys) & set(b_keys), "Warden passed A's key on to B")
        media = (await self._record(warden))["media"]
        for side in ("a", "b"):
            self.assertTrue(media[side]["media_encrypted"], media)
            self.assertGreaterEqual(media[side]["packets_in"], 3 * PACKETS_PER_SECOND, media)
            self.assertEqual(media[side]["dropped_auth_failed"], 0, media)

    async def test_srtp_phone_calls_rtp_phone(self) -> None:
        """
        A (TLS, SRTP) calls B (UDP, plain RTP) with srtp = "optional": B is offered
        plain RTP without keys, audio crosses both ways, ``wardenctl calls``
        shows A's leg encrypted and B's plain, and a forged packet sent to A's
        leg is dropped and counted as failing authentication.
        """
        warden, (a, b) = await self._start((True, False))
        await self._call(a, b)
        [offered] = self._invites(b, received=True)
        self.assertIn("RTP/AVP", offered)
        self.assertNotIn("a=crypto", offered)
        record_port = await self._a_leg_port(a)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
            forger.bind((LOCALHOST, 0))
            for seq in range(5):
                header = struct.pack("!BBHII", 0x80, 0, 60000 + seq, 0, 0x1234)
                forger.sendto(header + b"\x00" * 170, (LOCALHOST, record_port))
        await pause(0.5)
        listed = await wardenctl(warden.config_path, "calls", "--json")
        self.assertEqual(listed.code, 0, listed.stderr)
        [live] = json.loads(listed.stdout)
        self.assertEqual((live["caller_media"], live["callee_media"]), ("srtp", "rtp"), live)
        await self._hang_up(a, b)
        await self._assert_hears(b, TONES["A"])
        await self._assert_hears(a, TONES["B"])
        media = (await self._record(warden))["media"]
        self.assertEqual(
            (media["a"]["media_encrypted"], media["b"]["media_encrypted"]), (True, False), media
        )
        self.assertEqual(media["a"]["dropped_auth_failed"], 5, media)

    async def _a_leg_port(self, a: BaresipPhone) -> int:
        """The relay port A sends its media to (side a's RTP port)."""
        return (await a.remote_media())[1]

    async def test_required_refuses_plain_offer(self) -> None:
        """With srtp = "required" the RTP-only phone's call is refused with 488."""
        _warden, (a, b) = await self._start((False, True), srtp="required")
        await a.command("dial", a.dial_uri(b.number))
        closed = await a.wait_event("CALL_CLOSED")
        self.assertIn("488", closed.get("param", ""), closed)
        self.assertEqual(self._invites(b, received=True), [])
