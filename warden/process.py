"""
The process around the reactor: ending ``twistd`` with an exit status.

``twistd`` exits 0 after ``reactor.stop()`` (or kills itself with the signal
that stopped it), so a start-up failure or a verdict that must reach systemd or
a CI pipeline as a status goes through L{process_exit}.
"""

from __future__ import annotations

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
