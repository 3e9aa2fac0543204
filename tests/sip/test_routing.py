"""Tests for warden.sip.routing: an extension number to the bindings to ring."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.store.conformance import extension
from warden.model import Binding, Route
from warden.sip.routing import ExtensionRouter
from warden.testing import MemoryDirectory, MemoryLocationService


def _binding(key: str, q: float = 1.0) -> Binding:
    return Binding("100", f"sip:{key}@192.0.2.1", key, 9e9, q=q)


class ExtensionRouterTests(SynchronousTestCase):
    """The built-in router of extension numbers."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.location = MemoryLocationService()
        self.successResultOf(self.location.apply("100", [_binding("a", 0.5), _binding("b")], []))
        self.directory = MemoryDirectory([extension("100")])

    def test_prepare_awaited_before_the_route(self) -> None:
        """The route waits for ``prepare`` (a cluster node fetching the nodes that
        hold the bindings), which is given the bindings in ringing order."""
        prepared: list[tuple[Sequence[Binding], Deferred[None]]] = []

        def prepare(bindings: Sequence[Binding]) -> Deferred[None]:
            prepared.append((bindings, Deferred()))
            return prepared[-1][1]

        router = ExtensionRouter(self.clock, self.directory, self.location, None, prepare)
        routed = router.route("100", extension("200"))
        self.assertNoResult(routed)
        ((bindings, waiting),) = prepared
        self.assertEqual([b.key for b in bindings], ["b", "a"])
        waiting.callback(None)
        route: Route = self.successResultOf(routed)
        self.assertEqual((route.status, [b.key for b in route.bindings]), (0, ["b", "a"]))

    def test_nothing_to_prepare(self) -> None:
        """Unknown numbers and extensions without a binding are not prepared."""
        asked: list[Sequence[Binding]] = []

        def prepare(bindings: Sequence[Binding]) -> Deferred[None]:
            asked.append(bindings)
            return Deferred()

        self.successResultOf(self.directory.add_extension(extension("101")))
        router = ExtensionRouter(self.clock, self.directory, self.location, None, prepare)
        self.assertEqual(self.successResultOf(router.route("999", extension("200"))).status, 404)
        self.assertEqual(self.successResultOf(router.route("101", extension("200"))).status, 480)
        self.assertEqual(asked, [])
