"""
Everyday call features end to end (ADR 0023): a real ``twistd warden`` with its
default plugins and SIPp phones. A phone forwards its calls with
``*72<number>`` and a call to it lands on the target, also after a restart
(the setting is in the store); ``*73`` ends it; busy and no-answer forwards set
through the admin API take calls a busy phone refuses or a ringing phone does
not answer; a phone in do-not-disturb (``*78``) refuses calls with 486 and
``*79`` ends it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.admin_client import AdminClient, new_admin
from tests.integration.clients import poll_async
from tests.integration.harness import (
    LOCALHOST,
    IntegrationTestCase,
    Users,
    WardenProcess,
    free_media_port,
    free_port,
    poll,
    provision,
    register_sipp_phone,
    require_sipp,
    run_sipp,
    sipp_command,
    spawn,
    wardenctl,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_stats

BENCH_SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
# Below Linux's ephemeral ports (32768 and up), apart from the other tests' ranges.
MEDIA = {"media": {"port_min": 32210, "port_max": 32390}}


class CallFeatureTestCase(IntegrationTestCase):
    """A Warden, extensions 2000-2003, and SIPp phones."""

    def setUp(self) -> None:
        """SIPp is needed."""
        super().setUp()
        require_sipp(self)

    async def setup_warden(self, settings: dict[str, Any] | None = None) -> None:
        """
        Start Warden with ``settings`` and create the extensions. Voicemail is
        off: these tests read the failures a caller gets without it.
        """
        settings = {**MEDIA, "voicemail": {"enabled": False}, **(settings or {})}
        self.warden: WardenProcess = await self.start_warden(settings)
        self.users: Users = await provision(self.warden.config_path, 4, first=2000)

    def injection(self, caller: str, dialled: str) -> Path:
        """A SIPp injection file: ``caller`` (authenticating) dials ``dialled``."""
        path = self.workdir() / "caller.csv"
        password = self.users.passwords[caller]
        path.write_text(
            f"SEQUENTIAL\n{caller};{password};{dialled};"
            f"[authentication username={caller} password={password}]\n"
        )
        return path

    async def dial(self, caller: str, dialled: str, scenario: Path) -> tuple[Any, Any, str, Path]:
        """``caller`` calls ``dialled`` with ``scenario``: result, stats, errors, directory."""
        run_dir = self.workdir()
        args = [
            f"{self.warden.address[0]}:{self.warden.address[1]}",
            "-sf", str(scenario), "-inf", str(self.injection(caller, dialled)),
            "-i", LOCALHOST, "-p", str(free_port()), "-mp", str(free_media_port()), "-m", "1",
            "-timeout", "90s", "-timeout_error", "-trace_stat", "-trace_err", "-trace_msg",
        ]  # fmt: skip
        result = await run_sipp(args, run_dir, timeout=120)
        return result, read_sipp_stats(run_dir), read_sipp_errors(run_dir), run_dir

    async def refused(self, caller: str, dialled: str) -> str:
        """``caller`` dials ``dialled`` and is refused: the final status line."""
        result, stats, errors, run_dir = await self.dial(
            caller, dialled, SCENARIOS / "refused_call_uac.xml"
        )
        context = f"SIPp exit {result.code}\n{result.stderr}\n{errors}"
        self.assertEqual((stats.successful, stats.failed), (1, 0), context)
        messages = "".join(p.read_text() for p in run_dir.glob("*_messages.log"))
        lines = [line.strip() for line in messages.splitlines()]
        finals = [s for s in lines if s[:9] in ("SIP/2.0 4", "SIP/2.0 5") and " 407 " not in s]
        self.assertTrue(finals, messages[-3000:])
        return finals[-1]

    async def answered(self, caller: str, dialled: str) -> None:
        """``caller`` dials ``dialled`` and the call is answered (RTP-less SIPp UAC)."""
        result, stats, errors, _ = await self.dial(
            caller, dialled, BENCH_SCENARIOS / "call_uac.xml"
        )
        context = f"SIPp exit {result.code}\n{result.stderr}\n{errors}"
        self.assertEqual((stats.successful, stats.failed), (1, 0), context)

    async def phone(self, number: str, scenario: str, calls: int = 1) -> Any:
        """Register ``number`` and run a SIPp UAS for it (``scenario``) taking ``calls`` calls."""
        port = free_port()
        reg, errors = await register_sipp_phone(
            self.warden.address, number, self.users.passwords[number], port, self.workdir()
        )
        self.assertEqual(reg.code, 0, reg.stderr + errors)
        path = BENCH_SCENARIOS / scenario
        if not path.exists():
            path = SCENARIOS / scenario
        args = [
            "-sf", str(path), "-i", LOCALHOST, "-p", str(port), "-mp", str(free_media_port()),
            "-m", str(calls), "-trace_err", "-trace_msg",
            f"{self.warden.address[0]}:{self.warden.address[1]}",
        ]  # fmt: skip
        uas, process = spawn(sipp_command(args), self.workdir())
        self.addCleanup(lambda: process.signalProcess("KILL") if uas.running else None)
        return uas

    async def admin(self) -> AdminClient:
        """An admin API client logged in as a new account made with wardenctl."""
        client, _ = await new_admin(self.warden)
        return client

    async def records(self, caller: str) -> list[dict[str, Any]]:
        """The call records of ``caller``'s calls, once there are any (written behind)."""
        found: list[dict[str, Any]] = []

        async def written() -> bool:
            listed = await wardenctl(self.warden.config_path, "cdr", "list", "--json")
            found[:] = [r for r in json.loads(listed.stdout or "[]") if r["caller"] == caller]
            return bool(found)

        self.assertTrue(await poll_async(written, 30), self.warden.log_tail())
        return found

    async def finished(self, uas: Any) -> None:
        """The UAS took its calls and exited cleanly."""
        await poll(lambda: not uas.running, 30)
        self.assertEqual(uas.code, 0, uas.output())


