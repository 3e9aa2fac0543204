"""
Warden that cannot start ends with exit status 1: a store it cannot use (here a
schema newer than the code, as after a rollback) is one critical log line
without a traceback; an unexpected error is logged with its traceback.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from warden.errors import StoreError
from warden.server import WardenService

NEWER = "the database has schema version 0099, newer than this Warden knows (up to 0006)"


class FailingStore:
    """A store whose preparation fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def prepare(self) -> Deferred[int]:
        """Fail."""
        return defer.fail(self.error)

    def close(self) -> Deferred[None]:
        """Nothing to close."""
        return defer.succeed(None)


class StartFailureTests(SynchronousTestCase):
    """What a failed start-up says and how the process ends."""

    def start(self, error: Exception) -> tuple[list[int], list[dict[str, Any]]]:
        """Start a WardenService whose store fails with ``error``; (exits, log events)."""
        exits: list[int] = []
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        root = WardenService(FailingStore(error), None, exit=exits.append)
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
