"""
Phones that pick a Warden node by DNS SRV (RFC 3263 §4.3): a local
authoritative DNS server publishes two nodes at priorities 10 and 20
(L{tests.integration.ha_srv}); the phone registers to the first, and when that
node dies, to the second after one target timeout. ``bench.ha --scenario
dns-srv`` measures the same run.
"""

from __future__ import annotations

from tests.integration.ha_srv import srv_failover
from tests.integration.harness import IntegrationTestCase, require_binary


class SrvFailoverTests(IntegrationTestCase):
    """The SRV-following phone moves to the priority-20 node when the first dies."""

    timeout = 60

    async def test_phone_moves_to_next_srv_target(self) -> None:
        """
        Before the kill every REGISTER goes to node a (priority 10) and
        succeeds; after it node b answers the phone's REGISTERs within one
        target timeout (2 s) plus 2 s, no REGISTER fails on every target,
        and the phone no longer reaches a.
        """
        require_binary(self, "redis-server", "redis-server")
        outcome = await srv_failover(self.workdir(), duration_after=6.0)
        self.assertTrue(outcome["registered_before"], outcome)
        self.assertEqual(outcome["before"], ["a"], outcome)
        self.assertIsNotNone(outcome["failover_s"], outcome)
        self.assertLess(outcome["failover_s"], outcome["target_timeout_s"] + 2.0, outcome)
        self.assertEqual(outcome["failed"], 0, outcome)
        self.assertEqual(outcome["after"], ["b"], outcome)
