"""
Admin authentication: password login with TOTP MFA (RFC 6238, ``pyotp``),
short-lived signed session tokens, long-lived scoped API tokens, and lockout
with exponential back-off per account and per source address.

Sessions are ``ses.<payload>.<HMAC-SHA256>``, signed with a key made at start:
they end with the process. API tokens (``wdn_<id>_<secret>``) are looked up by
id and their secret compared by hash; they expire (``[admin] token_days``).

Both carry the credential generation of their account: a password change or
MFA enrolment moves it, and sessions and tokens of an older generation, of a
disabled account or of one that no longer exists stop working (at once on the
node that made the change, on other nodes within L{TOKEN_CACHE_SECONDS}).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pyotp
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from warden import secrets as admin_secrets
from warden.errors import ApiError
from warden.features.mfa import plugin as totp_factor
from warden.features.mfa import totp_step
from warden.interfaces import IAdminStore, IAuthenticationFactor
from warden.model.admin import SCOPES, AdminAccount, ApiToken

#: Scopes of a fully logged-in session: every token scope, and managing tokens.
SESSION_SCOPES = frozenset([*SCOPES, "admin", "enrol"])
#: The only scope of a session that must enrol MFA first (``[admin] require_mfa``).
ENROL_SCOPE = "enrol"
#: Seconds a looked-up API token or account is trusted without asking the store
#: again: a token revoked, or an account changed, elsewhere (another node,
#: wardenctl) stops its tokens and sessions within this.
TOKEN_CACHE_SECONDS = 10.0
#: How long an API token lasts by default (``[admin] token_days``).
TOKEN_SECONDS = 90 * 86400.0
_TOKEN_CACHE_SIZE = 1000
_SESSION_PREFIX = "ses."
ISSUER = "Warden"


@attrs.frozen
class AuthSettings:
    """
    Attributes:
        session_seconds: how long a session token is valid.
        require_mfa: every account must enrol TOTP before using the API.
        fail_limit: failed logins (per account, per address) before back-off.
        backoff_seconds: the first back-off; it doubles with each further failure.
        backoff_max_seconds: the longest back-off.
        password_checks: password checks (scrypt, 16 MiB each, in the shared
            thread pool) running at once; a login beyond them gets 503.
        token_seconds: how long a new API token lasts; None for ever.
        fips: FIPS mode (``[security] fips``): passwords are hashed with
            PBKDF2-HMAC-SHA256 and scrypt hashes do not verify
            (L{admin_secrets.PasswordHasher}).
    """

    session_seconds: float = 900.0
    require_mfa: bool = False
    fail_limit: int = 5
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 900.0
    password_checks: int = 4
    token_seconds: float | None = TOKEN_SECONDS
    fips: bool = False


@attrs.frozen
class Principal:
    """
    Who a request comes from.

    Attributes:
        name: the account name, or ``token:<id>``.
        scopes: what it may do.
        account: the account behind it (a token's owner).
        generation: the account's credential generation it was issued under.
    """

    name: str
    scopes: frozenset[str]
    account: str
    generation: int = 0


@attrs.define
class _Failures:
    count: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """
    Counts failed logins per key (``account:NAME``, ``ip:ADDRESS``). From the
    ``limit``-th failure on, the key is blocked for ``base * 2**(failures - limit)``
    seconds, at most ``maximum``. A success clears the key; a key quiet for twice
    the maximum back-off is forgotten.
    """

    def __init__(self, clock: IReactorTime, limit: int, base: float, maximum: float) -> None:
        self._clock = clock
        self._limit = limit
        self._base = base
        self._maximum = maximum
        self._keys: dict[str, _Failures] = {}

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again (0 when it may now)."""
        entry = self._keys.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.blocked_until - self._clock.seconds())

    def failed(self, key: str) -> None:
        """Count a failure of ``key`` (or reserve one for an attempt in progress)."""
        now = self._clock.seconds()
        entry = self._keys.setdefault(key, _Failures())
        entry.count += 1
        entry.last = now
        self._block(entry, now)

    def refund(self, key: str) -> None:
        """Take back one reserved failure of ``key`` (the attempt did not fail)."""
        entry = self._keys.get(key)
        if entry is not None and entry.count > 0:
            entry.count -= 1
            self._block(entry, entry.last)

    def _block(self, entry: _Failures, since: float) -> None:
        if entry.count >= self._limit:
            delay = min(self._maximum, self._base * 2 ** min(entry.count - self._limit, 30))
            entry.blocked_until = since + delay
        else:
            entry.blocked_until = 0.0

    def succeeded(self, key: str) -> None:
        """Forget the failures of ``key``."""
        self._keys.pop(key, None)

    def prune(self) -> None:
        """Forget keys quiet for twice the maximum back-off."""
        horizon = self._clock.seconds() - 2 * self._maximum
        for key in [k for k, e in self._keys.items() if e.last < horizon]:
            del self._keys[key]

    def __len__(self) -> int:
        return len(self._keys)


