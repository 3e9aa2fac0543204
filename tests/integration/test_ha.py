"""
High availability on a private network (L{tests.integration.ha_cluster}): two
Warden nodes in their own network namespaces share PostgreSQL and Redis.

- Active-passive: keepalived (``deploy/keepalived``) holds a VRRP virtual IP on
  the node whose Warden answers ``/readyz``. Killing that Warden moves the
  address; a phone registered through the virtual IP registers again through it
  (now served by the other node) and is still known.
- Active-active: Kamailio's dispatcher (``deploy/kamailio``) spreads requests
  over both nodes; killing one under ``warden-loadtest`` traffic costs only the
  calls it held, and calls succeed again through the other.
- Database: one node on a Patroni cluster (``deploy/patroni``) through HAProxy
  (``deploy/haproxy``); ``patronictl switchover`` under calls, or the
  primary's machine dying under calls, loses no call record.

These check behaviour with generous bounds; ``bench.ha`` measures the failover
times (docs/PERFORMANCE.md). Root is needed (namespaces): without it the tests
skip, except under ``CI=true``.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from tests.integration.ha_cluster import HaSite, active_active, active_passive, require_tools
from tests.integration.ha_patroni import database_switchover
from tests.integration.harness import IntegrationTestCase
from tests.integration.netns import LAN_ADDRESS, require_root
from warden.sip.message import new_tag


class HaTestCase(IntegrationTestCase):
    """A site of two nodes, created for the test and removed after it."""

    timeout = 120

    def setUp(self) -> None:
        """Root, ip, and the tools the test needs; the LAN with PostgreSQL and Redis."""
        super().setUp()
        require_root(self)
        require_tools(self, *self.tools)
        self.site = HaSite(self.workdir())
        self.addCleanup(lambda: Deferred.fromCoroutine(self.site.close()))
        self.site.create(list(self.labels), self.shared_servers)

    tools: tuple[str, ...] = ()
    labels: tuple[str, ...] = ("a", "b")
    shared_servers = True


class ActivePassiveTests(HaTestCase):
    """keepalived moves the virtual IP to the standby when the active Warden dies."""

    tools = ("keepalived", "curl")

    async def test_phone_reregisters_through_vip_after_failover(self) -> None:
        """
        A phone registered through the virtual IP (held by node a, priority 150)
        registers through it again within 60 s of a's Warden being killed; node
        b then holds the address, and a binding query through the address lists
        the phone's contact (the binding lives in the shared Redis).
        """
        outcome = await active_passive(self.site)
        self.assertEqual(outcome["holder_before"], "a", outcome)
        self.assertTrue(outcome["registered_before"], outcome)
        self.assertIsNotNone(outcome["failover_s"], outcome)
        self.assertEqual(outcome["holder_after"], "b", outcome)
        self.assertTrue(outcome["phone_bound"], outcome)


class ActiveActiveTests(HaTestCase):
    """Kamailio's dispatcher keeps calls flowing when one of two nodes dies."""

    tools = ("kamailio",)

    async def test_calls_continue_through_dispatcher_when_a_node_dies(self) -> None:
        """
        Under warden-loadtest calls through Kamailio, killing node a loses at
        most the calls in progress when it died (the concurrency limit), and
        within 15 s of the kill every REGISTER through Kamailio succeeds without
        waiting for the dead node (a probe registers every 0.1 s for 20 s).
        """
        outcome = await active_active(self.site, callers=20, calls=60, rate=6.0, hold=2.0)
        calls = outcome["calls"]
        self.assertEqual(calls.get("attempted"), 60, outcome)
        self.assertLessEqual(calls["failed"], 6 * 2 * 2 + 5, outcome)
        self.assertGreater(calls["succeeded"], 0, outcome)
        self.assertLess(outcome["recovery_s"], 15.0, outcome)

    async def test_dispatcher_is_no_open_relay(self) -> None:
        """
        An in-dialog request (with a To tag) without a Route, for a
        Request-URI that is not a Warden node, is refused by Kamailio with 403,
        not forwarded.
        """
        await self.site.start_node("a")
        await self.site.start_kamailio()
        phone = await self.site.phone((LAN_ADDRESS, 5060))
        self.addCleanup(lambda: Deferred.fromCoroutine(phone.close()))
        headers = [
            ("From", f"<sip:probe@{LAN_ADDRESS}>;tag=a1"),
            ("To", "<sip:victim@192.0.2.1>;tag=b2"),
            ("Call-ID", f"relay-{new_tag()}"),
            ("CSeq", "2 OPTIONS"),
        ]
        response = await phone.request("OPTIONS", "sip:victim@192.0.2.1:5060", headers)
        self.assertEqual(response.status, 403)


class DatabaseFailoverTests(HaTestCase):
    """Patroni moves the PostgreSQL primary under a Warden node taking calls."""

    tools = ("patroni", "patronictl", "etcd", "haproxy", "curl", "psql")
    labels = ("a", "db1", "db2")
    shared_servers = False

    async def test_no_call_record_lost_across_switchover(self) -> None:
        """
        With calls going on, ``patronictl switchover`` makes db2 the primary;
        Warden (through HAProxy) goes on, and every call the load test saw
        answered has its call record in the new primary within 60 s.
        """
        outcome = await database_switchover(self.site, calls=40, rate=4.0, hold=1.0)
        self.assertEqual(outcome["switchover_exit"], 0, outcome)
        self.assertEqual(outcome["primary_after"], "db2", outcome)
        self.assertTrue(outcome["node_running"], outcome)
        self.assertGreater(outcome["answered"], 0, outcome)
        self.assertEqual(outcome["call_records"], outcome["answered"], outcome)

    async def test_no_call_record_lost_across_unplanned_failover(self) -> None:
        """
        With calls going on, db1's machine dies (Patroni and PostgreSQL
        SIGKILLed, link cut); Patroni promotes db2 within 40 s (its ``ttl`` is
        20 s), Warden is still running, and every call the load test saw
        answered has its call record in db2 within 60 s of the promotion: the
        records of the outage come from the node's spool once it reconnects.
        """
        outcome = await database_switchover(
            self.site, calls=120, rate=4.0, hold=1.0, unplanned=True
        )
        self.assertEqual(outcome["switchover_exit"], 0, outcome)
        self.assertEqual(outcome["primary_after"], "db2", outcome)
        self.assertLess(outcome["switchover_s"], 40.0, outcome)
        self.assertTrue(outcome["node_running"], outcome)
        self.assertGreater(outcome["answered"], 0, outcome)
        self.assertEqual(outcome["call_records"], outcome["answered"], outcome)
        self.assertIsNotNone(outcome["records_s"], outcome)
