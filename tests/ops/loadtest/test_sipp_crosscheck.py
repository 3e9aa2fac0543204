"""
Cross-check with SIPp: the same registration load (as many users, at the same
rate) measured by SIPp and by ``twistd warden-loadtest`` against the same Warden
must agree on success counts exactly and on the p95 of the authenticated
REGISTER's response time within 20%.

Both reach Warden through a 40 ms delay line (L{tests.ops.loadtest.delayline}),
so the response times are well above SIPp's 4 ms clock granularity, and both run
at the same time, each with its own half of the users, so that Warden's own
occasional pauses (a database flush) fall on both measurements alike. The test
prints both results.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from twisted.internet.defer import Deferred, gatherResults

from tests.integration.harness import (
    IntegrationTestCase,
    provision,
    real_reactor,
    require_sipp,
    run_process,
    run_sipp,
    sipp_register_args,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_rtts, read_sipp_stats
from tests.ops.loadtest.delayline import DelayLine
from tests.ops.loadtest.test_run import loadtest_command
from warden.ops.loadtest.stats import percentile

USERS = 200
RATE = 60
DELAY = 0.040

_T = TypeVar("_T")


async def gather(first: Awaitable[_T], second: Awaitable[_T]) -> list[_T]:
    """Run two coroutines at the same time; both results, in order."""
    return await gatherResults(
        [Deferred.fromCoroutine(first), Deferred.fromCoroutine(second)],  # type: ignore[arg-type]
        consumeErrors=True,
    )


def split_users(csv: Path) -> tuple[Path, Path]:
    """The SIPp injection file ``csv`` as two files, its first half and its second."""
    header, *lines = csv.read_text(encoding="ascii").splitlines(keepends=True)
    half = len(lines) // 2
    first, second = csv.with_name("users-a.csv"), csv.with_name("users-b.csv")
    first.write_text(header + "".join(lines[:half]), encoding="ascii")
    second.write_text(header + "".join(lines[half:]), encoding="ascii")
    return first, second


class SippCrossCheckTests(IntegrationTestCase):
    """SIPp and warden-loadtest measure the same load alike."""

    def setUp(self) -> None:
        """SIPp is needed."""
        super().setUp()
        require_sipp(self)

    async def test_same_registration_load_agrees(self) -> None:
        """Same successes exactly; p95 of the authenticated REGISTER within 20%."""
        warden = await self.start_warden()
        users = await provision(warden.config_path, 2 * USERS, first=6000)
        line = DelayLine(real_reactor(), warden.address, DELAY)
        port = line.open()
        self.addCleanup(line.close)
        sipp_csv, ours_csv = split_users(users.sipp_csv)
        sipp_dir = self.workdir()
        ours_dir = self.workdir()
        report_path = ours_dir / "report.json"
        sipp, ours = await gather(
            run_sipp(sipp_register_args(("127.0.0.1", port), sipp_csv, USERS, RATE), sipp_dir),
            run_process(
                loadtest_command(
                    ours_dir,
                    "--pbx-host",
                    "127.0.0.1",
                    "--sip-port",
                    str(port),
                    "--local-ip",
                    "127.0.0.1",
                    "--users",
                    str(USERS),
                    "--users-file",
                    str(ours_csv),
                    "--register-rate",
                    str(RATE),
                    "--save-report",
                    str(report_path),
                    "--no-progress",
                ),
                ours_dir,
                120,
            ),
        )
        self.assertEqual(sipp.code, 0, sipp.stderr + read_sipp_errors(sipp_dir))
        sipp_ok = read_sipp_stats(sipp_dir).successful
        sipp_p95 = percentile(read_sipp_rtts(sipp_dir), 95)
        self.assertEqual(ours.code, 0, ours.stderr)
        report = json.loads(report_path.read_text())
        ours_ok = report["phases"]["register"]["succeeded"]
        ours_p95 = report["timers"]["register_auth"]["p95_ms"]
        sys.stderr.write(
            f"\nSIPp: {sipp_ok} registered, p95 {sipp_p95:.1f} ms; "
            f"warden-loadtest: {ours_ok} registered, p95 {ours_p95:.1f} ms\n"
        )
        assert sipp_p95 is not None
        self.assertEqual(sipp_ok, USERS)
        self.assertEqual(ours_ok, sipp_ok)
        self.assertLessEqual(abs(ours_p95 - sipp_p95), 0.2 * sipp_p95, (ours_p95, sipp_p95))
