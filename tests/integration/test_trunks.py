"""
SIP trunks end to end: a real ``twistd warden`` with ``[[trunks]]`` and
``[routes]``, and a fake ITSP played by SIPp on its own loopback address
(127.0.0.2, 127.0.0.3): Warden registers to it answering its digest challenge,
an extension's call goes out with the number rewritten and the trunk's caller
ID (the provider's 401 answered), the ITSP's call to a DID rings the
registered SIPp phone of its extension, an unknown DID is refused with 404,
and a trunk answering 503 is followed by the route's next trunk.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.integration.admin_client import new_admin
from tests.integration.clients import poll_async
from tests.integration.harness import (
    IntegrationTestCase,
    ProcessResult,
    WardenProcess,
    free_media_port,
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

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
BENCH_SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"
ITSP_HOST = "127.0.0.2"
BACKUP_HOST = "127.0.0.3"
ACCOUNT, PASSWORD = "acct", "itsp-secret"
# What itsp_uas.xml expects: the number sent (9 stripped, 1 added) and caller ID.
DIALLED, CALLER_ID = "95552345678", "15551230000"
# The caller's number the ITSP presents on calls to a DID (itsp_uac.xml).
OUTSIDE_CALLER = "15559876543"


def trunks_toml(trunks: list[dict[str, Any]], outbound: list[dict[str, Any]],
                inbound: list[dict[str, str]]) -> str:  # fmt: skip
    """``[[trunks]]``, ``[[routes.outbound]]`` and ``[[routes.inbound]]`` as TOML."""

    def value(v: Any) -> str:
        return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")

    lines: list[str] = []
    for header, tables in (
        ("trunks", trunks), ("routes.outbound", outbound), ("routes.inbound", inbound)
    ):  # fmt: skip
        for table in tables:
            lines.append(f"[[{header}]]")
            lines.extend(f"{k} = {value(v)}" for k, v in table.items())
            lines.append("")
    return "\n".join(lines)


class TrunkHarness(IntegrationTestCase):
    """Warden between SIPp phones and a SIPp ITSP: the helpers."""

    def setUp(self) -> None:
        """SIPp is needed."""
        super().setUp()
        require_sipp(self)
        self.token_file = ""

    async def warden_with(self, toml: str) -> WardenProcess:
        """A Warden whose configuration ends with ``toml``; stopped at the end."""
        workdir = self.workdir()
        password_file = workdir / "itsp.pw"
        password_file.write_text(PASSWORD + "\n")
        text = toml.replace("@PASSWORD_FILE@", str(password_file))
        return await self.start_warden(workdir=workdir, config_text=text)

    def itsp(
        self, host: str, scenario: str, calls: int, transport: str = "u1"
    ) -> tuple[Any, int, Path]:
        """A SIPp ITSP UAS on ``host``; returns it, its port and its directory."""
        run_dir = self.workdir()
        (run_dir / "itsp.csv").write_text(f"SEQUENTIAL\n{ACCOUNT};{PASSWORD}\n")
        port = free_port()
        args = [
            "-sf", str(SCENARIOS / scenario), "-inf", str(run_dir / "itsp.csv"),
            "-i", host, "-p", str(port), "-mp", str(free_media_port()), "-m", str(calls),
            "-trace_err", "-trace_msg", "-t", transport,
        ]  # fmt: skip
        return self.spawn_sipp(args, run_dir), port, run_dir

    async def dial(self, warden: WardenProcess, users: Any, number: str) -> ProcessResult:
        """The first extension dials ``number`` (SIPp UAC, digest, 1 s of audio)."""
        return await dial(self, warden, users, number)

    async def itsp_call(
        self, warden: WardenProcess, did: str, fields: tuple[str, ...] = (),
        scenario: str = "itsp_uac.xml",
    ) -> Path:  # fmt: skip
        """
        The ITSP (SIPp UAC on 127.0.0.2) calls ``did`` from 15559876543
        (``fields`` follow in the injection file); the call must complete.
        """
        run_dir = self.workdir()
        line = ";".join((did, OUTSIDE_CALLER, *fields))
        (run_dir / "did.csv").write_text(f"SEQUENTIAL\n{line}\n")
        args = sipp_uac_args(
            warden.address, SCENARIOS / scenario, run_dir / "did.csv",
            "-p", str(free_port()), "-d", "1000", "-trace_msg", host=ITSP_HOST,
        )  # fmt: skip
        result = await run_sipp(args, run_dir, timeout=90)
        stats = read_sipp_stats(run_dir)
        context = f"ITSP exit {result.code}\n{result.stderr}\n{read_sipp_errors(run_dir)}"
        self.assertEqual((result.code, stats.successful, stats.failed), (0, 1, 0), context)
        return run_dir

    async def phone(self, warden: WardenProcess, users: Any, number: str, calls: int = 1,
                    ) -> tuple[Any, Path]:  # fmt: skip
        """
        Extension ``number`` registered from a SIPp UAS answering ``calls``
        calls (messages traced); returns it and its directory.
        """
        return await self.sipp_callee(
            warden, number, users.passwords[number], BENCH_SCENARIOS / "call_uas.xml", calls
        )

    async def registration_and_outbound_call(
        self, transport: str, reach: Callable[[int], Awaitable[dict[str, Any]]] | None = None
    ) -> tuple[WardenProcess, Path]:
        """
        Registration, then an outbound call, over ``transport`` (the Warden
        and the ITSP's directory); ``reach``
        maps the SIPp ITSP's port to the trunk's keys (default: its host and
        port), for an ITSP behind a relay.
        """
        sipp_transport = {"udp": "u1", "tcp": "t1", "tls": "t1"}[transport]
        itsp, port, itsp_dir = self.itsp(ITSP_HOST, "itsp_uas.xml", 2, sipp_transport)
        where = {"host": ITSP_HOST, "port": port} if reach is None else await reach(port)
        warden = await self.warden_with(trunks_toml(
            [{"name": "itsp", **where, "username": ACCOUNT,
              "password_file": "@PASSWORD_FILE@", "from_number": CALLER_ID,
              "transport": transport}],
            [{"pattern": "_9NXXNXXXXXX", "strip": 1, "prefix": "1", "trunks": ["itsp"]}],
            [],
        ))  # fmt: skip
        users = await provision(warden.config_path, 2, first=2000)
        trunks = await self.trunks_state(warden)
        self.assertTrue(await poll_async(lambda: self.state_is(warden, "registered"), 30), trunks)
        await self.dial(warden, users, DIALLED)
        await self.sipp_finished(itsp, itsp_dir)
        messages = read_sipp_messages(itsp_dir)
        self.assertEqual(messages.count("Authorization: Digest"), 2)
        self.assertNotIn(PASSWORD, warden.log_text())
        [itsp_state] = await self.trunks_state(warden)
        self.assertEqual(
            (itsp_state["name"], itsp_state["state"], itsp_state["last_error"]),
            ("itsp", "registered", ""),
        )
        self.assertEqual(itsp_state["calls_in_progress"], 0)
        table = await wardenctl(warden.config_path, "trunks", "--token-file", self.token_file)
        self.assertEqual(table.code, 0, table.stderr)
        self.assertIn("itsp", table.stdout)
        self.assertIn("registered", table.stdout)
        return warden, itsp_dir

    async def trunks_state(self, warden: WardenProcess) -> list[dict[str, Any]]:
        """``wardenctl trunks --json`` (with a read token made on first use)."""
        if not self.token_file:
            await new_admin(warden)
            made = await wardenctl(warden.config_path, "admin", "token", "ops", "trunks")
            self.assertEqual(made.code, 0, made.stderr)
            path = warden.workdir / "token"
            path.write_text(made.stdout.strip())
            self.token_file = str(path)
        shown = await wardenctl(
            warden.config_path, "trunks", "--json", "--token-file", self.token_file
        )
        self.assertEqual(shown.code, 0, shown.stderr)
        state: list[dict[str, Any]] = json.loads(shown.stdout)
        return state

    async def state_is(self, warden: WardenProcess, state: str) -> bool:
        """Whether the first trunk's registration state is ``state``."""
        return (await self.trunks_state(warden))[0]["state"] == state


class TrunkTests(TrunkHarness):
    """Warden between SIPp phones and a SIPp ITSP."""

    async def test_registration_and_outbound_call(self) -> None:
        """
        Warden registers (401 answered), then an extension's call goes out as
        1NXXNXXXXXX with the trunk's caller ID, the 401 answered.
        """
        await self.registration_and_outbound_call("udp")

    async def test_over_tcp(self) -> None:
        """The same over TCP: Warden opens the connection to the provider."""
        await self.registration_and_outbound_call("tcp")

    async def test_inbound_did(self) -> None:
        """The ITSP calls a DID: its extension's phone rings and answers; no challenge."""
        warden = await self.warden_with(trunks_toml(
            [{"name": "itsp", "host": ITSP_HOST, "register": False}],
            [],
            [{"did": "15551230001", "to": "2001"}],
        ))  # fmt: skip
        users = await provision(warden.config_path, 2, first=2000)
        callee = users.numbers[1]
        phone, _ = await self.phone(warden, users, callee)
        run_dir = await self.itsp_call(warden, "15551230001")
        self.assertNotIn(" 407 ", read_sipp_messages(run_dir))
        self.assertTrue(await poll(lambda: not phone.running, 30), phone.output())
        self.assertEqual(phone.code, 0, phone.output())
        listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
        records = json.loads(listed.stdout)
        self.assertEqual(
            [(r["caller"], r["callee"], r["disposition"]) for r in records],
            [("15559876543", callee, "ANSWERED")],
        )

    async def test_unknown_did(self) -> None:
        """A DID no inbound route has is refused with 404."""
        warden = await self.warden_with(trunks_toml(
            [{"name": "itsp", "host": ITSP_HOST, "register": False}],
            [],
            [{"did": "15551230001", "to": "2001"}],
        ))  # fmt: skip
        run_dir = await self.itsp_call(warden, "15550000000")
        messages = read_sipp_messages(run_dir)
        finals = [
            line.strip() for line in messages.splitlines() if line.strip().startswith("SIP/2.0 4")
        ]
        self.assertEqual(finals[-1:], ["SIP/2.0 404 Not Found"], messages[-3000:])

    async def test_failover(self) -> None:
        """The first trunk answers 503: the call goes out on the second."""
        first, first_port, first_dir = self.itsp(ITSP_HOST, "itsp_unavailable_uas.xml", 1)
        second, second_port, second_dir = self.itsp(BACKUP_HOST, "itsp_uas.xml", 1)
        warden = await self.warden_with(trunks_toml(
            [{"name": "first", "host": ITSP_HOST, "port": first_port, "register": False},
             {"name": "second", "host": BACKUP_HOST, "port": second_port, "register": False,
              "username": ACCOUNT, "password_file": "@PASSWORD_FILE@",
              "from_number": CALLER_ID}],
            [{"pattern": "_9NXXNXXXXXX", "strip": 1, "prefix": "1",
              "trunks": ["first", "second"]}],
            [],
        ))  # fmt: skip
        users = await provision(warden.config_path, 2, first=2000)
        await self.dial(warden, users, DIALLED)
        await self.sipp_finished(first, first_dir)
        await self.sipp_finished(second, second_dir)


async def dial(
    testcase: IntegrationTestCase, warden: WardenProcess, users: Any, number: str
) -> ProcessResult:
    """
    The first extension of ``users`` dials ``number`` (SIPp UAC, digest, 1 s of
    audio); the call must be answered.
    """
    caller = users.numbers[0]
    password = users.passwords[caller]
    run_dir = testcase.workdir()
    caller_csv = write_sipp_caller(run_dir, caller, password, number)
    args = sipp_uac_args(
        warden.address, BENCH_SCENARIOS / "call_uac.xml", caller_csv,
        "-p", str(free_port()), "-d", "1000",
    )  # fmt: skip
    result = await run_sipp(args, run_dir, timeout=90)
    stats = read_sipp_stats(run_dir)
    if (result.code, stats.successful, stats.failed) != (0, 1, 0):
        # Warden's own account of the call (trunks tried, why each failed).
        log = "\n".join(warden.log_text().splitlines()[-80:])
        testcase.fail(
            f"UAC exit {result.code}, {stats.successful} answered, {stats.failed} failed\n"
            f"{result.stderr}\n{read_sipp_errors(run_dir)}\n--- Warden's log (tail) ---\n{log}"
        )
    return result
