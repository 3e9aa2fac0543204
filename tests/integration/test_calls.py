"""
Calls end to end: a real ``twistd warden``; a SIPp UAS registered as one
extension answers calls that a SIPp UAC places (with digest authentication) as
another, and plays G.711 RTP from a pcap; the UAS echoes it. RTP must flow
through Warden's relay ports, a call record must be written, and every media
port must be released.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

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
from warden.store.spool import SPOOL_FILENAME

SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"
PCAP = Path("/usr/share/sip-tester/g711a.pcap")
MEDIA_RANGE = (32000, 32200)


class SippCallTests(IntegrationTestCase):
    """SIPp UAC -> Warden (B2BUA + relay) -> SIPp UAS."""

    #: Where the media engine's ports are (a subclass may use another engine).
    media_range = MEDIA_RANGE

    def media_config(self) -> dict[str, object]:
        """Warden's ``[media]`` section: the built-in relay on ``media_range``."""
        return {"port_min": self.media_range[0], "port_max": self.media_range[1]}

    def setUp(self) -> None:
        """SIPp and its sample pcap are needed."""
        super().setUp()
        require_sipp(self)
        if not PCAP.exists():
            self.fail(f"{PCAP} is missing (Debian package sip-tester)")

    async def call_setup(self, calls: int) -> tuple[WardenProcess, Users, Any, list[str]]:
        """
        A Warden, two extensions, the callee's SIPp UAS registered and answering
        ``calls`` calls (echoing RTP); returns the Warden, the users, the UAS and
        the SIPp arguments of a UAC placing those calls (add -d and -r).
        """
        warden = await self.start_warden({"media": self.media_config()})
        users = await provision(warden.config_path, 2, first=2000)
        caller, callee = users.numbers
        run_dir = self.workdir()
        uas_port, uas_media = free_port(), free_media_port()
        self.uas_media = uas_media
        # Register the callee from the port its SIPp UAS will listen on.
        reg, errors = await register_sipp_phone(
            warden.address, callee, users.passwords[callee], uas_port, run_dir
        )
        self.assertEqual(reg.code, 0, reg.stderr + errors)
        uas_dir = self.workdir()
        uas_args = [
            "-sf", str(SCENARIOS / "call_uas.xml"), "-i", LOCALHOST, "-p", str(uas_port),
            "-mp", str(uas_media), "-rtp_echo", "-m", str(calls), "-trace_err",
            f"{warden.address[0]}:{warden.address[1]}",
        ]  # fmt: skip
        uas, uas_process = spawn(sipp_command(uas_args), uas_dir)
        self.addCleanup(lambda: uas_process.signalProcess("KILL") if uas.running else None)
        caller_csv = run_dir / "caller.csv"
        password = users.passwords[caller]
        caller_csv.write_text(
            f"SEQUENTIAL\n{caller};{password};{callee};"
            f"[authentication username={caller} password={password}]\n"
        )
        uac_args = [
            f"{warden.address[0]}:{warden.address[1]}",
            "-sf", str(SCENARIOS / "call_uac.xml"), "-inf", str(caller_csv), "-i", LOCALHOST,
            "-p", str(free_port()), "-mp", str(free_media_port()), "-m", str(calls),
            "-l", str(calls), "-timeout", "60s", "-timeout_error", "-trace_stat", "-trace_err",
        ]  # fmt: skip
        return warden, users, uas, uac_args

    async def run_uac(self, args: list[str], calls: int, uas: Any) -> None:
        """Run the UAC to the end: every call must succeed, and the UAS must finish."""
        uac_dir = self.workdir()
        uac = await run_sipp(args, uac_dir, timeout=90)
        stats = read_sipp_stats(uac_dir)
        context = f"UAC exit {uac.code}\n{uac.stderr}\n{read_sipp_errors(uac_dir)}"
        self.assertEqual(uac.code, 0, context)
        self.assertEqual((stats.successful, stats.failed), (calls, 0), context)
        await poll(lambda: not uas.running, 15)
        self.assertEqual(uas.code, 0, uas.output())

    def assertRelayed(self, record: dict[str, Any], caller: str, callee: str) -> None:
        """An answered G.711 call whose RTP went both ways through Warden's ports."""
        self.assertEqual(record["disposition"], "ANSWERED")
        self.assertEqual((record["caller"], record["callee"]), (caller, callee))
        self.assertEqual(record["codec"], "PCMA")
        media = record["media"]
        for side in ("a", "b"):
            # Each side's relay port is in Warden's range, RTP came in and went
            # out there: the phones talked to Warden, not to each other.
            low, high = self.media_range
            self.assertTrue(low <= media[side]["rtp_port"] <= high, media)
            self.assertGreater(media[side]["packets_in"], 50, media)
            self.assertGreater(media[side]["packets_out"], 50, media)
        self.assertEqual(media["b"]["latched"].rsplit(":", 1)[1], str(self.uas_media))

    async def assertAllRelayed(self, warden: WardenProcess, users: Users, calls: int) -> None:
        """Warden's call records: ``calls`` of them, each relayed (assertRelayed)."""
        listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
        self.assertEqual(listed.code, 0, listed.stderr)
        records = json.loads(listed.stdout)
        self.assertEqual(len(records), calls)
        for record in records:
            self.assertRelayed(record, *users.numbers)

    async def test_calls_with_rtp_through_relay(self) -> None:
        """Five calls with RTP both ways: relayed, recorded, ports released."""
        calls = 5
        warden, users, uas, uac_args = await self.call_setup(calls)
        await self.run_uac([*uac_args, "-r", "2", "-d", "3000"], calls, uas)
        await self.assertAllRelayed(warden, users, calls)

        # Live-call summaries are written in batches (CoalescingLiveCalls): the
        # ended calls leave the store within one flush interval, not at the BYE.
        async def no_live_calls() -> bool:
            live = await wardenctl(warden.config_path, "calls", "--json")
            return live.code == 0 and json.loads(live.stdout) == []

        self.assertTrue(await poll_async(no_live_calls, 30), warden.log_tail())
        self.assertEqual(held_ports(self.media_range), [])

    async def test_database_lost_mid_call(self) -> None:
        """
        The database becomes unwritable (another process holds an exclusive lock)
        while a call is up: the call goes on to its normal end with RTP both ways,
        its record waits in the spool, and is written once the database is back.
        """
        warden, users, uas, uac_args = await self.call_setup(1)
        uac_dir = self.workdir()
        uac, uac_process = spawn(sipp_command([*uac_args, "-d", "8000"]), uac_dir)
        self.addCleanup(lambda: uac_process.signalProcess("KILL") if uac.running else None)

        async def call_is_up() -> bool:
            live = await wardenctl(warden.config_path, "calls", "--json")
            return live.code == 0 and len(json.loads(live.stdout)) == 1

        self.assertTrue(await poll_async(call_is_up, 20), warden.log_tail())
        lock = sqlite3.connect(warden.database_path, timeout=10, isolation_level=None)
        self.addCleanup(lock.close)
        lock.execute("BEGIN EXCLUSIVE")
        self.assertTrue(await poll(lambda: not uac.running, 60), "the call did not end")
        stats = read_sipp_stats(uac_dir)
        context = f"UAC exit {uac.code}\n{uac.output()}\n{read_sipp_errors(uac_dir)}"
        self.assertEqual((uac.code, stats.successful, stats.failed), (0, 1, 0), context)
        await poll(lambda: not uas.running, 15)
        # Not written: the record is in the spool, and Warden said so (once the
        # database's busy timeout ran out).
        spool = warden.data_dir / SPOOL_FILENAME
        self.assertTrue(await poll(lambda: spool.exists() and spool.stat().st_size > 0, 30))
        self.assertTrue(
            await poll(lambda: "could not store call record" in warden.log_text(), 30),
            warden.log_tail(),
        )
        self.assertEqual(lock.execute("SELECT COUNT(*) FROM call_records").fetchone()[0], 0)
        lock.execute("ROLLBACK")
        lock.close()

        async def recorded() -> bool:
            listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
            return listed.code == 0 and len(json.loads(listed.stdout)) == 1

        self.assertTrue(await poll_async(recorded, 40), warden.log_tail())
        listed = await wardenctl(warden.config_path, "cdr", "list", "--json")
        self.assertRelayed(json.loads(listed.stdout)[0], *users.numbers)
        self.assertNotIn("Traceback", warden.log_text())
        self.assertTrue(await poll(lambda: spool.stat().st_size == 0, 30))
        self.assertEqual(held_ports(self.media_range), [])


def held_ports(port_range: tuple[int, int]) -> list[int]:
    """Ports of the range that cannot be bound on 127.0.0.1 (someone holds them)."""
    held = []
    for port in range(port_range[0], port_range[1] + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            held.append(port)
        finally:
            sock.close()
    return held
