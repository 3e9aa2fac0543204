"""
The IVR end to end: a real ``twistd warden`` with three ``[[ivr]]`` menus, a
SIPp UAC (an extension dialling each menu's number, or a fake ITSP on
127.0.0.2 calling a DID whose inbound route is ``ivr:main``) that sends RFC 4733 DTMF
from a pcap (SIPp's ``dtmf_2833_<digit>.pcap``) or plain audio, and a SIPp UAS
registered as extension 4001 (echoing the RTP it receives):

- menu 500: key 2 sends the caller to 4001;
- menu 501: nothing pressed, its timeout_to (4001);
- menu 502: key 7 is no choice, its invalid_to (4001).

In each case the UAS answers, the caller hangs up after a few seconds, and
the call record names 4001 as the callee (and, for 501, counts the caller's
audio relayed on to it after the hand-over). A wrong path ends in Warden's BYE
to the caller or no call at the UAS: the run fails.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.harness import (
    LOCALHOST,
    IntegrationTestCase,
    WardenProcess,
    free_port,
    poll,
    provision,
    require_sipp,
    run_sipp,
    sipp_uac_args,
    wardenctl,
    write_sipp_caller,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_messages, read_sipp_stats
from warden.rtp import g711

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
BENCH_SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"
PCAPS = Path("/usr/share/sip-tester")

MENUS = """
[[ivr]]
name = "main"
number = "500"
prompt = "@PROMPT@"
timeout = 2
digit_timeout = 1
max_attempts = 1
timeout_to = "hangup"
invalid_to = "hangup"
[ivr.digits]
"2" = "4001"

[[ivr]]
name = "quiet"
number = "501"
prompt = "@PROMPT@"
timeout = 2
max_attempts = 1
timeout_to = "4001"
invalid_to = "hangup"

[[ivr]]
name = "strict"
number = "502"
prompt = "@PROMPT@"
timeout = 2
max_attempts = 1
direct_dial = false
timeout_to = "hangup"
invalid_to = "4001"
[ivr.digits]
"2" = "hangup"
"""

#: An IP-authenticated trunk whose DID reaches menu main.
TRUNK = """
[[trunks]]
name = "itsp"
host = "127.0.0.2"
register = false

