"""
Warden that cannot start ends with exit status 1: a store it cannot use (here a
schema newer than the code, as after a rollback) is one critical log line
without a traceback; an unexpected error is logged with its traceback.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from warden.errors import StoreError
from warden.server import WardenService

NEWER = "the database has schema version 0099, newer than this Warden knows (up to 0006)"


class StartFailureTests(SynchronousTestCase):
    """What a failed start-up says and how the process ends."""

    def start(self, error: Exception) -> tuple[list[int], list[dict[str, Any]]]:
        """Start a WardenService whose migration fails with ``error``; (exits, log events)."""
        exits: list[int] = []
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        unused: Any = None
        root = WardenService(
            unused, unused, unused, MemoryReactorClock(), unused, unused, unused, "node1",
            migrate=lambda: defer.fail(error), exit=exits.append,
        )  # fmt: skip
        root.startService()
        return exits, events

    def test_store_error_is_one_line(self) -> None:
        """A newer schema: status 1, one critical line naming it, no traceback."""
        exits, events = self.start(StoreError(NEWER))
        self.assertEqual(exits, [1])
        lines = [e for e in events if "could not start" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["log_level"].name, "critical")
        self.assertEqual(lines[0]["error"], NEWER)
        self.assertNotIn("log_failure", lines[0])
        self.assertEqual(self.flushLoggedErrors(StoreError), [])

    def test_unexpected_error_keeps_its_traceback(self) -> None:
        """A bug: status 1 too, and the failure is logged with its traceback."""
        exits, _ = self.start(RuntimeError("bug"))
        self.assertEqual(exits, [1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
