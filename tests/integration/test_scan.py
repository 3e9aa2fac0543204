"""
SIPVicious (Debian's ``sipvicious``: ``svmap``, ``svwar``, ``svcrack``) against
a real ``twistd warden`` on loopback, as an attacker on the Internet would run
it: the scan learns no version, enumerates no extension and cracks no password
(the cracker is blocked), while a registered phone keeps registering.

The scanner and the phone share 127.0.0.1, as an attacker and a phone behind
one office NAT would (svcrack 0.3.3 ignores ``-b``). Every scan targets only
127.0.0.1 on the test Warden's port, bounded in requests (a few dozen
extensions or passwords) and in time (``--maximumtime``, and a kill after
``SCAN_TIMEOUT`` seconds; svcrack, answered 403 once blocked, would otherwise
keep asking).
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.internet.defer import Deferred

from tests.integration.clients import LOCALHOST, pause
from tests.integration.harness import (
    IntegrationTestCase,
    ProcessResult,
    Users,
    WardenProcess,
    free_port,
    provision,
    require_binary,
    run_process,
)

PACKAGE = "sipvicious"
#: Seconds before a scan that still runs is killed.
SCAN_TIMEOUT = 30.0
#: Seconds svcrack may run: long enough for its guesses and the block.
CRACK_SECONDS = 8.0
FIRST = 2001
#: Extensions svwar tries: the three provisioned ones among others.
WAR_RANGE = f"{FIRST - 5}-{FIRST + 14}"
#: Wrong guesses svcrack sends before the right password: more than the
#: per-extension failure limit (10 by default), so the right one comes too late.
WRONG_GUESSES = 15
_FOUND_ROW = re.compile(r"^\|\s*(\d+)\s*\|", re.MULTILINE)


class SipviciousScanTests(IntegrationTestCase):
    """svmap, svwar and svcrack against a Warden on its defaults."""

    def setUp(self) -> None:
        """The three SIPVicious tools are needed (skipped locally, failed under CI)."""
        super().setUp()
        self.tools = {
            name: require_binary(self, name, PACKAGE) for name in ("svmap", "svwar", "svcrack")
        }

    async def scan(self, tool: str, *args: str, timeout: float = SCAN_TIMEOUT) -> ProcessResult:
        """Run one SIPVicious tool from a port of its own; killed after ``timeout`` s."""
        command = [self.tools[tool], "-P", str(free_port()), *args]
        return await run_process(command, self.scan_dir, timeout)

    async def start(self) -> tuple[WardenProcess, Users]:
        """A Warden on its defaults with extensions 2001-2003, and a scratch directory."""
        self.scan_dir = self.workdir()
        warden = await self.start_warden()
        users = await provision(warden.config_path, 3, first=FIRST)
        return warden, users

    def target(self, warden: WardenProcess) -> str:
        """The scanners' target: the test Warden on 127.0.0.1 only."""
        return f"udp://{LOCALHOST}:{warden.port}"

    async def test_svmap_learns_no_version(self) -> None:
        """svmap finds the SIP server; what it reports as its user agent has no version."""
        warden, _ = await self.start()
        result = await self.scan("svmap", LOCALHOST, "-p", str(warden.port))
        self.assertEqual(result.code, 0, result.stdout + result.stderr)
        self.assertIn(f"{LOCALHOST}:{warden.port}", result.stdout)
        self.assertIn("Warden", result.stdout)
        self.assertNotRegex(result.stdout, r"Warden/\d")

    async def test_svwar_finds_no_extension(self) -> None:
        """
        svwar enumerating 20 numbers around the three extensions (with REGISTER,
        INVITE and OPTIONS) gets the same answer for known and unknown numbers:
        it reports none, and stops at its first check unless forced.
        """
        warden, users = await self.start()
        unforced = await self.scan("svwar", "-e", WAR_RANGE, self.target(warden))
        self.assertIn("authentication request for an unknown extension", unforced.stderr)
        for method in ("REGISTER", "INVITE", "OPTIONS"):
            result = await self.scan(
                "svwar",
                "--force",
                "-m",
                method,
                "-e",
                WAR_RANGE,
                "--maximumtime",
                "5",
                self.target(warden),
            )
            output = result.stdout + result.stderr
            self.assertEqual(result.code, 0, output)
            self.assertEqual(_FOUND_ROW.findall(output), [], output)
            self.assertNotIn("exists", output)
            for number in users.numbers:
                # As a number of its own: svwar's random Via branches and
                # tags may contain the digits (z9hG4bK-263962002).
                self.assertIsNone(re.search(rf"(?<![0-9]){number}(?![0-9])", output), output)

    async def test_svcrack_blocked_while_the_phone_works(self) -> None:
        """
        svcrack guessing extension 2002's password (wrong guesses, then the
        right one) is blocked after the per-extension failure limit: it finds
        no password, Warden logs the block and refuses even the right password
        for 2002 from that address, and meanwhile the phone of 2001 behind the
        same address keeps refreshing its registration.
        """
        warden, users = await self.start()
        number, victim = users.numbers[0], users.numbers[1]
        password = users.passwords[number]
        phone = await self.sip_client(warden)
        contact = f"<sip:{number}@{LOCALHOST}:{phone.local_port}>"
        self.assertEqual((await phone.register(number, password, contact)).status, 200)
        dictionary = Path(self.scan_dir) / "passwords.txt"
        guesses = [f"guess{i}" for i in range(WRONG_GUESSES)] + [users.passwords[victim]]
        dictionary.write_text("\n".join(guesses) + "\n", encoding="ascii")
        crack = Deferred.fromCoroutine(
            self.scan(
                "svcrack",
                "-u",
                victim,
                "-d",
                str(dictionary),
                "--maximumtime",
                "3",
                self.target(warden),
                timeout=CRACK_SECONDS,
            )
        )
        refreshed = []
        while not crack.called and len(refreshed) < 4 * CRACK_SECONDS:
            refreshed.append((await phone.register(number, password, contact)).status)
            await pause(0.2)
        result: ProcessResult = await crack
        output = result.stdout + result.stderr
        self.assertIn(result.code, (0, -9), output)  # -9: still asking when killed
        self.assertNotIn(users.passwords[victim], output)
        self.assertNotIn("The password for", output)
        self.assertIn(f"Blocking {LOCALHOST} (or {victim} at it)", warden.log_text())
        cracker = await self.sip_client(warden)
        right = await cracker.register(victim, users.passwords[victim], contact)
        self.assertEqual(right.status, 403, "the right password still got through")
        self.assertTrue(refreshed, "the phone did not register during the scan")
        self.assertEqual(set(refreshed), {200}, refreshed)
        self.assertEqual((await phone.register(number, password, contact)).status, 200)
