"""
Run one trial test (or module) many times in a row, optionally while busy-loop
processes load the CPUs, and stop at the first failure: the check that a test
once seen flaking cannot flake any more.

    python -m bench.repeat_test --runs 20 --load 2 \\
        tests.ops.loadtest.test_run.LoadTestRunTests.test_sigint_hangs_up_unregisters_and_reports

Prints one progress line per run on stderr and a JSON summary on stdout (runs,
failures, seconds per run, the load average seen); exits 1 when any run failed.
Each load process is a bounded busy loop that ends with this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY_LOOP = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\n" + (
    "while time.monotonic() < end:\n    pass\n"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("test", help="a trial test name (module, class or method)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--load", type=int, default=0, help="busy-loop processes to run beside")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="bound on the whole run")
    args = parser.parse_args(argv)

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load = [
        subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(args.max_seconds)])
        for _ in range(args.load)
    ]
    results: list[dict[str, object]] = []
    started = time.monotonic()
    try:
        for run in range(1, args.runs + 1):
            if time.monotonic() - started > args.max_seconds:
                break
            began = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "twisted.trial", args.test],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=args.max_seconds,
            )
            seconds = round(time.monotonic() - began, 1)
            passed = proc.returncode == 0
            load1 = os.getloadavg()[0]
            results.append({"run": run, "passed": passed, "seconds": seconds, "load1": load1})
            print(
                f"run {run}/{args.runs}: {'PASS' if passed else 'FAIL'} in {seconds} s,"
                f" load {load1:.1f}",
                file=sys.stderr,
            )
            if not passed:
                print(proc.stdout[-4000:], file=sys.stderr)
                break
    finally:
        for p in load:
            p.kill()
            p.wait()
    failures = sum(1 for r in results if not r["passed"])
    summary = {
        "test": args.test,
        "runs": len(results),
        "failures": failures,
        "load_processes": args.load,
        "cpus": os.cpu_count(),
        "results": results,
    }
    print(json.dumps(summary, indent=2))
    return 1 if failures or len(results) < args.runs else 0


if __name__ == "__main__":
    raise SystemExit(main())
