"""
Call routing (``IRouter``): from a dialled number to the contacts to ring.

The built-in router knows extensions: an extension's number reaches every
current, reachable binding of that extension (forked in parallel by the call
controller). Trunks and emergency routes will be further ``IRouter``
implementations consulted in order.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from warden.interfaces import IDirectory, ILocationService
from warden.model import Binding, Extension


@attrs.frozen
class Route:
    """
    Where a call goes.

    Attributes:
        status: 0 when ``bindings`` should be rung; otherwise the SIP status to
            answer the caller with (404 unknown number, 480 not registered).
        reason: the reason phrase for ``status``.
        extension: the extension reached, when the number is one.
        bindings: the contacts to fork to, best first.
    """

    status: int
    reason: str = ""
    extension: Extension | None = None
    bindings: tuple[Binding, ...] = ()


class IRouter(Interface):
    """Decides where a dialled number goes."""

    def route(dialled: str, caller: Extension) -> defer.Deferred[Route]:
        """Fire with the Route for ``dialled`` when ``caller`` dials it."""


@implementer(IRouter)
class ExtensionRouter:
    """
    Routes extension numbers to their bindings.

    Args:
        clock: for binding expiry.
        directory: the extensions.
        location: their bindings.
        is_reachable: whether a binding may be rung (qualify marks some as not).
    """

    def __init__(
        self,
        clock: IReactorTime,
        directory: IDirectory,
        location: ILocationService,
        is_reachable: Callable[[Binding], bool] | None = None,
    ) -> None:
        self._clock = clock
        self._directory = directory
        self._location = location
        self._is_reachable = is_reachable

    @defer.inlineCallbacks
    def route(self, dialled: str, caller: Extension):  # type: ignore[no-untyped-def]
        """Extension number -> its reachable bindings; 404 / 480 otherwise."""
        extension = yield self._directory.get_extension(dialled)
        if extension is None or not extension.enabled:
            return Route(404, "Not Found")
        bindings = yield self._location.bindings_for(dialled, self._clock.seconds())
        if self._is_reachable is not None:
            bindings = [b for b in bindings if self._is_reachable(b)]
        if not bindings:
            return Route(480, "Temporarily Unavailable", extension)
        ordered = tuple(sorted(bindings, key=lambda b: -b.q))
        return Route(0, "", extension, ordered)
