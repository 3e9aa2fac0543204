"""The process around the reactor (warden.process)."""

from __future__ import annotations

import gc

from twisted.trial.unittest import SynchronousTestCase

from warden.process import calm_collector


class CalmCollectorTests(SynchronousTestCase):
    """calm_collector: what the process holds leaves the collector's scans."""

    def setUp(self) -> None:
        threshold = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *threshold)
        self.addCleanup(gc.unfreeze)

    def test_freezes_what_is_held(self) -> None:
        """Objects alive now are frozen; the youngest generation waits for 10,000."""
        held = [object() for _ in range(10)]
        gc.unfreeze()
        calm_collector()
        self.assertGreater(gc.get_freeze_count(), len(held))
        self.assertEqual(gc.get_threshold(), (10_000, 10, 10))

    def test_cycles_still_collected(self) -> None:
        """Garbage made after it is still collected: the collector is slowed, not off."""
        calm_collector()
        self.assertTrue(gc.isenabled())

        class Node:
            other: object = None

        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        self.assertGreaterEqual(gc.collect(), 2)
