"""
Run every Warden fuzz harness for a bounded time (CI's ``tox -e fuzz``).

Each harness runs in its own process for ``--seconds`` (default 40) under
libFuzzer; a crash stops that harness, leaves the input as
``<artifacts>/crash-*`` and makes this script exit 1 after the others ran. A
crash input becomes a regression test in ``tests/`` next to the parser it broke.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = ("sip_message", "sip_stack", "sip_headers", "sdp", "stream", "rtp")


def main() -> int:
    """Run the harnesses named (default: all); 1 when any of them found a crash."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=40, help="time per harness")
    parser.add_argument("--artifacts", default=str(HERE / "artifacts"), help="crash inputs")
    parser.add_argument("harness", nargs="*", help=f"any of {', '.join(HARNESSES)}")
    args = parser.parse_args()
    unknown = set(args.harness) - set(HARNESSES)
    if unknown:
        parser.error(f"no harness named {', '.join(sorted(unknown))}")
    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.harness or HARNESSES:
        print(f"== fuzz {name} for {args.seconds} s", flush=True)
        command = [
            sys.executable,
            str(HERE / f"{name}.py"),
            f"-max_total_time={args.seconds}",
            f"-artifact_prefix={artifacts}/{name}-",
            "-print_final_stats=1",
        ]
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"crashes found by: {', '.join(failed)} (inputs in {artifacts})", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
