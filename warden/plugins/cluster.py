"""
Cluster state as a plugin: with ``[state] url`` set, bindings, live calls and
call counters live in Redis, and this node keeps a heartbeat there
(L{warden.cluster}).
"""

from __future__ import annotations

from types import MappingProxyType

from warden.cluster import shared_state
from warden.config import ClusterConfig, StateConfig
from warden.plugin import BuildContext, BuiltinPlugin
from warden.store.live import CoalescingLiveCalls


class ClusterPlugin(BuiltinPlugin):
    """``[state]`` and ``[cluster]``: several nodes serving one PBX."""

    name = "cluster"
    description = "cluster nodes sharing bindings and live calls in Redis ([state] url)"
    provides = ("location", "live", "cluster")
    section_classes = MappingProxyType({"state": StateConfig, "cluster": ClusterConfig})

    def make(self, context: BuildContext) -> None:
        """
        With ``[state] url``: provide the Redis stores as ``location`` and
        ``live`` and the shared state as ``cluster`` (the SIP plugin joins it);
        without it, nothing (the database's stores serve).
        """
        shared = shared_state(context.config, context.reactor)
        if shared is None:
            return
        context.provide("location", shared.location)
        # A batch every 0.5 s, not a write per change.
        context.provide("live", CoalescingLiveCalls(shared.live, context.reactor))
        context.provide("cluster", shared)


plugin = ClusterPlugin()
