"""
MFA as a feature plugin: the admin login's TOTP second factor (RFC 6238, with
one-time recovery codes), an L{IAuthenticationFactor}.

The admin login asks every second factor of an enabled plugin that the account
has enrolled (L{warden.admin.auth.AdminAuth.login}); another factor is added as
another plugin providing the same interface.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

import pyotp
from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import implementer

from warden.digits import is_digits
from warden.interfaces import IAdminStore, IAuthenticationFactor, IWardenPlugin
from warden.model.admin import AdminAccount
from warden.secrets import normalise_recovery_code, sha256_hex

if TYPE_CHECKING:
    from warden.plugin import BuildContext

#: Seconds per TOTP time step (RFC 6238 §4).
TOTP_STEP = 30


def totp_step(now: float, secret: str, code: str, last_step: int) -> int | None:
    """
    The time step ``code`` is valid for at ``now`` (or one step either side for
    clock drift, RFC 6238 §5.2), if it is later than ``last_step``; else None.
    """
    code = code.strip()
    if not (is_digits(code) and len(code) == 6) or not secret:
        return None
    totp = pyotp.TOTP(secret)
    now_step = int(now // TOTP_STEP)
    for step in (now_step - 1, now_step, now_step + 1):
        if step > last_step and hmac.compare_digest(totp.at(step * TOTP_STEP), code):
            return step
    return None


@implementer(IPlugin, IWardenPlugin, IAuthenticationFactor)
class MfaPlugin:
    """
    The TOTP second factor of the admin login: TOTP codes and recovery codes of
    the accounts that enrolled TOTP (``wardenctl``/API enrolment).
    """

    name = "mfa"
    description = "TOTP second factor of admin logins (RFC 6238, recovery codes)"
    sections: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()

    def parse_section(self, name: str, table: object, filename: str | None) -> object:
        """Owns no section: never called."""
        raise KeyError(name)

    def make(self, context: BuildContext) -> None:
        """
        Nothing to build: the factor keeps no state of its own (codes are used
        up in the admin store), and the admin plugin asks it at every login.
        """

    def enrolled(self, account: AdminAccount) -> bool:
        """Whether ``account`` confirmed a TOTP enrolment."""
        return bool(account.totp_secret)

    async def _verify(
        self, account: AdminAccount, code: str, store: IAdminStore, now: float
    ) -> bool:
        step = totp_step(now, account.totp_secret, code, account.totp_last_step)
        if step is not None:
            return bool(await store.claim_totp_step(account.name, step))
        digest = sha256_hex(normalise_recovery_code(code))
        if digest not in account.recovery_hashes:
            return False
        return bool(await store.use_recovery_code(account.name, digest))

    def verify(
        self, account: AdminAccount, code: str, store: IAdminStore, now: float
    ) -> Deferred[bool]:
        """
        Whether ``code`` is a valid TOTP or recovery code of ``account`` at
        ``now``, used up atomically in ``store``: one code gives one login, even
        when several logins with it run at once or on several nodes.
        """
        return Deferred.fromCoroutine(self._verify(account, code, store, now))


plugin = MfaPlugin()
