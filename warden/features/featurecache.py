"""
A short-lived cache in front of the call-feature store: every routed call
reads the dialled extension's features, and most calls go to few extensions,
so a read is served from memory for ``ttl`` seconds. A change made through
this node is seen at once; one made on another node of a cluster within
``ttl`` seconds (ADR 0023).
"""

from __future__ import annotations

import builtins

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from warden.interfaces import ICallFeatureStore
from warden.model.features import CallFeatures

__all__ = ["CachedCallFeatures"]


@implementer(ICallFeatureStore)
class CachedCallFeatures:
    """
    L{ICallFeatureStore} over ``store``, reads cached for ``ttl`` seconds.

    Args:
        store: the durable store.
        clock: time source.
        ttl: seconds a read stays valid.
        max_entries: cached numbers at most (the cache is emptied when full).
    """

    def __init__(
        self,
        store: ICallFeatureStore,
        clock: IReactorTime,
        ttl: float = 2.0,
        max_entries: int = 10000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, CallFeatures]] = {}
        # Changes made here: a read started before one is not cached.
        self._changes = 0

    def _keep(self, features: CallFeatures, read_at: float, changes: int) -> CallFeatures:
        if changes == self._changes:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[features.number] = (read_at + self.ttl, features)
        return features

    def get_features(self, number: str) -> Deferred[CallFeatures]:
        """See L{ICallFeatureStore.get_features}."""
        now = self.clock.seconds()
        cached = self._cache.get(number)
        if cached is not None and cached[0] > now:
            return succeed(cached[1])
        return self.store.get_features(number).addCallback(self._keep, now, self._changes)

    def _changed(self, number: str) -> None:
        self._changes += 1
        self._cache.pop(number, None)

    def set_features(self, features: CallFeatures) -> Deferred[None]:
        """See L{ICallFeatureStore.set_features}."""
        self._changed(features.number)
        return self.store.set_features(features)

    def remove_features(self, number: str) -> Deferred[bool]:
        """See L{ICallFeatureStore.remove_features}."""
        self._changed(number)
        return self.store.remove_features(number)

    def list_features(self) -> Deferred[builtins.list[CallFeatures]]:
        """See L{ICallFeatureStore.list_features}."""
        return self.store.list_features()
