"""
Call routing (L{warden.interfaces.IRouter}): from a dialled number to the contacts to ring.

The built-in router knows extensions: an extension's number reaches every
current, reachable binding of that extension (forked in parallel by the call
controller). Trunks and emergency routes will be further ``IRouter``
implementations consulted in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from warden.interfaces import IDirectory, ILocationService, IRouter
from warden.model import Binding, Extension, Route


@implementer(IRouter)
class ExtensionRouter:
    """
    Routes extension numbers to their bindings.

    Args:
        clock: for binding expiry.
        directory: the extensions.
        location: their bindings.
        is_reachable: whether a binding may be rung (qualify marks some as not).
        prepare: awaited with the bindings to ring before they are returned (a
            cluster node makes sure it knows the nodes holding them:
            L{warden.sip.hop.NodeHop.holders_known}).
    """

    def __init__(
        self,
        clock: IReactorTime,
        directory: IDirectory,
        location: ILocationService,
        is_reachable: Callable[[Binding], bool] | None = None,
        prepare: Callable[[Sequence[Binding]], Deferred[None]] | None = None,
    ) -> None:
        self._clock = clock
        self._directory = directory
        self._location = location
        self._is_reachable = is_reachable
        self._prepare = prepare

    def route(self, dialled: str, caller: Extension) -> Deferred[Route]:
        """Extension number -> its reachable bindings; 404 / 480 otherwise."""
        return Deferred.fromCoroutine(self._route(dialled))

    async def _route(self, dialled: str) -> Route:
        extension = await self._directory.get_extension(dialled)
        if extension is None or not extension.enabled:
            return Route(404, "Not Found")
        bindings = await self._location.bindings_for(dialled, self._clock.seconds())
        if self._is_reachable is not None:
            bindings = [b for b in bindings if self._is_reachable(b)]
        if not bindings:
            return Route(480, "Temporarily Unavailable", extension)
        ordered = tuple(sorted(bindings, key=lambda b: -b.q))
        if self._prepare is not None:
            await self._prepare(ordered)
        return Route(0, "", extension, ordered)
