"""
warden.sip.service: the SIP service is built whole, a cluster member or not,
with its final collaborators (nothing is rewired after construction).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from warden.config import parse_config_text
from warden.plugins.sip import sip_settings
from warden.sip.service import ClusterLink, SipService
from warden.testing.counters import MemoryAuthFailureCounter
from warden.testing.memory import MemoryDirectory, MemoryLocationService


def build(cluster: ClusterLink | None) -> SipService:
    settings = sip_settings(parse_config_text('[sip]\nnat = "never"\nserver_header = "X"\n'))
    return SipService(
        MemoryReactorClock(),
        settings,
        MemoryDirectory(),
        MemoryLocationService(),
        lambda host: False,
        cluster=cluster,
    )


class ConstructionTests(SynchronousTestCase):
    """What the constructor decides once."""

    def test_single_node(self) -> None:
        """Alone: messages go straight to the transactions; no routing through nodes."""
        sip = build(None)
        self.assertEqual(sip.hub.receiver, sip.transactions.receive)
        self.assertIsNone(sip.addressing.hop)
        self.assertIsNone(sip.hub.choose_flow)
        self.assertIsNone(sip.throttle.shared)
        self.assertEqual((sip.hop.nat, sip.hop.server_header), ("never", "X"))

    def test_cluster_member(self) -> None:
        """
        With a cluster link: the hop receives every message, calls reach other
        nodes' phones through it, large requests to nodes may take TCP,
        failures count cluster-wide, and the hop refreshes the live nodes.
        """
        failures = MemoryAuthFailureCounter(MemoryReactorClock())
        link = ClusterLink(
            auth_failures=failures,
            connector=MemoryReactorClock(),
            path_mtu=0,
            local_host="127.0.0.1",
            live_nodes=lambda: defer.succeed({"b": "127.0.0.2:5070"}),
        )
        sip = build(link)
        self.assertEqual(sip.hub.receiver, sip.hop.receive)
        self.assertIs(sip.addressing.hop, sip.hop)
        self.assertIsNotNone(sip.hub.choose_flow)
        self.assertIs(sip.throttle.shared, failures)
        assert sip.hop.refresh_nodes is not None
        self.successResultOf(sip.hop.refresh_nodes())
        self.assertEqual(sip.hop.nodes, {"b": ("127.0.0.2", 5070)})
