"""
The load-test agent (L{warden.ops.loadtest.agent.SipAgent}) against a real
``twistd warden`` on 127.0.0.1: digest registration, a call between two of its
own accounts with RTP both ways through Warden's relay, wrong passwords.
"""

from __future__ import annotations

from tests.integration.harness import IntegrationTestCase, provision, real_reactor
from warden.ops.loadtest.agent import SipAgent
from warden.ops.loadtest.results import Account


class AgentTests(IntegrationTestCase):
    """SipAgent operations against a real Warden."""

    async def agent(self, port: int, transport: str = "udp") -> SipAgent:
        """A started agent for Warden on ``port``, stopped when the test ends."""
        agent = SipAgent(real_reactor(), "127.0.0.1", port, transport=transport)
        await agent.start()
        self.addCleanup(agent.stop)
        return agent

    async def test_register_call_with_rtp_unregister(self) -> None:
        """Register two accounts, call one from the other with RTP, hang up, unregister."""
        warden = await self.start_warden()
        users = await provision(warden.config_path, 2, first=3000)
        alice, bob = (Account(n, users.passwords[n]) for n in users.numbers)
        agent = await self.agent(warden.port)
        for account in (alice, bob):
            registered = await agent.register(account, expires=300)
            self.assertTrue(registered.ok, registered)
            self.assertEqual(registered.statuses, (401, 200))
            self.assertIsNotNone(registered.auth_duration)
            self.assertGreaterEqual(registered.duration, registered.auth_duration)
        self.assertEqual(warden.count_bindings(), 2)
        result = await agent.place_call(alice, bob.user, hold=1.0, rtp=True)
        self.assertTrue(result.ok, result)
        self.assertEqual(result.statuses, (407, 200))
        assert result.setup_time is not None and result.post_dial_delay is not None
        self.assertLessEqual(result.post_dial_delay, result.setup_time)
        self.assertIsNotNone(result.bye_time)
        assert result.media is not None
        for direction in (result.media.to_caller, result.media.to_callee):
            self.assertGreater(direction.sent, 30, result.media)
            self.assertEqual(direction.lost, 0, result.media)
            assert direction.latency_ms_mean is not None
            self.assertLess(direction.latency_ms_mean, 200.0)
        for account in (alice, bob):
            removed = await agent.unregister(account)
            self.assertTrue(removed.ok, removed)

    async def test_interval_too_brief(self) -> None:
        """Asked for 30 s, Warden answers 423 Min-Expires 60: registered again for 60 s."""
        warden = await self.start_warden()
        users = await provision(warden.config_path, 1, first=3300)
        agent = await self.agent(warden.port)
        result = await agent.register(
            Account(users.numbers[0], users.passwords[users.numbers[0]]), 30
        )
        self.assertTrue(result.ok, result)
        self.assertEqual(result.statuses, (401, 423, 401, 200))
        self.assertEqual(result.expires, 60)

    async def test_wrong_password_is_refused(self) -> None:
        """A wrong password ends in Warden's 403, reported as the cause."""
        warden = await self.start_warden()
        users = await provision(warden.config_path, 1, first=3100)
        agent = await self.agent(warden.port)
        result = await agent.register(Account(users.numbers[0], "not-the-password"))
        self.assertFalse(result.ok)
        self.assertEqual(result.statuses, (401, 403))
        self.assertEqual(result.cause, "403")

    async def test_tcp_register_and_call(self) -> None:
        """The same over one TCP connection: Warden reaches the callee on it."""
        warden = await self.start_warden()
        users = await provision(warden.config_path, 2, first=3200)
        alice, bob = (Account(n, users.passwords[n]) for n in users.numbers)
        agent = await self.agent(warden.port, transport="tcp")
        for account in (alice, bob):
            self.assertTrue((await agent.register(account)).ok)
        result = await agent.place_call(alice, bob.user, hold=0.2)
        self.assertTrue(result.ok, result)

    async def test_probe_unreachable(self) -> None:
        """OPTIONS to a port nobody listens on gives None within the timeout."""
        from tests.integration.harness import free_port

        agent = await self.agent(free_port())
        self.assertIsNone(await agent.probe(timeout=0.5))
