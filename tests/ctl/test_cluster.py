"""
``wardenctl registrations`` and ``wardenctl nodes`` against the throwaway Redis:
bindings with the node and flow they arrived on (a dead node marked), the live
nodes, and a clear error without ``[state] url``.
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

from twisted.trial.unittest import TestCase

from warden.cluster import NodeService
from warden.config import parse_config_text
from warden.ctl.main import build_parser, run_command
from warden.model import Binding
from warden.store.redis import RedisLocationService, connect_state
from warden.testing import MemoryDirectory, servers


def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


class ClusterCommandTests(TestCase):
    """The commands read what the nodes wrote to Redis."""

    def setUp(self) -> None:
        self.cluster = uuid.uuid4().hex
        self.config = parse_config_text(
            f'[state]\nurl = "{servers.redis().url}"\n[cluster]\nname = "{self.cluster}"\n'
        )
        self.state = connect_state(servers.redis().url, reactor(), self.cluster, 5.0)
        self.addCleanup(self.state.close)

    async def ctl(self, *argv: str, config: Any = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        args = build_parser().parse_args(list(argv))
        code = await run_command(
            args, config or self.config, MemoryDirectory(), reactor(), out, err
        )
        return code, out.getvalue(), err.getvalue()

    async def populate(self) -> float:
        now: float = reactor().seconds()
        node = NodeService(self.state, "a", "127.0.0.2:5060", 30.0)
        await node.beat()
        location = RedisLocationService(self.state)
        for aor, key, node_id, flow in [
            ("100", "p1", "a", "udp:192.0.2.1:5060"),
            ("200", "p2", "b", "tcp:192.0.2.2:40000"),
        ]:
            binding = Binding(aor, f"sip:{key}@192.0.2.9", key, now + 600.5, received=flow,
                              node_id=node_id)  # fmt: skip
            await location.apply(aor, [binding], [])
        return now

    async def test_registrations(self) -> None:
        """Every binding with its flow and node; a node without heartbeat is (down)."""
        await self.populate()
        code, out, err = await self.ctl("registrations")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["EXTENSION", "CONTACT", "FLOW", "NODE", "EXPIRES"])
        self.assertEqual(
            lines[1].split()[:4], ["100", "sip:p1@192.0.2.9", "udp:192.0.2.1:5060", "a"]
        )
        self.assertEqual(lines[2].split()[3:5], ["b", "(down)"])
        code, out, _ = await self.ctl("registrations", "200", "--json")
        listed = json.loads(out)
        self.assertEqual([(b["aor"], b["node_id"], b["node_alive"]) for b in listed],
                         [("200", "b", False)])  # fmt: skip
        self.assertIn(listed[0]["expires_in"], (599, 600))

    async def test_nodes(self) -> None:
        """nodes lists the live nodes with their SIP address."""
        await self.populate()
        code, out, _ = await self.ctl("nodes")
        self.assertEqual(code, 0)
        self.assertEqual(out.splitlines()[1].split()[:2], ["a", "127.0.0.2:5060"])
        _, out, _ = await self.ctl("nodes", "--json")
        self.assertEqual([n["node_id"] for n in json.loads(out)], ["a"])

    async def test_empty(self) -> None:
        """Nothing registered, no node: both commands say so."""
        self.assertEqual(await self.ctl("registrations"), (0, "no registrations\n", ""))
        self.assertEqual(await self.ctl("nodes"), (0, "no live nodes\n", ""))

    async def test_without_state_url(self) -> None:
        """Without [state] url the commands fail with the reason."""
        code, out, err = await self.ctl("nodes", config=parse_config_text(""))
        self.assertEqual((code, out), (1, ""))
        self.assertIn("needs [state] url", err)
