"""
Call hooks end to end (ADR 0020): a real ``twistd warden`` loads the
``hooktest`` plugin the third-party way (``tests/integration/plugins`` on the
path, ``[plugins] enabled``), and SIPp calls go through every hook point:
incoming, before routing (reject, redirect, mark), routing failed (redirect),
outgoing leg built (a header the callee's SIPp receives), answered and ended
(with the call record); a MESSAGE out of dialog is answered by the plugin.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.integration.clients import SipUdpClient
from tests.integration.harness import (
    LOCALHOST,
    IntegrationTestCase,
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
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_stats
from warden.plugin import DEFAULT_PLUGINS

SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"
PLUGINS = Path(__file__).resolve().parent / "plugins"
PCAP = Path("/usr/share/sip-tester/g711a.pcap")


class CallHookTests(IntegrationTestCase):
    """SIPp UAC -> Warden with the hooktest plugin -> SIPp UAS."""

    def setUp(self) -> None:
        """SIPp and its pcap are needed; children find the plugin on their path."""
        super().setUp()
        require_sipp(self)
        if not PCAP.exists():
            self.fail(f"{PCAP} is missing (Debian package sip-tester)")
        previous = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), previous]))
        self.addCleanup(self._restore_path, previous)

    @staticmethod
    def _restore_path(previous: str | None) -> None:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous

    def events(self) -> dict[str, list[dict[str, Any]]]:
        """The plugin's events by the caller's Call-ID."""
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in self.log.read_text().splitlines():
            event = json.loads(line)
            found[event["call"]].append(event)
        return found

    async def uac(self, warden: WardenProcess, numbers: list[str], calls: int) -> Any:
        """Place ``calls`` calls from the caller to ``numbers`` in turn."""
        run_dir = self.workdir()
        caller_csv = run_dir / "caller.csv"
        password = self.users.passwords[self.caller]
        caller_csv.write_text(
            "SEQUENTIAL\n"
            + "".join(
                f"{self.caller};{password};{number};"
                f"[authentication username={self.caller} password={password}]\n"
                for number in numbers
            )
        )
        args = [
            f"{warden.address[0]}:{warden.address[1]}",
            "-sf", str(SCENARIOS / "call_uac.xml"), "-inf", str(caller_csv), "-i", LOCALHOST,
            "-p", str(free_port()), "-mp", str(free_media_port()), "-m", str(calls), "-l", "1",
            "-d", "200", "-timeout", "60s", "-timeout_error", "-trace_stat", "-trace_err",
        ]  # fmt: skip
        result = await run_sipp(args, run_dir, timeout=90)
        return result, read_sipp_stats(run_dir), read_sipp_errors(run_dir)

    async def test_every_point(self) -> None:
        """
        A direct call, one redirected before routing and one redirected after
        its routing failed are answered, each through every point in order; a
        barred number is refused 403; MESSAGE is answered by the plugin.
        """
        self.log = self.workdir() / "hooks.jsonl"
        settings: dict[str, dict[str, object]] = {
            "plugins": {"enabled": [*DEFAULT_PLUGINS, "hooktest"]},
            "hooktest": {"log": str(self.log), "callee": "2001"},
            "media": {"port_min": 32400, "port_max": 32600},
        }
        warden = await self.start_warden(settings)
        self.users = await provision(warden.config_path, 2, first=2000)
        self.caller, callee = self.users.numbers
        self.assertEqual(callee, "2001")
        run_dir = self.workdir()
        uas_port = free_port()
        reg, errors = await register_sipp_phone(
            warden.address, callee, self.users.passwords[callee], uas_port, run_dir
        )
        self.assertEqual(reg.code, 0, reg.stderr + errors)
        uas_dir = self.workdir()
        uas_args = [
            "-sf", str(SCENARIOS / "call_uas.xml"), "-i", LOCALHOST, "-p", str(uas_port),
            "-mp", str(free_media_port()), "-rtp_echo", "-m", "3", "-trace_msg", "-trace_err",
            f"{warden.address[0]}:{warden.address[1]}",
        ]  # fmt: skip
        uas, uas_process = spawn(sipp_command(uas_args), uas_dir)
        self.addCleanup(lambda: uas_process.signalProcess("KILL") if uas.running else None)

        result, stats, errors = await self.uac(warden, [callee, "8" + callee, "9404"], 3)
        context = f"UAC exit {result.code}\n{result.stderr}\n{errors}"
        self.assertEqual((stats.successful, stats.failed), (3, 0), context)
        await poll(lambda: not uas.running, 15)
        self.assertEqual(uas.code, 0, uas.output())

        # The outgoing legs carried the plugin's header, with the call's marks.
        received = "".join(p.read_text() for p in uas_dir.glob("*_messages.log"))
        # The direct call to an extension is also marked by voicemail (a default plugin).
        self.assertEqual(received.count("X-Hooktest: hooktest\n"), 1, received[-2000:])
        self.assertEqual(received.count("X-Hooktest: hooktest,voicemail\n"), 1)
        self.assertEqual(received.count("X-Hooktest: forwarded,hooktest\n"), 1)

        await poll(lambda: len(self.events()) == 3 and all(
            e[-1]["point"] == "ended" for e in self.events().values()
        ), 10)  # fmt: skip
        by_dialled = {
            calls[-1]["dialled"]: [e["point"] for e in calls] for calls in self.events().values()
        }
        answered = ["incoming", "incoming", "before_routing", "leg_built", "answered", "ended"]
        self.assertEqual(by_dialled[callee], answered)
        self.assertEqual(by_dialled["8" + callee], answered)
        self.assertEqual(
            by_dialled["9404"],
            ["incoming", "incoming", "before_routing", "routing_failed", *answered[3:]],
        )
        ended = {calls[-1]["dialled"]: calls[-1] for calls in self.events().values()}
        self.assertEqual(ended["8" + callee]["marks"], ["forwarded", "hooktest"])
        for dialled in (callee, "8" + callee, "9404"):
            self.assertEqual(
                (ended[dialled]["disposition"], ended[dialled]["callee"]), ("ANSWERED", callee)
            )

        # A barred number: 403 from the hook before routing, nothing rings.
        before = set(self.events())
        result, stats, errors = await self.uac(warden, ["9403"], 1)
        self.assertEqual((stats.successful, stats.failed), (0, 1), errors)
        self.assertIn("403", errors)
        barred = [calls for key, calls in self.events().items() if key not in before]
        self.assertEqual(
            [[e["point"] for e in calls] for calls in barred],
            [["incoming", "incoming", "before_routing"]],
        )

        # MESSAGE out of dialog: the plugin answers.
        client = await SipUdpClient.open(warden.address)
        self.addCleanup(client.close)
        response = await client.request(
            "MESSAGE", f"sip:{callee}@{LOCALHOST}",
            [("From", f"<sip:{self.caller}@{LOCALHOST}>;tag=m1"),
             ("To", f"<sip:{callee}@{LOCALHOST}>"), ("Call-ID", "hooktest-message"),
             ("CSeq", "1 MESSAGE")],
        )  # fmt: skip
        self.assertEqual((response.status, response.get("X-Hooktest")), (200, "message"))
        self.assertEqual([e["point"] for e in self.events()["hooktest-message"]], ["message"])