[[routes.inbound]]
did = "15551230002"
to = "ivr:main"
"""


class IvrTests(IntegrationTestCase):
    """A SIPp caller through Warden's menus to a SIPp callee."""

    def setUp(self) -> None:
        """SIPp, and the pcaps Debian's sip-tester package ships, are needed."""
        super().setUp()
        require_sipp(self)
        if not (PCAPS / "dtmf_2833_2.pcap").exists():
            raise FileNotFoundError(f"{PCAPS}/dtmf_2833_2.pcap (the sip-tester package)")

    async def warden_with_menus(self) -> WardenProcess:
        """A Warden with L{MENUS} (a 0.5 s tone as their prompt) and L{TRUNK}."""
        workdir = self.workdir()
        prompt = workdir / "prompt.wav"
        prompt.write_bytes(g711.wav_bytes(g711.tone(440, 0.5)))
        menus = MENUS.replace("@PROMPT@", str(prompt)) + TRUNK
        return await self.start_warden(workdir=workdir, config_text=menus)

    async def call_menu(
        self, warden: WardenProcess, caller: str, password: str, number: str, pcap: Path
    ) -> None:
        """``caller`` dials ``number`` and sends ``pcap``'s RTP; the call must complete."""
        run_dir = self.workdir()
        scenario = run_dir / "ivr_uac.xml"
        template = (SCENARIOS / "ivr_uac.xml").read_text()
        scenario.write_text(template.replace("@PCAP@", str(pcap)))
        caller_csv = write_sipp_caller(run_dir, caller, password, number)
        await self.completes(warden, run_dir, scenario, caller_csv, LOCALHOST)

    async def itsp_calls_menu(self, warden: WardenProcess, did: str, pcap: Path) -> None:
        """
        The ITSP (SIPp on 127.0.0.2, tests/integration/scenarios/itsp_uac.xml)
        calls ``did`` and, 1.5 s after the answer, sends ``pcap``'s RTP.
        """
        run_dir = self.workdir()
        template = (SCENARIOS / "itsp_uac.xml").read_text()
        self.assertEqual(template.count("<pause/>"), 1)
        scenario = run_dir / "itsp_ivr_uac.xml"
        scenario.write_text(
            template.replace(
                "<pause/>",
                '<pause milliseconds="1500"/><nop><action>'
                f'<exec play_pcap_audio="{pcap}"/></action></nop><pause/>',
            )
        )
        did_csv = run_dir / "did.csv"
        did_csv.write_text(f"SEQUENTIAL\n{did};15559876543\n")
        await self.completes(warden, run_dir, scenario, did_csv, "127.0.0.2")

    async def completes(
        self, warden: WardenProcess, run_dir: Path, scenario: Path, fields: Path, host: str
    ) -> None:
        """SIPp on ``host`` runs ``scenario`` once (6 s pause); the call must complete."""
        args = sipp_uac_args(
            warden.address, scenario, fields, "-p", str(free_port()), "-d", "6000", "-trace_msg",
            host=host,
        )  # fmt: skip
        result = await run_sipp(args, run_dir, timeout=90)
        stats = read_sipp_stats(run_dir)
        context = (
            f"{scenario.name}: exit {result.code}\n{result.stderr}\n{read_sipp_errors(run_dir)}"
            f"\n{read_sipp_messages(run_dir)[-3000:]}"
        )
        self.assertEqual((result.code, stats.successful, stats.failed), (0, 1, 0), context)

    async def test_inbound_did(self) -> None:
        """The ITSP's call to a DID routed to ivr:main: key 2 reaches 4001."""
        warden = await self.warden_with_menus()
        users = await provision(warden.config_path, 2, first=4000)
        callee = users.numbers[1]
        phone, phone_dir = await self.sipp_callee(
            warden, callee, users.passwords[callee], BENCH_SCENARIOS / "call_uas.xml"
        )
        await self.itsp_calls_menu(warden, "15551230002", PCAPS / "dtmf_2833_2.pcap")
        context = f"{phone.output()}\n{read_sipp_messages(phone_dir)[-3000:]}"
        self.assertTrue(await poll(lambda: not phone.running, 30), context)
        self.assertEqual(phone.code, 0, context)
        listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
        self.assertEqual(
            [(r["caller"], r["callee"], r["disposition"]) for r in json.loads(listed.stdout)],
            [("15559876543", callee, "ANSWERED")],
        )

    async def test_key_timeout_and_invalid(self) -> None:
        """
        Key 2 on menu 500, no key on 501 and key 7 on 502 each reach 4001 (a
        key, the timeout, an invalid choice); on 501 the caller's audio reaches 4001.
        """
        warden = await self.warden_with_menus()
        users = await provision(warden.config_path, 2, first=4000)
        caller, callee = users.numbers
        phone, phone_dir = await self.sipp_callee(
            warden,
            callee,
            users.passwords[callee],
            BENCH_SCENARIOS / "call_uas.xml",
            calls=3,
            more=("-rtp_echo",),
        )
        password = users.passwords[caller]

        await self.call_menu(warden, caller, password, "500", PCAPS / "dtmf_2833_2.pcap")
        await self.call_menu(warden, caller, password, "501", PCAPS / "g711a.pcap")
        await self.call_menu(warden, caller, password, "502", PCAPS / "dtmf_2833_7.pcap")

        context = f"{phone.output()}\n{read_sipp_messages(phone_dir)[-3000:]}"
        self.assertTrue(await poll(lambda: not phone.running, 30), context)
        self.assertEqual(phone.code, 0, context)
        listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
        records = sorted(json.loads(listed.stdout), key=lambda r: r["dialled"])
        self.assertEqual(
            [(r["dialled"], r["caller"], r["callee"], r["disposition"]) for r in records],
            [(n, caller, callee, "ANSWERED") for n in ("500", "501", "502")],
        )
        self.assertEqual([r["hangup_side"] for r in records], ["caller"] * 3)
        # 501: the caller's audio (30 ms packets from 1.5 s to the BYE at 7.5 s)
        # reached the callee's phone after the hand-over at about 2.5 s: its
        # echo came back (the endpoint before sent 25 packets of prompt).
        callee_leg = records[1]["media"]["b"]
        self.assertGreaterEqual(callee_leg["packets_in"], 100, records[1]["media"])
