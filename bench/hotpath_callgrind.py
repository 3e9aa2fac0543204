"""
The server work of one round of ``bench/hotpath.py``, for ``valgrind --tool=callgrind``:
collection is on only while the server handles the datagrams of each phase.

Run by ``bench/compare.py`` under valgrind as::

    valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file=OUT \\
        python bench/hotpath_callgrind.py TOGGLE_LIBRARY CHECKOUT USERS

with ``PYTHONPATH=CHECKOUT``: the ``Stack``, datagrams and client side come from
``CHECKOUT/bench/hotpath.py``, so each checkout is measured with its own benchmark.
``TOGGLE_LIBRARY`` is a shared library (built by ``bench/compare.py`` from
``valgrind/callgrind.h``) whose ``warden_callgrind_toggle`` turns collection on and
off and whose ``warden_callgrind_dump`` writes the counts so far to a dump file of
their own (``OUT.1`` for phase 1, ``OUT.2`` for phase 2). One round on a stack of
its own warms the code up first; the measured round runs on a fresh stack, as each
round of ``bench/hotpath.py`` does.

Prints one JSON object: the rest of the machine's load over each phase
(``other_cpu_pct``, ``steal_pct``; L{bench.machine}), recorded only: instruction
counts do not depend on it, so each phase and the whole (``valid``) stay valid.
"""

from __future__ import annotations

import ctypes
import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# bench.machine from this checkout when the measured one (PYTHONPATH) has none.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.append(ROOT)

from bench.machine import MachineMeter  # noqa: E402


def measured(
    toggle: Callable[[], object], receive: Callable[[bytes, Any], object], datagrams: list[Any]
) -> dict[str, Any]:
    """
    Deliver ``datagrams`` with callgrind collecting; the rest of the machine's
    load meanwhile (recorded, never making the phase invalid).
    """
    meter = MachineMeter(load_independent=True)
    toggle()
    for data, addr in datagrams:
        receive(data, addr)
    toggle()
    return meter.load()


def main(argv: list[str]) -> None:
    """Warm up, then one measured round; phase 1 and phase 2 each dumped."""
    library, checkout, users = argv[0], argv[1], int(argv[2])
    sys.path.insert(0, f"{checkout}/bench")
    import hotpath  # the checkout's own benchmark, found through the path above

    toggles = ctypes.CDLL(library)
    toggle = toggles.warden_callgrind_toggle
    dump = toggles.warden_callgrind_dump
    dump.argtypes = [ctypes.c_char_p]

    hotpath.run_round(hotpath.Stack(users), users, 0)
    stack = hotpath.Stack(users)
    gc.collect()
    receive = stack.udp.datagramReceived
    transport = stack.transport
    phase1 = hotpath.first_round(users, 1)
    transport.keep, transport.written = True, []
    load1 = measured(toggle, receive, phase1)
    dump(b"phase1")
    challenges, transport.written = transport.written, []
    assert len(challenges) == users, len(challenges)
    phase2 = hotpath.answer(users, 1, challenges)
    load2 = measured(toggle, receive, phase2)
    dump(b"phase2")
    oks = transport.written
    assert len(oks) == users and all(p.startswith(b"SIP/2.0 200 ") for p in oks), oks[:1]
    document = {"users": users, "phase1": load1, "phase2": load2}
    print(json.dumps({**document, "valid": load1["valid"] and load2["valid"]}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
