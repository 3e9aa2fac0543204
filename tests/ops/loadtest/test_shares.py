"""Splitting a run between processes: disjoint, complete shares; options and child arguments."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from warden.ops.loadtest.options import Options, worker_arguments
from warden.ops.loadtest.shares import Share, part


def parse(testcase: SynchronousTestCase, *args: str, users: int = 10) -> Options:
    """Options with a users file of ``users`` users."""
    path = Path(testcase.mktemp())
    path.write_text("".join(f"{1000 + i};pw{i}\n" for i in range(users)))
    options = Options()
    options.parse_strict(["--users-file", str(path), "--users", str(users), *args])
    return options


class PartitionTests(SynchronousTestCase):
    """Users, rates and counts split N ways."""

    def test_users_disjoint_and_complete(self) -> None:
        """For many sizes, the shares' user ranges are contiguous, disjoint and cover all."""
        for users in (1, 2, 7, 10, 101, 1000):
            for count in range(1, min(users, 9) + 1):
                settings = parse(self, "--users", str(users), users=users).settings
                assert settings is not None
                shares = [Share.of(settings, i, count) for i in range(count)]
                covered = [u for s in shares for u in range(s.user_start, s.user_end)]
                self.assertEqual(covered, list(range(users)), (users, count))
                sizes = [s.user_end - s.user_start for s in shares]
                self.assertLessEqual(max(sizes) - min(sizes), 1)

    def test_rates_and_counts(self) -> None:
        """Rates divided; counts split with the remainder going to the first shares."""
        settings = parse(
            self, "--test-type", "calls", "--register-rate", "100", "--call-rate", "9",
            "--total-calls", "10", "--concurrent-calls", "5", "--max-pending", "7",
        ).settings  # fmt: skip
        assert settings is not None
        shares = [Share.of(settings, i, 3) for i in range(3)]
        self.assertAlmostEqual(sum(s.register_rate for s in shares), 100.0)
        self.assertAlmostEqual(sum(s.call_rate for s in shares), 9.0)
        self.assertEqual([s.total_calls for s in shares], [4, 3, 3])
        self.assertEqual([s.concurrent_calls for s in shares], [2, 2, 1])
        self.assertEqual([s.max_pending for s in shares], [3, 2, 2])
        self.assertEqual(sum(part(10, 3, i) for i in range(3)), 10)
        applied = shares[2].apply(settings)
        self.assertEqual((applied.users, applied.total_calls, applied.call_rate), (3, 3, 3.0))

    def test_process_takes_its_users(self) -> None:
        """--worker-index 1 --worker-count 3 loads only its slice of the users file."""
        options = parse(self, "--worker-index", "1", "--worker-count", "3")
        self.assertEqual([a.user for a in options.accounts], ["1004", "1005", "1006"])
        assert options.share is not None
        self.assertEqual((options.share.user_start, options.share.user_end), (4, 7))

    def test_refused(self) -> None:
        """Impossible splits and combinations are usage errors naming the option."""
        cases = {
            "--worker-index": ["--worker-index", "2", "--worker-count", "2"],
            "--users: 10 cannot give each of 6 shares 2": [
                "--test-type", "calls", "--worker-count", "6", "--total-calls", "60",
                "--concurrent-calls", "60",
            ],
            "--total-calls": ["--test-type", "calls", "--workers", "3", "--total-calls", "2"],
            "--workers: give it alone": ["--workers", "2", "--worker-count", "2"],
            "--prometheus-port": ["--workers", "2", "--prometheus-port", "9999"],
        }  # fmt: skip
        for fragment, args in cases.items():
            error = self.assertRaises(usage.UsageError, parse, self, *args)
            self.assertIn(fragment, str(error))


class WorkerArgumentsTests(SynchronousTestCase):
    """What --workers gives each child."""

    def test_child_parses_to_its_share_of_the_same_run(self) -> None:
        """
        A child's arguments parse to the parent's run (same options), with its
        index, the count, its report, the progress channel, and the p95 limit as
        given in seconds.
        """
        parent = parse(
            self, "-T", "mixed", "-R", "30", "--rtp", "--max-p95", "0.25", "-w", "2",
            "--call-rate", "0.3", "--save-report", "all.json", "--duration", "12",
        )  # fmt: skip
        args = worker_arguments(parent, 1, "/tmp/share-1.json", None)
        child = Options()
        child.parse_strict(args)
        p, c = parent.settings, child.settings
        assert p is not None and c is not None
        for key in ("test_type", "register_rate", "call_rate", "rtp", "max_p95_ms", "duration",
                    "users", "pbx_host", "local_ip"):  # fmt: skip
            self.assertEqual(getattr(c, key), getattr(p, key), key)
        self.assertEqual(c.users_file, os.path.abspath(p.users_file or ""))
        self.assertEqual((c.worker_index, c.worker_count, c.workers), (1, 2, 1))
        self.assertEqual((c.progress_fd, c.save_report), (3, "/tmp/share-1.json"))
        self.assertEqual([a.user for a in child.accounts], [str(1005 + i) for i in range(5)])
        self.assertEqual(parent.accounts, [])
