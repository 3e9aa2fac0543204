"""
The plugin mechanism (warden.plugin): discovery of Warden's own plugins and of
a third party's, ``[plugins] enabled``, sections owned by plugins, build order,
``--list-plugins`` and one-line start-up errors.
"""

from __future__ import annotations

import io
import os
import shutil
import sys

from twisted.plugin import IPlugin
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import twisted.plugins
from warden.admin.service import AdminService
from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.interfaces import IWardenPlugin
from warden.plugin import DEFAULT_PLUGINS, discover, enabled_plugins
from warden.sip.service import SipService
from warden.tap import Options, makeService
from warden.testing.reactor import MemoryWardenReactor

HERE = os.path.dirname(os.path.abspath(__file__))
ACME = os.path.join(HERE, "data", "plugins", "acme_warden.py")


class ThirdPartyMixin:
    """Puts a distribution with ``twisted/plugins/acme_warden.py`` on sys.path."""

    def install_acme(self: SynchronousTestCase) -> str:
        site = os.path.abspath(self.mktemp())
        plugins = os.path.join(site, "twisted", "plugins")
        os.makedirs(plugins)
        shutil.copy(ACME, plugins)
        self.patch(sys, "path", [*sys.path, site])
        self.patch(twisted.plugins, "__path__", list(twisted.plugins.__path__))
        self.addCleanup(sys.modules.pop, "twisted.plugins.acme_warden", None)
        return site


class DiscoveryTests(ThirdPartyMixin, SynchronousTestCase):
    """getPlugins finds Warden's plugins and a site's."""

    def test_builtins(self) -> None:
        """Every plugin Warden ships is found, and each is enabled by default."""
        found = discover()
        self.assertEqual(set(DEFAULT_PLUGINS) - set(found), set())
        self.assertEqual(set(found) - {"acme"}, set(DEFAULT_PLUGINS))

    def test_verify_every_plugin(self) -> None:
        """Every discovered plugin provides IPlugin and IWardenPlugin in full."""
        for plugin in discover().values():
            self.assertTrue(verifyObject(IPlugin, plugin))
            self.assertTrue(verifyObject(IWardenPlugin, plugin))
            self.assertTrue(plugin.description and "\n" not in plugin.description)

    def test_third_party_on_sys_path(self) -> None:
        """A plugin in a ``twisted/plugins/`` directory put on sys.path is found."""
        self.assertNotIn("acme", discover())
        self.install_acme()
        found = discover()
        self.assertIn("acme", found)
        self.assertTrue(verifyObject(IWardenPlugin, found["acme"]))

    def test_third_party_runs(self) -> None:
        """Enabled, the third-party plugin parses its section and its service runs."""
        site = self.install_acme()
        path = os.path.join(site, "warden.toml")
        with open(path, "w") as f:
            f.write('[plugins]\nenabled = ["sip", "media", "acme"]\n[acme]\ngreeting = "hi"\n')
        options = Options()
        options.parseOptions(
            ["--config", path, "--data-dir", os.path.join(site, "var"), "--sip-port", "0"]
        )
        root = makeService(options, reactor=MemoryWardenReactor())
        self.addCleanup(root.store.close_pool)  # type: ignore[attr-defined]
        greetings = [c.greeting for c in root if hasattr(c, "greeting")]  # type: ignore[attr-defined]
        self.assertEqual(greetings, ["hi"])


class EnabledTests(ThirdPartyMixin, SynchronousTestCase):
    """``[plugins] enabled`` chooses what runs, in dependency order."""

    def build(self, text: str) -> object:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        options = Options()
        options.parseOptions(["--config", path, "--data-dir", path + ".var", "--sip-port", "0"])
        root = makeService(options, reactor=MemoryWardenReactor())
        self.addCleanup(root.store.close_pool)  # type: ignore[attr-defined]
        return root

    def test_default(self) -> None:
        """By default SIP and the admin API run, and SIGTERM drains."""
        root = self.build("")
        kinds = [type(c) for c in root]  # type: ignore[attr-defined]
        self.assertIn(SipService, kinds)
        self.assertIn(AdminService, kinds)
        self.assertIsNotNone(root.drain)  # type: ignore[attr-defined]

    def test_disabled(self) -> None:
        """A plugin left out of ``enabled`` builds nothing: no admin API, no drain."""
        root = self.build('[plugins]\nenabled = ["sip", "media"]\n')
        kinds = [type(c) for c in root]  # type: ignore[attr-defined]
        self.assertIn(SipService, kinds)
        self.assertNotIn(AdminService, kinds)
        self.assertIsNone(root.drain)  # type: ignore[attr-defined]

    def test_order_follows_needs(self) -> None:
        """A plugin is built after the plugins providing what it needs."""
        order = [p.name for p in enabled_plugins(("admin", "sip", "media"), discover())]
        self.assertEqual(order, ["media", "sip", "admin"])

    def test_section_of_disabled_plugin(self) -> None:
        """The section of a plugin that is not enabled is an unknown section."""
        error = self.assertRaises(
            ConfigError,
            parse_config_text,
            '[plugins]\nenabled = ["sip", "media"]\n[admin]\nenabled = false\n',
            "warden.toml",
        )
        self.assertEqual(error.path, "admin")
        self.assertIn("unknown section", str(error))


class StartUpErrorTests(ThirdPartyMixin, SynchronousTestCase):
    """A plugin problem stops ``twistd warden`` with one line naming it."""

    def refused(self, text: str) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        error = self.assertRaises(usage.UsageError, Options().parseOptions, ["--config", path])
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertIn(path, message)
        return message

    def test_unknown_plugin(self) -> None:
        """An enabled name no installed plugin has is named."""
        message = self.refused('[plugins]\nenabled = ["sip", "media", "fax"]\n')
        self.assertIn("plugins.enabled: unknown plugin 'fax'", message)

    def test_missing_need(self) -> None:
        """A plugin whose needs no enabled plugin provides is named, with the need."""
        message = self.refused('[plugins]\nenabled = ["sip"]\n')
        self.assertIn("plugin 'sip' needs 'media'", message)

    def test_bad_builtin_section(self) -> None:
        """A bad value in a built-in plugin's section names the key."""
        self.assertIn("admin.listen", self.refused("[admin]\nlisten = 5\n"))

    def test_bad_third_party_section(self) -> None:
        """A third-party plugin's refusal names the section and the plugin."""
        self.install_acme()
        message = self.refused(
            '[plugins]\nenabled = ["sip", "media", "acme"]\n[acme]\ngreeting = 5\n'
        )
        self.assertIn("acme: refused by plugin 'acme': greeting must be a string", message)


class ListPluginsTests(ThirdPartyMixin, SynchronousTestCase):
    """``twistd warden --list-plugins``."""

    def test_lists_and_exits_zero(self) -> None:
        """One line per installed plugin (name, enabled or not, description); exit 0."""
        self.install_acme()
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        error = self.assertRaises(SystemExit, Options().parseOptions, ["--list-plugins"])
        self.assertEqual(error.code, 0)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), len(DEFAULT_PLUGINS) + 1)
        acme = [line.split(None, 2) for line in lines if line.startswith("acme")]
        self.assertEqual(acme, [["acme", "disabled", "a site's greeting service"]])
        sip = [line.split(None, 2)[:2] for line in lines if line.startswith("sip ")]
        self.assertEqual(sip, [["sip", "enabled"]])
