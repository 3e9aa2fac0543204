"""
The process around the reactor: ending ``twistd`` with an exit status, and
keeping the garbage collector's pauses short.

``twistd`` exits 0 after ``reactor.stop()`` (or kills itself with the signal
that stopped it), so a start-up failure or a verdict that must reach systemd or
a CI pipeline as a status goes through L{process_exit}.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import error


def process_exit(reactor: Any) -> Callable[[int], None]:
    """
    An ``exit`` for the real process: stop the reactor and, once it has shut down,
    end the process with status ``code``.
    """

    def exit(code: int) -> None:
        def finish() -> None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

        reactor.addSystemEventTrigger("after", "shutdown", finish)
        try:
            reactor.stop()
        except error.ReactorNotRunning:
            pass

    return exit


def calm_collector() -> None:
    """
    Keep the garbage collector from pausing the work to come (Warden's server,
    the media process and the load generator call it once started): what the
    process holds now (modules, configuration, users) lives as long as the
    process and is frozen out of the collector's scans, and the youngest
    generation is collected less often (each request or packet in flight is a
    few objects), so fewer of them are promoted to the oldest generation. The
    older generations keep their default ratios: cyclic garbage of ended calls
    is still collected promptly. Without it full collections scanned
    everything and paused the load generator for up to 150 ms and the media
    process for about 17 ms at a time.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