class ForwardTests(CallFeatureTestCase):
    """Call forwarding set from the phone."""

    async def test_forward_all_by_feature_code(self) -> None:
        """
        2001 dials *72 2002: answered 480 "Call Forwarding On 2002"; after a
        restart of Warden a call from 2000 to 2001 is answered by 2002's phone;
        *73 ends the forward and 2001 (not registered) is unavailable again.
        """
        await self.setup_warden()
        status = await self.refused("2001", "*722002")
        self.assertEqual(status, "SIP/2.0 480 Call Forwarding On 2002")
        await self.warden.stop()
        await self.warden.start()
        target = await self.phone("2002", "call_uas.xml")
        await self.answered("2000", "2001")
        await self.finished(target)
        self.assertEqual(await self.refused("2001", "*73"), "SIP/2.0 480 Call Forwarding Off")
        self.assertEqual(await self.refused("2000", "2001"), "SIP/2.0 480 Temporarily Unavailable")

    async def test_busy_and_no_answer(self) -> None:
        """
        Forwards set through the admin API: 2001's phone answers 486 and the
        call is answered by 2002 (busy forward); 2003's phone rings until the
        ring timeout and the call is answered by 2002 (no-answer forward).
        """
        await self.setup_warden({"calls": {"ring_timeout": 4}})
        admin = await self.admin()
        for number, change in (("2001", {"forward_busy": "2002"}),
                               ("2003", {"forward_no_answer": "2002"})):  # fmt: skip
            result = await admin.request("PATCH", f"/api/v1/extensions/{number}/features", change)
            self.assertEqual(result.status, 200, result.body)
        listed = await admin.request("GET", "/api/v1/features")
        self.assertEqual([f["number"] for f in listed.json()["items"]], ["2001", "2003"])
        busy = await self.phone("2001", "busy_uas.xml")
        ringing = await self.phone("2003", "ringing_uas.xml")
        target = await self.phone("2002", "call_uas.xml", calls=2)
        await self.answered("2000", "2001")
        await self.finished(busy)
        await self.answered("2000", "2003")
        await self.finished(ringing)
        await self.finished(target)


class RingTimeoutTests(CallFeatureTestCase):
    """An extension's own ring timeout."""

    async def test_extension_ring_timeout_to_voicemail(self) -> None:
        """
        Voicemail on with its defaults (20 s of ringing); 2003's own ring timeout
        set to 3 s with wardenctl. 2000 calls 2003, whose phone rings and never
        answers: Warden cancels it and voicemail answers the call after about
        3 s, not 20 (bounds: 2.5 to 15 s from the INVITE to the answer).
        """
        await self.setup_warden({"voicemail": {}})
        changed = await wardenctl(
            self.warden.config_path, "extension", "set", "2003", "--ring-timeout", "3"
        )
        self.assertEqual(changed.code, 0, changed.stderr)
        ringing = await self.phone("2003", "ringing_uas.xml")
        await self.answered("2000", "2003")
        await self.finished(ringing)  # it got the CANCEL (and sent 487)
        (record,) = await self.records("2000")
        self.assertEqual(record["disposition"], "ANSWERED", record)
        setup = record["answered_at"] - record["started_at"]
        self.assertTrue(2.5 <= setup < 15.0, record)  # 2003's phone never answers: voicemail did


class DoNotDisturbTests(CallFeatureTestCase):
    """Do-not-disturb set from the phone."""

    async def test_confirmation_tone(self) -> None:
        """
        *78 from a phone offering media is answered: Warden plays the
        confirmation tone to it (RTP through the relay) and hangs up; DND is on.
        """
        await self.setup_warden()
        result, stats, errors, _ = await self.dial(
            "2002", "*78", SCENARIOS / "answered_until_bye_uac.xml"
        )
        self.assertEqual((stats.successful, stats.failed), (1, 0), f"{result.stderr}{errors}")
        self.assertEqual(await self.refused("2000", "2002"), "SIP/2.0 486 Busy Here")
        (record,) = await self.records("2002")
        self.assertEqual((record["callee"], record["disposition"]), ("feature:on", "ANSWERED"))
        self.assertGreater(record["media"]["a"]["packets_out"], 20, record["media"])

    async def test_dnd_by_feature_code(self) -> None:
        """
        2002 dials *78: its callers get 486 and its phone does not ring; after
        *79 the next call rings it and is answered.
        """
        await self.setup_warden()
        self.assertEqual(await self.refused("2002", "*78"), "SIP/2.0 480 Do Not Disturb On")
        phone = await self.phone("2002", "call_uas.xml")
        self.assertEqual(await self.refused("2000", "2002"), "SIP/2.0 486 Busy Here")
        self.assertEqual(await self.refused("2002", "*79"), "SIP/2.0 480 Do Not Disturb Off")
        await self.answered("2000", "2002")
        await self.finished(phone)


