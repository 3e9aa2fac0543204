"""
Warden with its shared state in Redis (``[state] url``), end to end: a real
``twistd warden`` and the throwaway ``redis-server``. Registrations land in
Redis with the node that took them; while Redis is down, REGISTER is answered
503 with Retry-After within the command timeout (never a hang), and service
resumes by itself once Redis is back.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import task

from tests.integration.clients import LOCALHOST, poll, real_reactor
from tests.integration.harness import (
    IntegrationTestCase,
    WardenFailed,
    WardenProcess,
    provision,
    user_password,
)
from warden.store.redis import RedisLocationService, connect_state
from warden.testing import servers


class RedisStateTests(IntegrationTestCase):
    """A Warden node keeps bindings in Redis and survives Redis going away."""

    async def start_node(self, cluster: str, node_id: str = "a") -> WardenProcess:
        server = servers.redis()
        return await self.start_warden(
            {
                "state": {"url": server.url, "timeout": 0.3, "heartbeat_interval": 0.5},
                "cluster": {"name": cluster, "node_id": node_id},
                "server": {"node_id": ""},
            }
        )

    def redis_location(self, cluster: str) -> RedisLocationService:
        state = connect_state(servers.redis().url, real_reactor(), cluster, 5.0)
        self.addCleanup(state.close)
        return RedisLocationService(state)

    async def register(self, warden: WardenProcess, number: str) -> Any:
        client = await self.sip_client(warden)
        contact = f"<sip:{number}@{LOCALHOST}:{client.local_port}>"
        return await client.register(number, user_password(number), contact=contact, timeout=5.0)

    async def test_binding_in_redis_with_node(self) -> None:
        """A REGISTER through the node is a binding in Redis recording node and flow."""
        cluster = uuid.uuid4().hex
        warden = await self.start_node(cluster, "node-a")
        users = await provision(warden.config_path, 1)
        number = users.numbers[0]
        response = await self.register(warden, number)
        self.assertEqual(response.status, 200)
        bindings = await self.redis_location(cluster).bindings_for(number, 0.0)
        self.assertEqual(len(bindings), 1)
        self.assertEqual(bindings[0].node_id, "node-a")
        self.assertTrue(bindings[0].received.startswith(f"udp:{LOCALHOST}:"), bindings[0])

    async def test_redis_down_then_back(self) -> None:
        """
        With Redis stopped, an authenticated REGISTER gets 503 Service Unavailable
        with Retry-After within a second (timeout 0.3 s); after Redis restarts,
        REGISTER succeeds again without restarting Warden.
        """
        cluster = uuid.uuid4().hex
        warden = await self.start_node(cluster)
        users = await provision(warden.config_path, 1)
        number = users.numbers[0]
        self.assertEqual((await self.register(warden, number)).status, 200)
        server = servers.redis()
        server.stop()
        try:
            clock = real_reactor()
            started = clock.seconds()
            response = await self.register(warden, number)
            elapsed = clock.seconds() - started
            self.assertEqual(response.status, 503, response)
            self.assertTrue((response.get("Retry-After") or "").isdigit(), response)
            self.assertLess(elapsed, 2.0)
        finally:
            server.start()
        for _ in range(50):
            response = await self.register(warden, number)
            if response.status == 200:
                break
            await task.deferLater(real_reactor(), 0.2, lambda: None)
        self.assertEqual(response.status, 200, response)
        self.assertEqual(len(await self.redis_location(cluster).bindings_for(number, 0.0)), 1)
        self.assertTrue(warden.running)

    async def test_unreachable_redis_stops_start_up(self) -> None:
        """A [state] url where no Redis answers stops Warden during start-up (within
        the command timeout), and the log says why."""
        port = servers.free_tcp_port()
        warden = WardenProcess(
            self.workdir(), settings={"state": {"url": f"redis://127.0.0.1:{port}/0"}}
        )
        self._wardens.append(warden)
        self.addCleanup(warden.cleanup)
        try:
            await warden.start()
        except WardenFailed:
            pass  # it may exit before it answers OPTIONS
        self.assertTrue(await poll(lambda: not warden.running, 15), warden.log_tail())
        self.assertIn("Warden could not start", warden.log_text())
        self.assertIn("Redis count: no answer within 1 s", warden.log_text())
