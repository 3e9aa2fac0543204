"""An in-memory L{ICallFeatureStore}, passing the same conformance suite as SQL."""

from __future__ import annotations

import builtins

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.interfaces import ICallFeatureStore
from warden.model.features import CallFeatures


@implementer(ICallFeatureStore)
class MemoryCallFeatureStore:
    """L{ICallFeatureStore} in a dictionary (only extensions with a feature set)."""

    def __init__(self) -> None:
        self.features: dict[str, CallFeatures] = {}

    def get_features(self, number: str) -> Deferred[CallFeatures]:
        """See L{ICallFeatureStore.get_features}."""
        return defer.succeed(self.features.get(number, CallFeatures(number)))

    def set_features(self, features: CallFeatures) -> Deferred[None]:
        """See L{ICallFeatureStore.set_features}."""
        if features.is_default:
            self.features.pop(features.number, None)
        else:
            self.features[features.number] = features
        return defer.succeed(None)

    def remove_features(self, number: str) -> Deferred[bool]:
        """See L{ICallFeatureStore.remove_features}."""
        return defer.succeed(self.features.pop(number, None) is not None)

    def list_features(self) -> Deferred[builtins.list[CallFeatures]]:
        """See L{ICallFeatureStore.list_features}."""
        return defer.succeed([self.features[k] for k in sorted(self.features)])