class RingGroupTests(CallFeatureTestCase):
    """``[[ringgroups]]`` dialled by their numbers."""

    async def test_simultaneous_and_hunt(self) -> None:
        """
        Group 600 rings 2001 and 2002 at once: 2002 answers and 2001's ringing
        phone is cancelled. Group 601 hunts 2001 then 2002: 2001 rings until
        the group's ring timeout and 2002 answers.
        """
        await self.setup_warden({"ringgroups": [
            {"name": "sales", "number": "600", "members": ["2001", "2002"]},
            {"name": "support", "number": "601", "members": ["2001", "2002"],
             "strategy": "hunt", "ring_timeout": 4},
        ]})  # fmt: skip
        ringing = await self.phone("2001", "ringing_uas.xml", calls=2)
        answering = await self.phone("2002", "call_uas.xml", calls=2)
        await self.answered("2000", "600")
        await self.answered("2000", "601")
        await self.finished(ringing)
        await self.finished(answering)


class BlfTests(CallFeatureTestCase):
    """Busy lamp fields: SUBSCRIBE to the dialog event package."""

    async def test_lamp_follows_a_call(self) -> None:
        """
        2001's SIPp subscribes to 2002 (answering the 401) and gets NOTIFYs:
        idle, early while 2000's call rings 2002, confirmed once answered,
        idle after the BYE; then it unsubscribes and gets the final NOTIFY.
        """
        await self.setup_warden()
        target = await self.phone("2002", "call_uas.xml")
        args = [
            f"{self.warden.address[0]}:{self.warden.address[1]}",
            "-sf", str(SCENARIOS / "blf_subscribe.xml"),
            "-inf", str(self.injection("2001", "2002")), "-i", LOCALHOST,
            "-p", str(free_port()), "-m", "1", "-timeout", "90s", "-timeout_error",
            "-trace_err", "-trace_msg",
        ]  # fmt: skip
        watcher, process = spawn(sipp_command(args), self.workdir())
        self.addCleanup(lambda: process.signalProcess("KILL") if watcher.running else None)
        subscribed = await poll(
            lambda: "2001 watches the calls of 2002" in self.warden.log_text(), 30
        )
        self.assertTrue(subscribed, watcher.output())
        await self.answered("2000", "2002")
        await self.finished(target)
        await self.finished(watcher)


class PickupTests(CallFeatureTestCase):
    """Group pickup with ``*8``."""

    async def test_pick_up_a_ringing_call(self) -> None:
        """
        2000 calls 2001, whose phone rings; 2002 (in 2001's pickup group) dials
        *8 and is connected: 2001's phone is cancelled, 2000's call is
        answered, and 2000's BYE reaches 2002.
        """
        await self.setup_warden({"pickupgroups": [
            {"name": "office", "members": ["2001", "2002"]},
        ]})  # fmt: skip
        ringing = await self.phone("2001", "ringing_uas.xml")
        run_dir = self.workdir()
        args = [
            f"{self.warden.address[0]}:{self.warden.address[1]}",
            "-sf", str(BENCH_SCENARIOS / "call_uac.xml"),
            "-inf", str(self.injection("2000", "2001")), "-i", LOCALHOST,
            "-p", str(free_port()), "-mp", str(free_media_port()), "-m", "1", "-d", "2000",
            "-timeout", "90s", "-timeout_error", "-trace_stat", "-trace_err",
        ]  # fmt: skip
        caller, process = spawn(sipp_command(args), run_dir)
        self.addCleanup(lambda: process.signalProcess("KILL") if caller.running else None)

        async def rings() -> bool:
            listed = await wardenctl(self.warden.config_path, "calls", "--json")
            return listed.code == 0 and any(
                c["state"] == "ringing" for c in json.loads(listed.stdout)
            )

        self.assertTrue(await poll_async(rings, 30), self.warden.log_tail())
        result, stats, errors, _ = await self.dial(
            "2002", "*8", SCENARIOS / "answered_until_bye_uac.xml"
        )
        self.assertEqual((stats.successful, stats.failed), (1, 0), f"{result.stderr}{errors}")
        await self.finished(caller)
        await self.finished(ringing)
        (record,) = await self.records("2000")
        self.assertEqual((record["callee"], record["disposition"]), ("2002", "ANSWERED"))
