"""
Warden's shared state behind Redis Sentinel (``[state] url =
"redis+sentinel://..."``), end to end: a real ``twistd warden``, a Redis
primary and replica, and three Sentinels on the loopback
(L{tests.integration.ha_sentinel}). The primary is SIGKILLed while a phone
registers every 0.1 s; Sentinel promotes the replica and Warden finds it by
itself. ``bench.ha --scenario redis-sentinel`` measures the same run.
"""

from __future__ import annotations

from tests.integration.ha_sentinel import sentinel_failover
from tests.integration.harness import IntegrationTestCase, require_binary


class SentinelFailoverTests(IntegrationTestCase):
    """Warden follows Sentinel to the promoted replica."""

    timeout = 60

    async def test_registrations_resume_after_primary_killed(self) -> None:
        """
        Before the kill every REGISTER succeeds; after it Sentinel names the
        replica as master, REGISTER succeeds again within 10 s of the kill and
        then keeps succeeding (no failure in the last seconds of the run), the
        failures in between are 503s or timeouts, and the phone's binding is in
        the new master. Warden is still running.
        """
        require_binary(self, "redis-server", "redis-server")
        outcome = await sentinel_failover(self.workdir(), duration_after=12.0)
        self.assertTrue(outcome["registered_before"], outcome)
        self.assertIsNotNone(outcome["promoted_s"], outcome)
        self.assertIsNotNone(outcome["first_success_s"], outcome)
        self.assertLess(outcome["first_success_s"], 10.0, outcome)
        self.assertIsNotNone(outcome["recovery_s"], outcome)
        self.assertLess(outcome["recovery_s"], 10.0, outcome)
        self.assertLessEqual(set(outcome["failures"]), {"503", "timeout"}, outcome)
        self.assertTrue(outcome["bound_in_new_master"], outcome)
        self.assertTrue(outcome["warden_running"], outcome)
