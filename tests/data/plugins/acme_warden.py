"""
A site's own Warden plugin, as a third party ships one in its distribution's
``twisted/plugins/``: the plugin tests copy it there and put that directory on
the path.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.application.service import Service
from twisted.plugin import IPlugin
from zope.interface import implementer

from warden.interfaces import IWardenPlugin
from warden.plugin import BuildContext


class GreetingService(Service):
    """Runs under Warden; holds what ``[acme] greeting`` said."""

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting


@implementer(IPlugin, IWardenPlugin)
class AcmePlugin:
    """Owns ``[acme]`` (one key, ``greeting``, a string) and runs a service."""

    name = "acme"
    description = "a site's greeting service"
    sections = ("acme",)
    needs = ("sip",)
    provides = ()

    def parse_section(self, name: str, table: Mapping[str, object], filename: str | None) -> str:
        """``[acme] greeting``: a string; anything else is refused."""
        unknown = set(table) - {"greeting"}
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r}")
        greeting = table.get("greeting", "hello")
        if not isinstance(greeting, str):
            raise ValueError("greeting must be a string")
        return greeting

    def make(self, context: BuildContext) -> None:
        """Run the greeting service with the parsed section."""
        greeting = context.config.plugin_sections.get("acme", "hello")
        assert isinstance(greeting, str)
        context.add_service(GreetingService(greeting))


acme = AcmePlugin()