class PasswordCheckSlots:
    """
    Bounds the password checks (scrypt) running at once: each costs 16 MiB and a
    thread of the pool shared with the store, so a flood of logins is refused
    with 503 and ``Retry-After`` instead of queueing without bound.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.busy = 0

    def acquire(self) -> None:
        """
        Take a slot.

        Raises:
            ApiError: 503 ``busy`` when every slot is taken.
        """
        if self.busy >= self._limit:
            raise ApiError(
                503, "busy", "too many logins at once; try again shortly",
                (("Retry-After", "1"),),
            )  # fmt: skip
        self.busy += 1

    def release(self) -> None:
        """Give a slot back."""
        self.busy -= 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and checks session tokens signed with HMAC-SHA256."""

    def __init__(self, clock: IReactorTime, key: bytes | None = None) -> None:
        self._clock = clock
        self._key = key if key is not None else secrets.token_bytes(32)

    def issue(
        self, account: str, scopes: frozenset[str], lifetime: float, generation: int = 0
    ) -> tuple[str, float]:
        """A token for ``account`` (at credential ``generation``) with ``scopes``,
        and when it expires."""
        expires = self._clock.seconds() + lifetime
        claims = {"sub": account, "scp": sorted(scopes), "exp": expires, "gen": generation}
        payload = json.dumps(claims).encode()
        body = _b64(payload)
        return f"{_SESSION_PREFIX}{body}.{self._sign(body)}", expires

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def check(self, token: str) -> Principal | None:
        """The principal of a valid, unexpired token; None otherwise."""
        if not token.startswith(_SESSION_PREFIX):
            return None
        body, _, signature = token[len(_SESSION_PREFIX) :].partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return None
        try:
            claims = json.loads(_unb64(body))
            account, scopes, expires = claims["sub"], claims["scp"], float(claims["exp"])
            generation = int(claims["gen"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if expires <= self._clock.seconds():
            return None
        return Principal(account, frozenset(scopes), account, generation)


def _invalid_credentials() -> ApiError:
    return ApiError(401, "invalid_credentials", "wrong user name or password")


def _run_inline(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return defer.maybeDeferred(f, *args)


class AdminAuth:
    """
    Logs operators in and tells who a request is from.

    Args:
        clock: time for sessions, TOTP and back-off.
        store: accounts and tokens.
        settings: lifetimes, MFA policy, lockout.
        run_blocking: runs a CPU-heavy function (scrypt) off the reactor thread and
            returns a Deferred of its result; inline by default (tests).
        factors: the second factors of enabled plugins (L{warden.features}),
            asked in order; None: Warden's TOTP factor (L{warden.features.mfa}).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: IAdminStore,
        settings: AuthSettings,
        run_blocking: Callable[..., Deferred[Any]] = _run_inline,
        signer: SessionSigner | None = None,
        factors: Sequence[IAuthenticationFactor] | None = None,
    ) -> None:
        self.factors = tuple(factors) if factors is not None else (totp_factor,)
        self.clock = clock
        self.store = store
        self.settings = settings
        self._run_blocking = run_blocking
        self.signer = signer if signer is not None else SessionSigner(clock)
        self.throttle = LoginThrottle(
            clock, settings.fail_limit, settings.backoff_seconds, settings.backoff_max_seconds
        )
        self.password_slots = PasswordCheckSlots(settings.password_checks)
        self.passwords = admin_secrets.PasswordHasher(settings.fips)
        # Verified against when the account does not exist, so that an unknown
        # name takes as long to refuse as a wrong password.
        self._dummy_hash = self.passwords.dummy()
        self._tokens: dict[str, tuple[ApiToken, float]] = {}
        self._accounts: dict[str, tuple[AdminAccount | None, float]] = {}

    # -- login ----------------------------------------------------------------------

    async def login(
        self, name: str, password: str, code: str | None, source: str
    ) -> dict[str, Any]:
        """
        Check a login and issue a session.

        The attempt is counted as a failure (per account and per address) before
        anything is awaited, so concurrent guesses cannot all pass the back-off
        check; it is taken back only when the password was right.

        Raises:
            ApiError: 429 while backing off; 503 while too many password checks
                run; 401 ``invalid_credentials``, ``mfa_required`` (no code
                given) or ``invalid_mfa_code``.
        """
        keys = (f"account:{name}", f"ip:{source}")
        wait = max(self.throttle.retry_after(k) for k in keys)
        if wait > 0:
            retry = str(math.ceil(wait))
            raise ApiError(
                429, "too_many_attempts", "too many failed logins; try again later",
                (("Retry-After", retry),),
            )  # fmt: skip
        account, ok = await self._check_password(name, password, keys)
        if account is None or not ok or account.disabled:
            raise _invalid_credentials()
        factors = [f for f in self.factors if f.enrolled(account)]
        if account.mfa_enabled and not factors:
            # Enrolled in a factor no enabled plugin checks: refused, never let in
            # on the password alone.
            raise ApiError(401, "mfa_unavailable", "this account's second factor is not enabled")
        if factors:
            if not code:
                for key in keys:
                    self.throttle.refund(key)
                raise ApiError(401, "mfa_required", "this account needs a TOTP code")
            if not await self._use_second_factor(account, code, factors):
                raise ApiError(401, "invalid_mfa_code", "wrong or already used code")
        for key in keys:
            self.throttle.succeeded(key)
        must_enrol = self.settings.require_mfa and not account.mfa_enabled
        scopes = frozenset([ENROL_SCOPE]) if must_enrol else SESSION_SCOPES
        token, expires = self.signer.issue(
            account.name, scopes, self.settings.session_seconds, account.generation
        )
        return {
            "token": token,
            "expires_at": expires,
            "scopes": sorted(scopes),
            "mfa_enabled": account.mfa_enabled,
            "mfa_enrolment_required": must_enrol,
        }

    async def _check_password(
        self, name: str, password: str, keys: tuple[str, ...]
    ) -> tuple[AdminAccount | None, bool]:
        """
        Reserve a failure on ``keys`` and a password-check slot (503 when none is
        free), then the account and whether ``password`` is its password.
        """
        self.password_slots.acquire()
        try:
            for key in keys:
                self.throttle.failed(key)
            account = await self.store.get_account(name)
            stored = account.password_hash if account is not None else self._dummy_hash
            if account is not None and not self.passwords.usable(stored):
                self._unusable_hash(account.name, stored)
                stored = self._dummy_hash  # the same cost: no hint in the timing
            ok = await self._run_blocking(self.passwords.verify, password, stored)
        finally:
            self.password_slots.release()
        return account, bool(ok)

    def _unusable_hash(self, name: str, stored: str) -> None:
        """An account whose stored hash this mode cannot verify (scrypt in FIPS mode)."""
        self.log.warn(
            "Admin account {account} cannot log in: its password hash is {scheme}, which"
            " FIPS mode ([security] fips) does not use; give it a new password with"
            " wardenctl admin reset-password {account}",
            account=name,
            scheme=admin_secrets.hash_scheme(stored) or "unknown",
        )

    async def _use_second_factor(
        self, account: AdminAccount, code: str, factors: Sequence[IAuthenticationFactor]
    ) -> bool:
        """Whether one of the account's enrolled ``factors`` accepts ``code``."""
        now = self.clock.seconds()
        for factor in factors:
            if await factor.verify(account, code, self.store, now):
                return True
        return False

    def totp_step(self, secret: str, code: str, last_step: int) -> int | None:
        """The TOTP time step ``code`` is valid for now (L{warden.features.mfa})."""
        return totp_step(self.clock.seconds(), secret, code, last_step)

    # -- requests -------------------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> Principal:
        """
        The principal of an ``Authorization: Bearer`` header.

        Raises:
            ApiError: 401 when it is missing, malformed, expired or revoked.
        """
        if not authorization:
            raise ApiError(401, "unauthenticated", "send Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthenticated", "send Authorization: Bearer <token>")
        principal = self.signer.check(token)
        if principal is None:
            principal = await self._token_principal(token)
        if principal is not None and await self._current(principal):
            return principal
        raise ApiError(401, "invalid_token", "the token is invalid, expired or revoked")

    async def _token_principal(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked, unexpired API token; None otherwise."""
        parts = admin_secrets.split_token(token)
        if parts is None:
            return None
        stored = await self._lookup_token(parts[0])
        if (
            stored is None
            or stored.revoked_at is not None
            or (stored.expires_at is not None and stored.expires_at <= self.clock.seconds())
            or not hmac.compare_digest(stored.secret_hash, admin_secrets.sha256_hex(parts[1]))
        ):
            return None
        return Principal(
            f"token:{stored.token_id}", frozenset(stored.scopes), stored.owner,
            stored.owner_generation,
        )  # fmt: skip

    async def _current(self, principal: Principal) -> bool:
        """Whether the account behind ``principal`` exists, is enabled, and is still
        at the credential generation the session or token was issued under."""
        now = self.clock.seconds()
        cached = self._accounts.get(principal.account)
        if cached is not None and now - cached[1] < TOKEN_CACHE_SECONDS:
            account = cached[0]
        else:
            account = await self.store.get_account(principal.account)
            if len(self._accounts) >= _TOKEN_CACHE_SIZE:
                self._accounts.clear()
            self._accounts[principal.account] = (account, now)
        return (
            account is not None
            and not account.disabled
            and account.generation == principal.generation
        )

    async def _new_generation(self, account: AdminAccount, **changes: Any) -> None:
        """Store ``account`` with ``changes`` and its credential generation moved on:
        every session and token issued before stops working."""
        self._accounts.pop(account.name, None)
        await self.store.update_account(
            attrs.evolve(account, generation=account.generation + 1, **changes)
        )

    async def _lookup_token(self, token_id: str) -> ApiToken | None:
        """The stored token, from the cache when looked up recently."""
        now = self.clock.seconds()
        cached = self._tokens.get(token_id)
        if cached is not None and now - cached[1] < TOKEN_CACHE_SECONDS:
            return cached[0]
        stored = await self.store.get_token(token_id)
        if stored is not None:
            if len(self._tokens) >= _TOKEN_CACHE_SIZE:
                self._tokens.clear()
            self._tokens[token_id] = (stored, now)
        return stored

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token; it stops working on this node at once."""
        self._tokens.pop(token_id, None)
        return await self.store.revoke_token(token_id, self.clock.seconds())

    # -- MFA --------------------------------------------------------------------------

    async def enrol_mfa(self, name: str) -> dict[str, Any]:
        """
        Start TOTP enrolment: a new seed (pending until confirmed) and recovery codes.

        Returns the ``otpauth://`` URI and the recovery codes: shown only this once.
        """
        account = await self._account(name)
        if account.mfa_enabled:
            raise ApiError(409, "mfa_already_enabled", "MFA is already enabled")
        secret = pyotp.random_base32()
        codes = admin_secrets.new_recovery_codes()
        hashes = tuple(admin_secrets.sha256_hex(c) for c in codes)
        await self.store.update_account(
            attrs.evolve(account, totp_pending=secret, recovery_hashes=hashes)
        )
        uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=ISSUER)
        return {"otpauth_uri": uri, "recovery_codes": codes}

    async def confirm_mfa(self, name: str, code: str) -> None:
        """
        Finish enrolment with a code from the authenticator app.

        Raises:
            ApiError: 409 when no enrolment is pending, 400 for a wrong code.
        """
        account = await self._account(name)
        if not account.totp_pending:
            raise ApiError(409, "no_pending_enrolment", "start with POST /auth/mfa/enrol")
        step = self.totp_step(account.totp_pending, code, 0)
        if step is None:
            raise ApiError(400, "invalid_mfa_code", "the code does not match")
        await self._new_generation(
            account, totp_secret=account.totp_pending, totp_pending="", totp_last_step=step
        )

    async def change_password(self, name: str, current: str, new: str) -> None:
        """Replace the password of ``name`` after checking the current one."""
        account = await self._account(name)
        self.password_slots.acquire()
        try:
            ok = await self._run_blocking(self.passwords.verify, current, account.password_hash)
            if not ok:
                raise ApiError(403, "invalid_credentials", "the current password is wrong")
            check_new_password(new)
            new_hash = await self._run_blocking(self.passwords.hash, new)
        finally:
            self.password_slots.release()
        await self._new_generation(account, password_hash=new_hash)

    async def _account(self, name: str) -> AdminAccount:
        account = await self.store.get_account(name)
        if account is None:
            raise ApiError(401, "invalid_token", "the account no longer exists")
        return account

    # -- tokens ----------------------------------------------------------------------

    async def create_token(
        self, owner: str, name: str, scopes: tuple[str, ...]
    ) -> tuple[str, ApiToken]:
        """A new API token; the full token string is returned only here."""
        account = await self._account(owner)
        return await issue_token(
            self.store, self.clock, account, name, scopes, self.settings.token_seconds
        )


async def issue_token(
    store: IAdminStore,
    clock: IReactorTime,
    owner: AdminAccount,
    name: str,
    scopes: tuple[str, ...],
    lifetime: float | None,
) -> tuple[str, ApiToken]:
    """
    Store a new API token of ``owner`` at its current credential generation,
    lasting ``lifetime`` seconds (None: for ever); returns the full token string
    (shown only once) and the stored token.
    """
    token_id, secret, full = admin_secrets.new_token()
    now = clock.seconds()
    token = ApiToken(
        token_id, name, admin_secrets.sha256_hex(secret), scopes, owner.name, now,
        owner_generation=owner.generation,
        expires_at=None if lifetime is None else now + lifetime,
    )  # fmt: skip
    await store.add_token(token)
    return full, token


def check_new_password(password: str) -> None:
    """Raise ApiError 400 unless ``password`` is long enough."""
    if len(password) < admin_secrets.MIN_PASSWORD_LENGTH:
        raise ApiError(
            400,
            "weak_password",
            f"a password needs at least {admin_secrets.MIN_PASSWORD_LENGTH} characters",
        )


async def add_account(
    store: IAdminStore, clock: IReactorTime, name: str, fips: bool = False
) -> str:
    """
    Create admin account ``name`` with a random password; returns the password,
    which is stored only as its hash (scrypt; PBKDF2-HMAC-SHA256 with ``fips``).

    Raises:
        AdminAccountExists: the name is taken.
    """
    password = admin_secrets.generate_admin_password()
    hashed = admin_secrets.PasswordHasher(fips).hash(password)
    await store.add_account(AdminAccount(name, hashed, clock.seconds()))
    return password


async def reset_password(store: IAdminStore, account: AdminAccount, fips: bool = False) -> str:
    """
    Give ``account`` a new random password (hashed as L{add_account} does) and
    a new credential generation, so its sessions and API tokens stop working;
    returns the password.
    """
    password = admin_secrets.generate_admin_password()
    hashed = admin_secrets.PasswordHasher(fips).hash(password)
    await store.update_account(
        attrs.evolve(account, password_hash=hashed, generation=account.generation + 1)
    )
    return password
