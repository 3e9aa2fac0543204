"""
Warden's instructions per call: the checkout's own ``bench.calls --mode cps`` with
``twistd warden`` under ``valgrind --tool=callgrind``.

Run by ``bench/compare.py`` as::

    python bench/calls_callgrind.py OUT SETTLE_SECONDS --mode cps --steps 1 ...

with ``PYTHONPATH=CHECKOUT`` and ``CHECKOUT`` as the working directory, so that
``bench.calls`` and its harness are the checkout's. Three things differ from a
plain ``python -m bench.calls`` run: Warden runs under callgrind with
instrumentation off (``--instr-atstart=no``; start-up, provisioning and the
callee's registration are not counted) and is given 180 s to start; the step's
CPU meter turns instrumentation on when the step starts (``callgrind_control``);
and once the step is over it waits ``SETTLE_SECONDS`` (long enough for the calls'
lingering transactions to end, 32 s with the default timers) and dumps the counts
to ``OUT.1``. So ``OUT.1`` holds every instruction Warden (every thread) executed
for the step's calls, plus its idle housekeeping over the step and the settling time.
Warden runs tens of times slower under callgrind: keep the rate low (a few calls per second).
The step records the rest of the machine's load as ``bench.calls`` measures it
(``other_cpu_pct``, ``steal_pct``), but the load does not make it invalid: instruction
counts do not depend on it (``load_independent`` in L{bench.machine}).
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from typing import Any

from twisted.internet import defer, task


def control(pid: int, option: str) -> None:
    """``callgrind_control OPTION PID`` (it waits until callgrind took the request)."""
    subprocess.run(
        ["callgrind_control", option, str(pid)], check=True, capture_output=True, timeout=120
    )


def main(argv: list[str]) -> None:
    """Patch the checkout's harness and meter, then run its ``bench.calls``."""
    out, settle, calls_argv = argv[0], float(argv[1]), argv[2:]
    import bench.calls as calls  # the checkout's: PYTHONPATH=CHECKOUT
    from tests.integration import harness

    harness.TWISTD = [  # type: ignore[misc]
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        *harness.TWISTD,
    ]  # fmt: skip
    start = harness.WardenProcess.start

    async def slow_start(self: Any, timeout: float = 15.0) -> None:
        await start(self, timeout=max(timeout, 180.0))

    harness.WardenProcess.start = slow_start  # type: ignore[method-assign]

    class InstrumentedMeter(calls.CpuMeter):
        """Instrumentation on for the step; the counts dumped once it settled."""

        def __init__(self, pids: dict[str, int]) -> None:
            control(pids["warden"], "--instr=on")
            super().__init__(pids)

        def percentages(self, reaped_as: str | None = None) -> dict[str, float]:
            result = super().percentages(reaped_as)
            time.sleep(settle)
            control(self.pids["warden"], "--dump=step")
            control(self.pids["warden"], "--instr=off")
            return result

    calls.CpuMeter = InstrumentedMeter  # type: ignore[misc]
    cps_valid = getattr(calls, "cps_valid", None)
    if cps_valid is not None:

        def load_independent(step: dict[str, Any], max_other_pct: float) -> bool:
            """Valid whatever the load: the SIPp processes' exits alone decide."""
            return bool(cps_valid(step, math.inf))

        calls.cps_valid = load_independent
    task.react(lambda reactor: defer.Deferred.fromCoroutine(calls.main(reactor, calls_argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
