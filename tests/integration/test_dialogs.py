"""
Dialogs against a real ``twistd warden`` with its default configuration, driven
by SIPp:

- a phone that registers from one port and listens on another (its Contact)
  receives its calls there ([sip] nat = "auto");
- requests in the would-be dialog of a call that was never answered get 481
  (RFC 3261 §12.2.2, §15.1.2), method by method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.clients import poll
from tests.integration.harness import (
    LOCALHOST,
    IntegrationTestCase,
    WardenProcess,
    free_media_port,
    free_port,
    provision,
    require_sipp,
    run_sipp,
    sipp_command,
    sipp_register_args,
    spawn,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_stats

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
BENCH_SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"


class DialogTests(IntegrationTestCase):
    """SIPp phones against a default Warden."""

    def setUp(self) -> None:
        """SIPp is needed."""
        super().setUp()
        require_sipp(self)

    def auth(self, number: str, password: str) -> str:
        """SIPp's keyword answering a digest challenge for ``number``."""
        return f"[authentication username={number} password={password}]"

    async def register(
        self, warden: WardenProcess, number: str, password: str, source: int, contact: int
    ) -> None:
        """Register ``number`` with SIPp from port ``source``, Contact port ``contact``."""
        run_dir = self.workdir()
        users = run_dir / "callee.csv"
        users.write_text(
            f"SEQUENTIAL\n{number};{password};{self.auth(number, password)};{contact}\n"
        )
        args = sipp_register_args(
            warden.address, users, 1, 10, local_port=source,
            scenario=SCENARIOS / "register_contact.xml",
        )  # fmt: skip
        result = await run_sipp(args, run_dir)
        self.assertEqual(result.code, 0, result.stderr + read_sipp_errors(run_dir))

    async def place_call(
        self, warden: WardenProcess, caller: str, password: str, callee: str, scenario: Path
    ) -> tuple[Any, Path]:
        """Run a SIPp UAC with ``scenario`` calling ``callee``; its result and directory."""
        run_dir = self.workdir()
        users = run_dir / "caller.csv"
        users.write_text(
            f"SEQUENTIAL\n{caller};{password};{callee};{self.auth(caller, password)}\n"
        )
        args = [
            f"{warden.address[0]}:{warden.address[1]}",
            "-sf", str(scenario), "-inf", str(users), "-i", LOCALHOST,
            "-p", str(free_port()), "-mp", str(free_media_port()), "-m", "1", "-l", "1",
            "-d", "500", "-timeout", "90s", "-timeout_error", "-trace_stat", "-trace_err",
        ]  # fmt: skip
        return await run_sipp(args, run_dir, timeout=120), run_dir

    async def test_call_reaches_contact_port(self) -> None:
        """
        The callee registers from port A with a Contact naming port B, where a
        SIPp UAS listens (nothing listens on A): with the default configuration
        the call reaches the UAS, is answered and ends normally.
        """
        warden = await self.start_warden()
        users = await provision(warden.config_path, 2, first=3000)
        caller, callee = users.numbers
        register_port, uas_port = free_port(), free_port()
        await self.register(warden, callee, users.passwords[callee], register_port, uas_port)
        uas_dir = self.workdir()
        uas_args = [
            "-sf", str(BENCH_SCENARIOS / "call_uas.xml"), "-i", LOCALHOST, "-p", str(uas_port),
            "-mp", str(free_media_port()), "-m", "1", "-trace_err",
            f"{warden.address[0]}:{warden.address[1]}",
        ]  # fmt: skip
        uas, uas_process = spawn(sipp_command(uas_args), uas_dir)
        self.addCleanup(lambda: uas_process.signalProcess("KILL") if uas.running else None)
        result, uac_dir = await self.place_call(
            warden, caller, users.passwords[caller], callee, BENCH_SCENARIOS / "call_uac.xml"
        )
        stats = read_sipp_stats(uac_dir)
        context = f"UAC exit {result.code}\n{result.stderr}\n{read_sipp_errors(uac_dir)}"
        self.assertEqual((result.code, stats.successful, stats.failed), (0, 1, 0), context)
        self.assertTrue(await poll(lambda: not uas.running, 15), "the UAS got no call")
        self.assertEqual(uas.code, 0, uas.output())

    async def test_requests_after_unanswered_call_get_481(self) -> None:
        """
        The callee's binding never answers (nothing listens where it registered):
        after the ring timeout the caller gets 480; then BYE, re-INVITE, UPDATE,
        INFO, REFER and NOTIFY in that would-be dialog each get 481. Voicemail
        is off, or it would answer the call.
        """
        warden = await self.start_warden({"voicemail": {"enabled": False}})
        users = await provision(warden.config_path, 2, first=3100)
        caller, callee = users.numbers
        silent = free_port()
        await self.register(warden, callee, users.passwords[callee], silent, silent)
        result, uac_dir = await self.place_call(
            warden, caller, users.passwords[caller], callee, SCENARIOS / "failed_call_requests.xml"
        )
        stats = read_sipp_stats(uac_dir)
        context = f"UAC exit {result.code}\n{result.stderr}\n{read_sipp_errors(uac_dir)}"
        self.assertEqual((result.code, stats.successful, stats.failed), (0, 1, 0), context)
