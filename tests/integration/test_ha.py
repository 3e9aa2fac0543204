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

These check behaviour with generous bounds; ``bench.ha`` measures the failover
times (docs/PERFORMANCE.md). Root is needed (namespaces): without it the tests
skip, except under ``CI=true``.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from tests.integration.ha_cluster import (
    VIP,
    HaSite,
    monotonic,
    register_until,
    require_tools,
    wait_for,
)
from tests.integration.harness import IntegrationTestCase
from tests.integration.netns import require_root


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
        self.site.create(["a", "b"])

    tools: tuple[str, ...] = ()


class ActivePassiveTests(HaTestCase):
    """keepalived moves the virtual IP to the standby when the active Warden dies."""

    tools = ("keepalived", "curl")

    async def test_phone_reregisters_through_vip_after_failover(self) -> None:
        """
        A phone registered through the virtual IP (held by node a, priority 150)
        re-registers through it within 60 s of a's Warden being killed; node b
        then holds the address, and a binding query through the address lists
        the phone's contact (the binding lives in the shared Redis).
        """
        site = self.site
        a = await site.start_node("a", interface=VIP)
        b = await site.start_node("b", interface=VIP)
        self._wardens.extend([a, b])
        users = await site.provision(1)
        site.start_keepalived("a", 150)
        site.start_keepalived("b", 100)
        self.assertTrue(await wait_for(lambda: site.holder() == "a", 30), site.holder())

        phone = await site.phone((VIP, 5060))
        self.addCleanup(lambda: Deferred.fromCoroutine(phone.close()))
        user = users.numbers[0]
        password = users.passwords[user]
        first = await register_until(phone, user, password, monotonic() + 10)
        self.assertIsNotNone(first)

        await a.kill()
        again = await register_until(phone, user, password, monotonic() + 60)
        self.assertIsNotNone(again, "no REGISTER through the virtual IP succeeded")
        self.assertEqual(site.holder(), "b")
        query = await phone.register(user, password, contact=None)
        self.assertEqual(query.status, 200)
        contacts = ",".join(query.get_all("Contact"))
        self.assertIn(f"{phone.local_port}", contacts)
