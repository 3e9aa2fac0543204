"""
MFA as a feature plugin (warden.features.mfa): the admin login asks every
enabled second factor the account enrolled; another factor is a plugin too;
an account whose factor no enabled plugin checks is refused.
"""

from __future__ import annotations

from typing import Any

import pyotp
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from warden import secrets
from warden.admin.auth import AdminAuth, AuthSettings
from warden.config import parse_config_text
from warden.errors import ApiError
from warden.features.mfa import TOTP_STEP
from warden.features.mfa import plugin as totp
from warden.interfaces import IAdminStore, IAuthenticationFactor
from warden.model.admin import AdminAccount
from warden.plugin import BuildContext, discover, enabled_plugins
from warden.testing.admin import MemoryAdminStore

START = 1_700_000_000.0
PASSWORD = "correct horse battery"


@implementer(IAuthenticationFactor)
class HardwareKey:
    """Another second factor, as a site's plugin would add: one fixed code."""

    name = "hardware-key"

    def enrolled(self, account: AdminAccount) -> bool:
        """Every account carries the key."""
        return True

    def verify(
        self, account: AdminAccount, code: str, store: IAdminStore, now: float
    ) -> Deferred[bool]:
        """The key's code is "key-ok"."""
        return defer.succeed(code == "key-ok")


class LoginFactorTests(SynchronousTestCase):
    """Which factors the login asks."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryAdminStore()
        self.seed = pyotp.random_base32()

    def login(self, factors: Any, code: str | None, totp_secret: str = "") -> Any:
        self.store.accounts["alice"] = AdminAccount(
            "alice", secrets.hash_password(PASSWORD, n=2**10), START, totp_secret=totp_secret
        )
        auth = AdminAuth(self.clock, self.store, AuthSettings(), factors=factors)
        d = Deferred.fromCoroutine(auth.login("alice", PASSWORD, code, "192.0.2.9"))
        results: list[Any] = []
        d.addBoth(results.append)
        result = results[0]
        return result.value if hasattr(result, "value") else result

    def code(self) -> str:
        return pyotp.TOTP(self.seed).at(int(START // TOTP_STEP) * TOTP_STEP)

    def test_plugin_is_a_factor(self) -> None:
        """The mfa plugin provides IAuthenticationFactor in full."""
        self.assertTrue(verifyObject(IAuthenticationFactor, totp))

    def test_totp_plugin(self) -> None:
        """With the mfa plugin a TOTP account needs its code, and the code works."""
        self.assertEqual(self.login([totp], None, self.seed).code, "mfa_required")
        self.assertIn("token", self.login([totp], self.code(), self.seed))

    def test_another_factor(self) -> None:
        """A second factor added as a plugin is asked too: its code logs in."""
        result = self.login([totp, HardwareKey()], "key-ok", self.seed)
        self.assertIn("token", result)
        self.assertEqual(
            self.login([totp, HardwareKey()], "000000", self.seed).code, "invalid_mfa_code"
        )

    def test_factor_off_refuses(self) -> None:
        """TOTP enrolled but the mfa plugin disabled: refused, not let in on the password."""
        result = self.login([], self.code(), self.seed)
        self.assertIsInstance(result, ApiError)
        self.assertEqual((result.status, result.code), (401, "mfa_unavailable"))

    def test_no_factor_enrolled(self) -> None:
        """An account without a second factor logs in with its password."""
        self.assertIn("token", self.login([totp], None))


class EnabledFactorTests(SynchronousTestCase):
    """The admin plugin's factors are the enabled plugins'."""

    def factors(self, text: str) -> list[Any]:
        config = parse_config_text(text)
        plugins = enabled_plugins(config.plugins.enabled, discover())
        context = BuildContext(MemoryReactorClock(), config, None, {}, plugins)
        return context.providers(IAuthenticationFactor)

    def test_default(self) -> None:
        """By default the TOTP factor is enabled."""
        self.assertEqual(self.factors(""), [totp])

    def test_disabled(self) -> None:
        """Left out of [plugins] enabled, no factor is asked."""
        names = '["sip", "media", "admin"]'
        self.assertEqual(self.factors(f"[plugins]\nenabled = {names}\n"), [])
