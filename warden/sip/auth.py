"""
Digest authentication for SIP (RFC 3261 §22, RFC 7616 as applied to SIP by
RFC 8760): MD5 and SHA-256, ``qop=auth``, self-validating nonces and nonce-count
replay protection, and per-source throttling of failed attempts.

Nonces carry their issue time and an HMAC over it and the address the challenge
went to, so any node holding the secret can tell a forged nonce, or one issued
to another address ("invalid"), from an old one ("stale", RFC 7616 §3.3)
without shared state. Replay protection needs state: each issued nonce is
remembered with the highest nonce-count seen, in a bounded table; a nonce that
fell out of the table is answered as stale, never accepted twice.

Only failures that carry a nonce this server issued to the request's source
count towards blocking (L{AuthThrottle}): a spoofed datagram never received the
challenge, so it cannot lock a phone, an office NAT or a peer node out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Sequence
from enum import Enum
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from warden.errors import SipParseError, StateUnavailable
from warden.randomness import random_hex
from warden.sip.headers import parse_auth_params

ALGORITHMS: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}
#: The digest algorithms FIPS mode allows ([security] fips, ADR 0029).
FIPS_ALGORITHMS: tuple[str, ...] = ("SHA-256",)


_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def digest_hex(algorithm: str, data: str) -> str:
    """H(data) for a digest ``algorithm`` name (RFC 7616 §3.4.1)."""
    return _HASHES[algorithm](data.encode("utf-8", "surrogateescape")).hexdigest()


class NonceState(Enum):
    """What a received nonce is."""

    VALID = "valid"
    STALE = "stale"
    INVALID = "invalid"


class NonceManager:
    """
    Issues and checks nonces of the form ``<issued-at hex>.<random hex>.<hmac hex>``.

    Args:
        clock: time source.
        lifetime: seconds a nonce is accepted; older correct nonces are stale.
        secret: HMAC key; random per process when not given (nodes of a cluster
            share one so each can check the others' nonces).
        max_tracked: bound on remembered nonces (nonce-count tracking).
    """

    def __init__(
        self,
        clock: IReactorTime,
        lifetime: float,
        secret: bytes | None = None,
        max_tracked: int = 500_000,
    ) -> None:
        self._clock = clock
        self.lifetime = lifetime
        self._secret = secret if secret is not None else os.urandom(32)
        self._keyed = hmac.new(self._secret, digestmod=hashlib.sha256)
        self._max_tracked = max_tracked
        self._counts: OrderedDict[str, int] = OrderedDict()

    def _mac(self, stamp: str, salt: str, source: str) -> str:
        mac = self._keyed.copy()  # HMAC-SHA256 with the key already absorbed
        mac.update(f"{stamp}.{salt}.{source}".encode())
        return mac.hexdigest()[:32]

    def use_secret(self, secret: bytes) -> None:
        """
        From now on issue and check nonces with ``secret`` (the cluster's, shared
        through Redis, so a nonce one node issued is recognised by the others).
        """
        self._secret = secret
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)

    def issue(self, source: str = "") -> str:
        """
        A fresh nonce for a challenge sent to ``source`` (an address), remembered
        for nonce-count checks.
        """
        stamp = format(int(self._clock.seconds() * 1000), "x")
        salt = random_hex(8)
        nonce = f"{stamp}.{salt}.{self._mac(stamp, salt, source)}"
        counts = self._counts
        counts[nonce] = 0
        if len(counts) > self._max_tracked:
            counts.popitem(last=False)
        return nonce

    def check(self, nonce: str, source: str = "") -> NonceState:
        """
        Classify a nonce received in credentials from ``source``: INVALID unless
        this server (or a node sharing its secret) issued it to ``source``.
        """
        parts = nonce.split(".")
        if len(parts) != 3:
            return NonceState.INVALID
        stamp, salt, mac = parts
        if not hmac.compare_digest(mac.encode(), self._mac(stamp, salt, source).encode()):
            return NonceState.INVALID
        try:
            issued = int(stamp, 16) / 1000.0
        except ValueError:
            return NonceState.INVALID
        age = self._clock.seconds() - issued
        if age > self.lifetime or age < -5.0 or nonce not in self._counts:
            return NonceState.STALE
        return NonceState.VALID

    def use(self, nonce: str, count: int) -> bool:
        """
        Record nonce-count ``count`` for ``nonce``; False when it is not higher
        than every count seen before (a replay, RFC 7616 §3.4).
        """
        last = self._counts.get(nonce)
        if last is None or count <= last:
            return False
        self._counts[nonce] = count
        return True

    def forget_expired(self) -> int:
        """Drop tracked nonces older than the lifetime; returns how many."""
        now_ms = self._clock.seconds() * 1000
        limit = self.lifetime * 1000
        dropped = 0
        counts = self._counts
        while counts:
            nonce = next(iter(counts))
            if now_ms - int(nonce.split(".", 1)[0], 16) <= limit:
                break
            counts.popitem(last=False)
            dropped += 1
        return dropped

    def __len__(self) -> int:
        return len(self._counts)


@attrs.frozen
class Credentials:
    """The fields of a ``Digest`` Authorization header (RFC 7616 §3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


def parse_credentials(value: str) -> Credentials | None:
    """
    Parse an Authorization value; None when it is not Digest (RFC 4475
    ``regaut01``: unknown schemes are challenged, never accepted).

    Raises SipParseError when it claims to be Digest but is malformed.
    """
    scheme, params = parse_auth_params(value)
    if scheme.lower() != "digest":
        return None
    try:
        return Credentials(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"].lower(),
            algorithm=params.get("algorithm", "MD5").upper(),
            qop=params.get("qop"),
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
        )
    except KeyError as e:
        raise SipParseError(f"Digest credentials without {e.args[0]}") from None


def expected_response(creds: Credentials, ha1: str, method: str) -> str:
    """The ``response`` value a client knowing ``ha1`` computes (RFC 7616 §3.4.1)."""
    ha2 = digest_hex(creds.algorithm, f"{method}:{creds.uri}")
    if creds.qop is None:
        return digest_hex(creds.algorithm, f"{ha1}:{creds.nonce}:{ha2}")
    return digest_hex(
        creds.algorithm, f"{ha1}:{creds.nonce}:{creds.nc}:{creds.cnonce}:{creds.qop}:{ha2}"
    )


def challenge(realm: str, nonce: str, algorithm: str, stale: bool = False) -> str:
    """A WWW-Authenticate / Proxy-Authenticate value for one algorithm."""
    stale_text = ", stale=true" if stale else ""
    return (
        f'Digest realm="{realm}", nonce="{nonce}", algorithm={algorithm}, qop="auth"{stale_text}'
    )


def _state_down(failure: Failure) -> None:
    """The shared counter is unavailable (logged by the state): count locally only."""
    failure.trap(StateUnavailable)  # type: ignore[no-untyped-call]


class AuthThrottle:
    """
    Counts failed authentications in fixed windows, per source address and per
    extension at a source, so a scanner cannot guess passwords at line rate.

    A source that reaches ``limit`` failures within ``window`` seconds is
    blocked for ``block_seconds``; so is one extension at one source that
    reaches ``extension_limit`` (a phone with a wrong password behind an office
    NAT is refused alone, before the NAT's address reaches ``limit``). Requests
    refused because of a block are not counted again.
    """

    #: Extension names are cut to this length in keys (bounded memory and Redis keys).
    USER_KEY_CHARS = 64

    def __init__(
        self,
        clock: IReactorTime,
        limit: int,
        window: float,
        block_seconds: float,
        extension_limit: int | None = None,
        shared: Any = None,
    ) -> None:
        self._clock = clock
        self.limit = limit
        self.extension_limit = limit if extension_limit is None else extension_limit
        self.window = window
        self.block_seconds = block_seconds
        self._failures: dict[str, tuple[float, int]] = {}
        self._blocked: dict[str, float] = {}
        # IAuthFailureCounter of the cluster, or None: failures then count here only.
        self.shared = shared

    @classmethod
    def _key(cls, source: str, user: str) -> str:
        return f"{source} {user[: cls.USER_KEY_CHARS]}"

    def is_blocked(self, source: str, user: str | None = None) -> bool:
        """True while ``source``, or extension ``user`` at ``source``, is blocked."""
        if self._blocked_key(source):
            return True
        return user is not None and self._blocked_key(self._key(source, user))

    def _blocked_key(self, key: str) -> bool:
        until = self._blocked.get(key)
        if until is None:
            return False
        if self._clock.seconds() >= until:
            del self._blocked[key]
            return False
        return True

    def record_failure(self, source: str, user: str | None = None) -> bool:
        """
        Count one failure of ``source`` (and of extension ``user`` there); True
        when it got the source or the extension at the source blocked. With a
        shared counter the failure is also counted cluster-wide, and a key is
        blocked here as soon as the cluster's count reaches its limit.
        """
        keys = [(source, self.limit)]
        if user is not None:
            keys.append((self._key(source, user), self.extension_limit))
        blocked = False
        for key, limit in keys:
            if self.shared is not None:
                d = self.shared.record_failure(key, self.window)
                d.addCallbacks(
                    lambda count, key=key, limit=limit: self._shared_count(key, count, limit),
                    _state_down,
                )
            blocked = self._record_here(key, limit) or blocked
        return blocked

    def _shared_count(self, key: str, count: int, limit: int) -> None:
        if count >= limit and not self._blocked_key(key):
            self._failures.pop(key, None)
            self._blocked[key] = self._clock.seconds() + self.block_seconds

    def _record_here(self, key: str, limit: int) -> bool:
        now = self._clock.seconds()
        start, count = self._failures.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        count += 1
        if count >= limit:
            self._failures.pop(key, None)
            self._blocked[key] = now + self.block_seconds
            return True
        self._failures[key] = (start, count)
        return False

    def prune(self) -> None:
        """Forget windows and blocks that are over (called periodically)."""
        now = self._clock.seconds()
        self._failures = {k: v for k, v in self._failures.items() if now - v[0] < self.window}
        self._blocked = {k: v for k, v in self._blocked.items() if v > now}

    @property
    def blocked_count(self) -> int:
        """Sources and extensions at a source currently blocked (some may just have ended)."""
        return len(self._blocked)


def pick_challenge(values: Sequence[str], algorithms: tuple[str, ...] | None) -> str | None:
    """
    The challenge a client answers among ``values`` (a server may offer one per
    algorithm, RFC 8760 §2.4): the first, or with ``algorithms`` (FIPS mode:
    SHA-256 only) the first in one of them (a challenge without ``algorithm``
    is MD5); None when there is none.
    """
    for value in values:
        if algorithms is None:
            return value
        try:
            _, params = parse_auth_params(value)
        except SipParseError:
            continue
        if params.get("algorithm", "MD5").upper() in algorithms:
            return value
    return None


def answer_challenge(
    challenge_value: str,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """
    The Authorization value a client sends in answer to a Digest challenge
    (RFC 7616 §3.4), for ``qop=auth`` or no qop. Used by Warden's own clients
    (load generator, tests).
    """
    _, params = parse_auth_params(challenge_value)
    algorithm = params.get("algorithm", "MD5").upper()
    ha1 = digest_hex(algorithm, f"{username}:{params['realm']}:{password}")
    return answer_challenge_with_ha1(challenge_value, username, ha1, method, uri, nc, cnonce)


def answer_challenge_with_ha1(
    challenge_value: str,
    username: str,
    ha1: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """
    L{answer_challenge} from the HA1 a store keeps instead of the password: the
    response needs nothing more (RFC 7616 §3.4.1). ``ha1`` must be for the
    challenge's realm and algorithm. Used by the drill's probe, which has only
    what a backup holds.
    """
    _, params = parse_auth_params(challenge_value)
    return answer_params_with_ha1(params, username, ha1, method, uri, nc, cnonce)


def answer_params_with_ha1(
    params: dict[str, str],
    username: str,
    ha1: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """
    L{answer_challenge_with_ha1} from a challenge's parameters already parsed
    (L{parse_auth_params}): the load generator reads each challenge once.
    Raises KeyError without ``realm`` or ``nonce``.
    """
    algorithm = params.get("algorithm", "MD5").upper()
    realm, nonce = params["realm"], params["nonce"]
    qop = "auth" if "auth" in params.get("qop", "").split(",") else None
    creds = Credentials(
        username=username,
        realm=realm,
        nonce=nonce,
        uri=uri,
        response="",
        algorithm=algorithm,
        qop=qop,
        nc=f"{nc:08x}" if qop else None,
        cnonce=(cnonce or random_hex(8)) if qop else None,
    )
    response = expected_response(creds, ha1, method)
    fields = [
        f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
        f'response="{response}"', f"algorithm={algorithm}",
    ]  # fmt: skip
    if qop:
        fields += [f"qop={qop}", f"nc={creds.nc}", f'cnonce="{creds.cnonce}"']
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(fields)
