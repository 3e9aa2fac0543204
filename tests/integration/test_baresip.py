"""
Calls between real phones: two or three baresip processes
(L{tests.integration.baresip}) register extensions with a real ``twistd warden``
and call each other through it.

Every phone plays its own sine tone into its calls (A 1000 Hz, B 440 Hz, C
700 Hz) and records what it receives, so a test can hear whether audio crossed
Warden's RTP relay, and in which direction. The phones are driven over
baresip's ``ctrl_tcp`` interface; their SIP traces show what Warden relayed;
``wardenctl`` shows the live calls and the call records.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.integration.baresip import (
    BaresipPhone,
    BaresipTestCase,
    BaresipTimeout,
    TracedMessage,
    free_port_range,
    held_ports,
)
from tests.integration.baresip_audio import analyse_tone, write_tone
from tests.integration.clients import LOCALHOST, pause, poll
from tests.integration.harness import WardenProcess, provision, wardenctl

TONES = {"A": 1000.0, "B": 440.0, "C": 700.0}
#: baresip hangs up when its audio file ends: longer than any call here.
TONE_SECONDS = 90.0
#: G.711 with 20 ms packets: 50 packets a second each way.
PACKETS_PER_SECOND = 50
DIGITS = "2580*#"
_PROBLEM = re.compile(r"#(warn|error|critical)\]|Traceback|Unhandled")


class BaresipCallTests(BaresipTestCase):
    """baresip A -> Warden (B2BUA + RTP relay) -> baresip B (and C)."""

    # -- helpers --------------------------------------------------------------------

    async def _start_phones(
        self, count: int, codec: str = "PCMU"
    ) -> tuple[WardenProcess, list[BaresipPhone]]:
        """A Warden and ``count`` registered phones A, B, C... using ``codec``."""
        self.media_range = free_port_range()
        warden = await self.start_warden(
            {"media": {"port_min": self.media_range[0], "port_max": self.media_range[1]}}
        )
        users = await provision(warden.config_path, count, first=3001)
        phones = []
        for name, number in zip("ABC", users.numbers):
            tone = write_tone(self.workdir() / f"{name}.wav", TONES[name], TONE_SECONDS)
            phones.append(
                await self.start_phone(name, warden, number, users.passwords[number], tone, codec)
            )
        for phone in phones:
            await phone.wait_registered()
        return warden, phones

    async def _answered(self, caller: BaresipPhone, callee: BaresipPhone) -> None:
        """``caller`` dials ``callee``, who answers; both see the call established."""
        await caller.command("dial", callee.aor)
        incoming = await callee.wait_event("CALL_INCOMING")
        self.assertIn(f"sip:{caller.number}@", incoming.get("param", ""), incoming)
        await callee.command("accept")
        await caller.wait_event("CALL_ESTABLISHED")
        await callee.wait_event("CALL_ESTABLISHED")

    async def _records(self, warden: WardenProcess, count: int) -> list[dict[str, Any]]:
        """The call records, once there are ``count`` of them (waits up to 15 s)."""
        records: list[dict[str, Any]] = []
        for _ in range(30):
            listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
            self.assertEqual(listed.code, 0, listed.stderr)
            records = json.loads(listed.stdout)
            if len(records) >= count:
                return records
            await pause(0.5)
        self.fail(f"{count} call records expected, found {len(records)}: {records}")

    async def _live(self, warden: WardenProcess) -> list[dict[str, Any]]:
        """``wardenctl calls --json``."""
        listed = await wardenctl(warden.config_path, "calls", "--json")
        self.assertEqual(listed.code, 0, listed.stderr)
        calls: list[dict[str, Any]] = json.loads(listed.stdout)
        return calls

    async def _wait_live_state(self, warden: WardenProcess, state: str) -> None:
        """One live call in ``state``, waiting up to 20 s (summaries refresh every 5 s)."""
        calls: list[dict[str, Any]] = []
        for _ in range(40):
            calls = await self._live(warden)
            if [c["state"] for c in calls] == [state]:
                return
            await pause(0.5)
        self.fail(f"wardenctl calls never showed one call {state!r}: {calls}")

    async def _assert_ports_released(self) -> None:
        """Every relay port is free again (Warden closed the call's sockets)."""
        await poll(lambda: not held_ports(self.media_range), 10)
        self.assertEqual(held_ports(self.media_range), [])

    async def _assert_hears(self, phone: BaresipPhone, frequency: float, seconds: float) -> None:
        """``phone`` received at least ``seconds`` of a ``frequency`` Hz tone."""
        analysis = analyse_tone(await phone.received_audio(), frequency)
        message = phone.describe(f"received: {analysis.describe(frequency)}")
        self.assertGreaterEqual(analysis.tone_seconds, seconds, message)
        self.assertLessEqual(abs(analysis.dominant - frequency), 20, message)

    def _assert_relayed(self, record: dict[str, Any], packets: int) -> None:
        """Both legs' media went through relay ports, ``packets`` or more each way."""
        media = record["media"]
        for side in ("a", "b"):
            leg = media[side]
            self.assertTrue(self.media_range[0] <= leg["rtp_port"] <= self.media_range[1], media)
            self.assertEqual(leg["latched"].rsplit(":", 1)[0], LOCALHOST, media)
            self.assertGreaterEqual(leg["packets_in"], packets, media)
            self.assertGreaterEqual(leg["packets_out"], packets, media)
            for drop in ("malformed", "no_destination", "send_error", "spoofed"):
                self.assertEqual(leg[f"dropped_{drop}"], 0, media)

    def _assert_log_clean(self, warden: WardenProcess) -> None:
        """Warden logged no warning, error or traceback."""
        problems = [line for line in warden.log_text().splitlines() if _PROBLEM.search(line)]
        self.assertEqual(problems, [])

    # -- tests ----------------------------------------------------------------------

    async def test_audio_crosses_the_relay_both_ways(self) -> None:
        """
        A calls B and hangs up after 3 s: each phone hears the other's tone, both
        send their RTP to Warden's relay ports, and the call record says ANSWERED,
        PCMU, hung up by the caller, with packets relayed on both legs.
        """
        warden, (a, b) = await self._start_phones(2)
        await self._answered(a, b)
        for phone in (a, b):
            await phone.wait_rtp_received(3 * PACKETS_PER_SECOND)
        a_sends_to, b_sends_to = await a.remote_media(), await b.remote_media()
        await a.command("hangup")
        await a.wait_event("CALL_CLOSED")
        await b.wait_event("CALL_CLOSED")

        await self._assert_hears(b, TONES["A"], 2.5)
        await self._assert_hears(a, TONES["B"], 2.5)
        [record] = await self._records(warden, 1)
        self.assertEqual(
            (record["caller"], record["callee"], record["dialled"]),
            (a.number, b.number, b.number),
        )
        self.assertEqual(record["disposition"], "ANSWERED", record)
        self.assertEqual((record["hangup_side"], record["hangup_cause"]), ("caller", "BYE"))
        self.assertEqual(record["codec"], "PCMU")
        self._assert_relayed(record, 3 * PACKETS_PER_SECOND)
        # Each phone talked to its own leg's relay port, not to the other phone.
        self.assertEqual(a_sends_to, (LOCALHOST, record["media"]["a"]["rtp_port"]))
        self.assertEqual(b_sends_to, (LOCALHOST, record["media"]["b"]["rtp_port"]))
        self.assertEqual(await self._live(warden), [])
        await self._assert_ports_released()
        self._assert_log_clean(warden)

    async def test_dtmf_digits_reach_the_callee(self) -> None:
        """
        In a PCMA call, A sends RFC 4733 digits: B receives each, in order; Warden
        counts them on A's leg. B hangs up: the record says so.
        """
        warden, (a, b) = await self._start_phones(2, codec="PCMA")
        await self._answered(a, b)
        await b.wait_rtp_received(PACKETS_PER_SECOND)
        await a.command("sndcode", DIGITS)
        await b.wait_event("CALL_DTMF_END", count=len(DIGITS))
        received = "".join(e.get("param", "?") for e in b.events_of("CALL_DTMF_START"))
        self.assertEqual(received, DIGITS, b.describe("received other digits"))
        await b.command("hangup")
        await a.wait_event("CALL_CLOSED")
        await b.wait_event("CALL_CLOSED")

        [record] = await self._records(warden, 1)
        self.assertEqual(record["disposition"], "ANSWERED", record)
        self.assertEqual((record["hangup_side"], record["hangup_cause"]), ("callee", "BYE"))
        self.assertEqual(record["codec"], "PCMA")
        self._assert_relayed(record, PACKETS_PER_SECOND)
        media = record["media"]
        self.assertEqual((media["a"]["dtmf_events"], media["b"]["dtmf_events"]), (len(DIGITS), 0))
        await self._assert_ports_released()
        self._assert_log_clean(warden)

    async def test_hold_and_resume(self) -> None:
        """
        A puts B on hold and resumes: Warden relays both re-INVITEs to B with the
        direction kept and the same relay address; ``wardenctl calls`` shows the
        hold; media flows both ways again after the resume; B hangs up and the
        record says ANSWERED.
        """
        warden, (a, b) = await self._start_phones(2)
        await self._answered(a, b)
        for phone in (a, b):
            await phone.wait_rtp_received(PACKETS_PER_SECOND)

        await a.command("hold")
        await b.wait_event("CALL_REMOTE_SDP", count=2)  # the re-INVITE's offer
        await a.wait_event("CALL_REMOTE_SDP", count=2)  # the 200's answer
        initial, hold = self._invites(b, 2)
        self._assert_sdp(b, hold, "sendonly", _audio_port(initial.body))
        self._assert_sdp(a, self._answers(a)[-1], "recvonly", None)
        await self._wait_live_state(warden, "on hold")

        await a.command("resume")
        await b.wait_event("CALL_REMOTE_SDP", count=3)
        await a.wait_event("CALL_REMOTE_SDP", count=3)
        resume = self._invites(b, 3)[2]
        self._assert_sdp(b, resume, "sendrecv", _audio_port(initial.body))
        self._assert_sdp(a, self._answers(a)[-1], "sendrecv", None)
        for phone in (a, b):
            await phone.wait_rtp_received(await phone.rtp_received() + PACKETS_PER_SECOND)
        await self._wait_live_state(warden, "answered")
        self.assertEqual(a.events_of("CALL_CLOSED") + b.events_of("CALL_CLOSED"), [])

        await b.command("hangup")
        await a.wait_event("CALL_CLOSED")
        [record] = await self._records(warden, 1)
        self.assertEqual(record["disposition"], "ANSWERED", record)
        self.assertEqual((record["hangup_side"], record["hangup_cause"]), ("callee", "BYE"))
        self._assert_relayed(record, PACKETS_PER_SECOND)
        await self._assert_ports_released()
        self._assert_log_clean(warden)

    async def test_blind_transfer(self) -> None:
        """
        A calls B; B transfers A to C with REFER: C rings and answers, B's call
        ends, A and C hear each other through the relay, and A hangs up.
        """
        warden, (a, b, c) = await self._start_phones(3)
        await self._answered(a, b)
        await b.wait_rtp_received(PACKETS_PER_SECOND)
        await b.command("transfer", c.aor)
        incoming = await c.wait_event("CALL_INCOMING")
        self.assertIn(f"sip:{a.number}@", incoming.get("param", ""), incoming)
        await c.command("accept")
        await c.wait_event("CALL_ESTABLISHED")
        await b.wait_event("CALL_CLOSED")
        try:
            await c.wait_rtp_received(3 * PACKETS_PER_SECOND)
        except BaresipTimeout as e:
            # Show where the relay sends C's side (latched) and what it dropped.
            await a.command("hangup")
            media = [r["media"] for r in await self._records(warden, 1)]
            self.fail(f"{e}\nrelay statistics after A hung up: {media}")
        await a.wait_rtp_received(await a.rtp_received() + 2 * PACKETS_PER_SECOND)
        self.assertEqual(a.events_of("CALL_CLOSED"), [])
        # The live call names who is connected now: A and C (published at once).
        parties: list[tuple[str, str]] = []
        for _ in range(20):
            parties = [(c_["caller"], c_["callee"]) for c_ in await self._live(warden)]
            if parties == [(a.number, c.number)]:
                break
            await pause(0.5)
        self.assertEqual(parties, [(a.number, c.number)])
        await a.command("hangup")
        await c.wait_event("CALL_CLOSED")

        await self._assert_hears(c, TONES["A"], 2.0)
        records = await self._records(warden, 1)
        self.assertEqual(
            {(r["caller"], r["callee"], r["disposition"]) for r in records},
            {(a.number, c.number, "ANSWERED")},
        )
        self.assertEqual(await self._live(warden), [])
        await self._assert_ports_released()
        self._assert_log_clean(warden)

    # -- SIP trace checks -----------------------------------------------------------

    def _invites(self, phone: BaresipPhone, count: int) -> list[TracedMessage]:
        """
        The ``count`` INVITEs ``phone`` received (fails if there are others);
        retransmissions (the same CSeq again) are left out.
        """
        invites: list[TracedMessage] = []
        for message in phone.received_requests("INVITE"):
            if message.header("CSeq") not in [m.header("CSeq") for m in invites]:
                invites.append(message)
        starts = [m.start_line for m in invites]
        self.assertEqual(len(invites), count, phone.describe(f"INVITEs received: {starts}"))
        return invites

    def _answers(self, phone: BaresipPhone) -> list[TracedMessage]:
        """The 200 responses to INVITE that ``phone`` received."""
        return [
            m
            for m in phone.sip_trace()
            if m.destination.endswith(f":{phone.sip_port}")
            and m.start_line.startswith("SIP/2.0 200")
            and m.header("CSeq").endswith("INVITE")
        ]

    def _assert_sdp(
        self, phone: BaresipPhone, message: TracedMessage, direction: str, port: int | None
    ) -> None:
        """
        ``message`` (received by ``phone``) carries SDP pointing at the relay with
        ``direction`` (``sendrecv`` may be implicit), on ``port`` if given.
        """
        sdp = message.body
        context = phone.describe(f"got {message.start_line!r} with SDP:\n{sdp}")
        self.assertIn(f"c=IN IP4 {LOCALHOST}", sdp, context)
        relay_port = _audio_port(sdp)
        self.assertTrue(self.media_range[0] <= relay_port <= self.media_range[1], context)
        if port is not None:
            self.assertEqual(relay_port, port, context)
        directions = re.findall(r"^a=(sendrecv|sendonly|recvonly|inactive)\r?$", sdp, re.M)
        self.assertEqual(directions or ["sendrecv"], [direction], context)


def _audio_port(sdp: str) -> int:
    """The port of the first ``m=audio`` line (0 when there is none)."""
    match = re.search(r"^m=audio (\d+) ", sdp, re.M)
    return int(match.group(1)) if match else 0
