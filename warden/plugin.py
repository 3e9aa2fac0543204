"""
The plugin mechanism: finding L{IWardenPlugin}s, choosing the enabled ones and
the order they are built in, and the context each one builds in.

Warden's own plugins live in L{warden.plugins} and L{warden.features}; a site's
live in any installed distribution's ``twisted/plugins/`` (Twisted's dropin
convention), so a feature is added without forking. All are found with
``twisted.plugin.getPlugins(IWardenPlugin, package)``. ``[plugins] enabled``
names those that run; a plugin is built after every plugin providing a part it
needs (L{enabled_plugins}), and the composition root
(L{warden.server.build_server}) calls each one's ``make`` once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from twisted.application.service import IService, IServiceCollection
from twisted.plugin import IPlugin, getPlugins
from zope.interface import implementer
from zope.interface.interface import InterfaceClass

from warden.config import parse_section
from warden.errors import ConfigError
from warden.interfaces import IWardenPlugin, IWardenReactor

if TYPE_CHECKING:
    from warden.config import WardenConfig
    from warden.rtp.endpoint import ListenUDP

__all__ = [
    "CORE_PARTS",
    "DEFAULT_PLUGINS",
    "BuildContext",
    "BuiltinPlugin",
    "discover",
    "enabled_plugins",
]

#: The plugins ``[plugins] enabled`` names when it is not set: everything
#: Warden did before plugins existed.
DEFAULT_PLUGINS = (
    "sip",
    "media",
    "cluster",
    "admin",
    "backup",
    "mfa",
    "e911",
    "e911notify",
    "callfeatures",
    "trunks",
    "stirshaken",
    "recording",
    "voicemail",
    "ivr",
)

#: Parts the composition root provides itself (a plugin may replace
#: ``location`` and ``live``, as the cluster plugin does with Redis).
CORE_PARTS = ("stores", "directory", "location", "records", "live")

T = TypeVar("T")


def _plugin_packages() -> list[object]:
    import twisted.plugins
    import warden.features
    import warden.plugins

    # Twisted computes ``twisted.plugins.__path__`` once, at its import: add the
    # ``twisted/plugins`` directories of sys.path entries added since.
    paths = twisted.plugins.__path__
    for entry in sys.path:
        candidate = os.path.join(os.path.abspath(entry or "."), "twisted", "plugins")
        if candidate not in paths and os.path.isdir(candidate):
            paths.append(candidate)
    return [warden.plugins, warden.features, twisted.plugins]


def discover() -> dict[str, IWardenPlugin]:
    """
    Every installed plugin by name: Warden's own, then third parties'.

    Raises:
        ConfigError: two plugins share a name.
    """
    found: dict[str, IWardenPlugin] = {}
    for package in _plugin_packages():
        for plugin in getPlugins(IWardenPlugin, package):  # type: ignore[arg-type]
            previous = found.get(plugin.name)
            if previous is not None and previous is not plugin:
                raise ConfigError(
                    "plugins",
                    f"two installed plugins are named {plugin.name!r}"
                    f" ({type(previous).__module__}, {type(plugin).__module__})",
                )
            found[plugin.name] = plugin
    return found


def enabled_plugins(
    names: Sequence[str], available: Mapping[str, IWardenPlugin]
) -> list[IWardenPlugin]:
    """
    The plugins ``names`` in build order: each after the plugins providing what
    it needs, otherwise in the order named.

    Raises:
        ConfigError: a name no installed plugin has, or a need no enabled plugin
            (nor the core) provides.
    """
    chosen: list[IWardenPlugin] = []
    for name in names:
        plugin = available.get(name)
        if plugin is None:
            known = ", ".join(sorted(available)) or "none"
            raise ConfigError("plugins.enabled", f"unknown plugin {name!r} (installed: {known})")
        chosen.append(plugin)
    providers: dict[str, IWardenPlugin] = {}
    for plugin in chosen:
        for part in plugin.provides:
            providers.setdefault(part, plugin)
    for plugin in chosen:
        for part in plugin.needs:
            if part not in providers and part not in CORE_PARTS:
                raise ConfigError(
                    "plugins.enabled",
                    f"plugin {plugin.name!r} needs {part!r}, which no enabled plugin provides",
                )
    ordered: list[IWardenPlugin] = []
    pending = list(chosen)
    while pending:
        for plugin in pending:
            before = {providers[p] for p in plugin.needs if p in providers} - {plugin}
            if all(b in ordered for b in before):
                ordered.append(plugin)
                pending.remove(plugin)
                break
        else:
            names_left = ", ".join(p.name for p in pending)
            raise ConfigError("plugins.enabled", f"plugins need each other: {names_left}")
    return ordered


def list_lines(available: Mapping[str, IWardenPlugin], enabled: Iterable[str]) -> list[str]:
    """One line per installed plugin: name, enabled or not, description."""
    on = set(enabled)
    width = max((len(name) for name in available), default=0)
    return [
        f"{name:<{width}}  {'enabled ' if name in on else 'disabled'}  {plugin.description}"
        for name, plugin in sorted(available.items())
    ]


class BuildContext:
    """
    What a plugin's ``make`` builds with: the reactor, the configuration, the
    parts the core and earlier plugins provide, and where its services go.

    Args:
        reactor: the reactor (timers, UDP, TCP, threads: L{IWardenReactor}).
        config: the whole configuration; a plugin reads the sections it owns.
        config_path: the configuration file, or None for the defaults.
        defaults: the core's parts, each built on first need (a plugin that
            provides the same name replaces it).
        plugins: the enabled plugins, in build order.
        features: feature objects that are not installed plugins (tests):
            each is a provider of the interfaces it provides (L{providers}),
            after the enabled plugins.
        listen_udp: binds the UDP sockets of media endpoints (local
            applications); None: real sockets on ``reactor``.
    """

    def __init__(
        self,
        reactor: IWardenReactor,
        config: WardenConfig,
        config_path: str | None,
        defaults: Mapping[str, Callable[[], object]],
        plugins: Sequence[IWardenPlugin] = (),
        *,
        features: Sequence[object] = (),
        listen_udp: ListenUDP | None = None,
    ) -> None:
        self.reactor = reactor
        self._features = tuple(features)
        self.listen_udp = listen_udp
        self.plugins = tuple(plugins)
        self.config = config
        self.config_path = config_path
        self._defaults = dict(defaults)
        self._parts: dict[str, object] = {}
        #: Services in the order added, each with its parent (None: the root).
        self.services: list[tuple[IService, IServiceCollection | None]] = []

    def providers(self, interface: type[T]) -> list[T]:
        """
        The enabled plugins that provide ``interface`` (as L{ICallHook}), in
        ``[plugins] enabled`` order, then the features given that provide it.
        """
        provided = cast(InterfaceClass, interface).providedBy
        order = {name: i for i, name in enumerate(self.config.plugins.enabled)}
        found = [cast(T, p) for p in self.plugins if provided(p)]
        found.sort(key=lambda p: order.get(cast(IWardenPlugin, p).name, len(order)))
        return found + [cast(T, f) for f in self._features if provided(f)]

    def provide(self, name: str, part: object) -> None:
        """Offer ``part`` as ``name`` to the plugins built after this one."""
        if name in self._parts:
            raise ValueError(f"part {name!r} is provided twice")
        self._parts[name] = part

    def optional(self, name: str, kind: type[T]) -> T | None:
        """The part ``name`` (a ``kind``), or None when nothing provides it."""
        if name not in self._parts:
            factory = self._defaults.pop(name, None)
            if factory is None:
                return None
            self._parts[name] = factory()
        part = self._parts[name]
        if isinstance(kind, InterfaceClass):
            fits = kind.providedBy(part)
        else:
            fits = isinstance(part, kind)
        if not fits:
            raise TypeError(f"part {name!r} is a {type(part).__name__}, not a {kind.__name__}")
        return cast(T, part)

    def need(self, name: str, kind: type[T]) -> T:
        """The part ``name``, a ``kind``."""
        part = self.optional(name, kind)
        if part is None:
            raise LookupError(f"no part {name!r} was provided")
        return part

    def add_service(self, service: IService, parent: IServiceCollection | None = None) -> None:
        """Run ``service`` under ``parent`` (the root when None)."""
        self.services.append((service, parent))


@implementer(IPlugin, IWardenPlugin)
class BuiltinPlugin:
    """
    Base of Warden's own plugins: each owned section is a frozen ``attrs`` class
    of L{warden.config}, parsed (and checked) by it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()
    section_classes: ClassVar[Mapping[str, type[Any]]] = {}

    @property
    def sections(self) -> tuple[str, ...]:
        """The sections of L{section_classes}."""
        return tuple(self.section_classes)

    def parse_section(
        self, name: str, table: Mapping[str, object], filename: str | None
    ) -> object:
        """Parse ``[name]`` with its section class."""
        return parse_section(self.section_classes[name], name, table, filename)

    def make(self, context: BuildContext) -> None:
        """Build the plugin's objects (each subclass has its own)."""
        raise NotImplementedError(self.name)
