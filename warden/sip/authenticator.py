"""
Authenticating SIP requests against the directory (RFC 3261 §22.2 for REGISTER
with 401, §22.3 for INVITE and others with 407).

The digest ``uri`` must name the request's target (RFC 7616 §3.4.6, RFC 3261
§22.4): the same user and host as the Request-URI, or, without a user, the
Request-URI's host (SIPp sends the address it sends to); anything else is 400,
so credentials captured from an INVITE cannot be replayed to call someone else.
The response hash is checked over the ``uri`` exactly as the client sent it.
Wrong credentials and unknown users get the same 403, so the answer does not
tell a scanner which extensions exist.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar, overload

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from warden.errors import SipError, SipParseError
from warden.interfaces import IDirectory
from warden.model import Extension
from warden.sip import metrics
from warden.sip.auth import (
    ALGORITHMS,
    FIPS_ALGORITHMS,
    AuthThrottle,
    Credentials,
    NonceManager,
    NonceState,
    challenge,
    expected_response,
    parse_credentials,
)
from warden.sip.flow import Flow
from warden.sip.message import Request
from warden.sip.uri import URI, parse_uri

#: Seconds between two log lines about the same extension's realm mismatch.
REALM_LOG_INTERVAL = 600.0

_T = TypeVar("_T")
_U = TypeVar("_U")


@overload
def then(value: Deferred[_T], f: Callable[[_T], _U | Deferred[_U]]) -> _U | Deferred[_U]: ...


@overload
def then(value: _T, f: Callable[[_T], _U | Deferred[_U]]) -> _U | Deferred[_U]: ...


def then(value: Any, f: Callable[[Any], _U | Deferred[_U]]) -> _U | Deferred[_U]:
    """
    Apply ``f`` to a value that may still be on its way.

    A plain value, or a Deferred that has already fired with a result (memory
    stores and caches answer at once), goes to ``f`` now and ``f``'s answer is
    returned as it is, without running a callback chain; ``f`` may then raise
    synchronously. Otherwise ``d.addCallback(f)`` is returned.

    A Deferred given here must be one its caller just received and owns: one that
    has fired and is not paused has run every callback added so far, so its
    ``result`` is final.
    """
    if not isinstance(value, Deferred):
        return f(value)
    if value.called and not value.paused:
        result = value.result
        if not isinstance(result, Failure):
            return f(result)
    return value.addCallback(f)


def as_deferred(value: _T | Deferred[_T]) -> Deferred[_T]:
    """``value`` as a Deferred (an already fired one for a plain value)."""
    return value if isinstance(value, Deferred) else defer.succeed(value)


class Throttled(SipError):
    """
    The source is blocked for failed authentications: answered 403 without
    looking at the credentials, so guessing gets nowhere; statelessly, so a
    spoofed request in a blocked address's name is answered once.
    """

    stateless = True

    def __init__(self, source: str) -> None:
        super().__init__(403, "Forbidden")
        self.source = source


def names_target(digest_uri: str, request: Request) -> bool:
    """
    Whether a digest ``uri`` names the request's target: a SIP URI with the same
    user and host as the Request-URI (parameters and port aside), or one without
    a user whose host is the Request-URI's (SIPp's default, the address it sends
    to; with or without the ``sip:`` scheme). A non-SIP Request-URI must be
    repeated exactly.
    """
    target = request.uri
    text = digest_uri.strip()
    if not target.is_sip:
        return text == request.uri_text
    uri = _parse_digest_uri(text)
    if uri is None or not uri.is_sip or uri.host != target.host:
        return False
    return uri.user is None or uri.user_unescaped == target.user_unescaped


def _parse_digest_uri(text: str) -> URI | None:
    if not text[:5].lower().startswith(("sip:", "sips:")):
        text = "sip:" + text  # SIPp's "host:port"
    try:
        return parse_uri(text)
    except SipParseError:
        return None


def _refusal(
    proxy: bool, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()
) -> SipError:
    """
    An answer given before the requester is known. To an INVITE (``proxy``) it
    is sent statelessly, as Kamailio sends its 407: a request from a spoofed
    address gets one response, not one retransmitted until Timer H (RFC 3261
    §17.2.1), so Warden does not multiply traffic towards a victim.
    """
    error = SipError(status, reason, headers)
    error.stateless = proxy
    return error


class Authenticator:
    """
    Checks digest credentials of requests.

    Args:
        clock: time source.
        directory: where extensions and their HA1 values live.
        nonces: nonce issuer and checker.
        throttle: failed-authentication throttle per source address.
        realm: the digest realm.
        algorithms: algorithms offered by default, in order.
        accept_rfc2069: accept responses without ``qop`` (RFC 2069); else they
            are refused with 403 (logged at most once a minute).
        fips: FIPS mode (``[security] fips``): only SHA-256 is offered, whatever
            an extension lists, and MD5 credentials (``algorithm=MD5`` or none)
            are answered with a fresh SHA-256 challenge and counted in
            ``warden_sip_auth_fips_refused_total``.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        directory: IDirectory,
        nonces: NonceManager,
        throttle: AuthThrottle,
        realm: str,
        algorithms: tuple[str, ...],
        accept_rfc2069: bool = False,
        fips: bool = False,
    ) -> None:
        self._clock = clock
        self.fips = fips
        self._fips_logged_at: float | None = None
        self.accept_rfc2069 = accept_rfc2069
        self._rfc2069_logged_at: float | None = None
        # Extension number -> when its realm mismatch was last logged.
        self._realm_logged_at: dict[str, float] = {}
        self._directory = directory
        self.nonces = nonces
        self.throttle = throttle
        self.realm = realm
        self.algorithms = algorithms

    def authenticate(
        self, request: Request, flow: Flow, proxy: bool = False
    ) -> Deferred[Extension]:
        """
        Fire with the authenticated Extension, or fail with SipError (401/407
        challenge, 403; Throttled is a 403 too).
        """
        try:
            return as_deferred(self.check(request, flow, proxy))
        except Exception:
            return defer.fail()

    def check(
        self, request: Request, flow: Flow, proxy: bool = False
    ) -> Extension | Deferred[Extension]:
        """
        L{authenticate} without a Deferred when the directory answers at once:
        the authenticated Extension is returned, or SipError raised, now.
        Otherwise a Deferred that fires or fails as L{authenticate}'s.
        """
        creds = self._credentials(request, proxy)
        if creds is not None:
            user = creds.username
        else:
            # Who is asking: the AOR registering (To) or the caller (From).
            claimed = request.from_ if proxy else request.to
            user = claimed.uri.user_unescaped or ""
        if self.throttle.is_blocked(flow.host, user):
            metrics.THROTTLED.inc()
            raise Throttled(flow.host)
        if creds is not None and not names_target(creds.uri, request):
            self._rejected(flow, "digest uri names another target", user)
            raise _refusal(proxy, 400, "Digest uri does not match the Request-URI")
        return then(
            self._directory.get_extension(user),
            lambda extension: self._verify(request, flow, proxy, creds, user, extension),
        )

    def _verify(
        self,
        request: Request,
        flow: Flow,
        proxy: bool,
        creds: Credentials | None,
        user: str,
        extension: Extension | None,
    ) -> Extension:
        """Check ``creds`` against ``extension``; raise SipError unless they hold."""
        offered = self._algorithms_for(extension)
        if creds is None or creds.algorithm not in offered:
            if creds is not None and self.fips and creds.algorithm not in FIPS_ALGORITHMS:
                self._refused_fips(flow, creds.algorithm, user)
            raise self._challenge(flow, proxy, offered)
        state = self.nonces.check(creds.nonce, flow.host)
        if state is NonceState.INVALID:
            # Forged, or issued to another address (a spoofed source never saw
            # our challenge): challenged, not counted, so it blocks no one.
            self._rejected(flow, "forged or foreign nonce", user)
            raise self._challenge(flow, proxy, offered)
        if creds.qop is None and not self.accept_rfc2069:
            self._refused_rfc2069(flow, user)  # RFC 7616 §3.4: qop is required
            raise SipError(403, "Forbidden")
        if extension is not None and extension.realm != self.realm:
            # Stored for another realm: no answer can match, however right the
            # phone's password. Said in the log, not counted (no guess checked).
            self._realm_mismatch(flow, extension)
            raise SipError(403, "Forbidden")
        if (
            extension is None
            or not extension.enabled
            or not self._hash_ok(creds, extension, request.method)
        ):
            self._failed(flow, "wrong credentials", user)
            raise SipError(403, "Forbidden")
        if state is NonceState.STALE:
            raise self._challenge(flow, proxy, offered, stale=True)
        if not self._count_ok(creds):
            # The right answer seen before: a replay guesses nothing, so it is
            # challenged and not counted (a captured packet blocks no one).
            self._rejected(flow, "replayed nonce-count", user)
            raise self._challenge(flow, proxy, offered)
        return extension

    def _credentials(self, request: Request, proxy: bool) -> Credentials | None:
        header = "Proxy-Authorization" if proxy else "Authorization"
        for value in request.get_all(header):
            try:
                creds = parse_credentials(value)
            except SipParseError as e:
                raise _refusal(proxy, 400, "Malformed credentials") from e
            if creds is not None and creds.realm == self.realm:
                return creds
        return None

    def _algorithms_for(self, extension: Extension | None) -> tuple[str, ...]:
        if extension is not None and extension.algorithms:
            offered = tuple(a for a in extension.algorithms if a in ALGORITHMS)
        else:
            offered = self.algorithms
        if self.fips:
            return tuple(a for a in offered if a in FIPS_ALGORITHMS) or FIPS_ALGORITHMS
        return offered

    def _hash_ok(self, creds: Credentials, extension: Extension, method: str) -> bool:
        if creds.qop not in (None, "auth"):
            return False
        ha1 = extension.ha1_md5 if creds.algorithm == "MD5" else extension.ha1_sha256
        if not ha1:
            return False
        expected = expected_response(creds, ha1, method).encode()
        # Bytes, so that a non-ASCII response is simply wrong, not an error.
        return hmac.compare_digest(expected, creds.response.encode("utf-8", "replace"))

    def _count_ok(self, creds: Credentials) -> bool:
        if creds.qop is None:
            return self.nonces.use(creds.nonce, 1)
        if creds.nc is None or creds.cnonce is None:
            return False
        try:
            count = int(creds.nc, 16)
        except ValueError:
            return False
        return self.nonces.use(creds.nonce, count)

    def _challenge(
        self, flow: Flow, proxy: bool, algorithms: tuple[str, ...], stale: bool = False
    ) -> SipError:
        nonce = self.nonces.issue(flow.host)
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        headers = tuple((name, challenge(self.realm, nonce, a, stale)) for a in algorithms)
        if proxy:
            return _refusal(proxy, 407, "Proxy Authentication Required", headers)
        return SipError(401, "Unauthorized", headers)

    def _failed(self, flow: Flow, why: str, user: str) -> None:
        """A failure with a nonce issued to this source: counted towards blocking."""
        metrics.AUTH_FAILURES.inc()
        if self.throttle.record_failure(flow.host, user):
            self.log.warn(
                "Blocking {source} (or {user} at it) for {seconds}s after repeated"
                " authentication failures",
                source=flow.host,
                user=user[: AuthThrottle.USER_KEY_CHARS],
                seconds=self.throttle.block_seconds,
            )
        self._rejected(flow, why, user)

    def _realm_mismatch(self, flow: Flow, extension: Extension) -> None:
        """Log, at most every ``REALM_LOG_INTERVAL`` seconds per extension, why it fails."""
        metrics.AUTH_FAILURES.inc()
        now = self._clock.seconds()
        last = self._realm_logged_at.get(extension.number)
        if last is not None and now - last < REALM_LOG_INTERVAL:
            return
        if len(self._realm_logged_at) >= 1000:
            self._realm_logged_at.clear()
        self._realm_logged_at[extension.number] = now
        self.log.warn(
            "Extension {number} from {source} cannot authenticate: its password is stored"
            " for realm {stored!r} but this server's realm is {realm!r}; run with that"
            " realm ([server] realm or --domain) or set a new password (wardenctl"
            " extension set {number} --new-password)",
            number=extension.number,
            source=flow.host,
            stored=extension.realm,
            realm=self.realm,
        )

    def check_realms(self) -> Deferred[int]:
        """
        At start-up: count the extensions whose digests were stored for another
        realm than this server's and say so in one warning line with the fix
        (their phones cannot register). Fires with that count.
        """

        def counted(extensions: list[Extension]) -> int:
            foreign = Counter(e.realm for e in extensions if e.realm != self.realm)
            total = sum(foreign.values())
            if total:
                self.log.warn(
                    "{count} of {extensions} extensions have passwords stored for another"
                    " realm ({realms}) than this server's realm {realm!r}: their phones"
                    " cannot register. Start Warden with the realm they were made for"
                    " ([server] realm, or --domain), or set new passwords (wardenctl"
                    " --config FILE extension set NUMBER --new-password)",
                    count=total,
                    extensions=len(extensions),
                    realms=", ".join(repr(r) for r, _ in foreign.most_common(3)),
                    realm=self.realm,
                )
            return total

        return self._directory.list_extensions().addCallback(counted)

    def _refused_rfc2069(self, flow: Flow, user: str) -> None:
        """
        An answer without qop to a nonce issued to this source: refused and
        counted like wrong credentials, and said once a minute at most.
        """
        self._failed(flow, "digest without qop (RFC 2069)", user)
        now = self._clock.seconds()
        if self._rfc2069_logged_at is not None and now - self._rfc2069_logged_at < 60.0:
            return
        self._rfc2069_logged_at = now
        self.log.info(
            "Refused digest credentials without qop (RFC 2069) for {user} from {source};"
            " set [registrar] accept_rfc2069 = true if such phones must register",
            user=user[: AuthThrottle.USER_KEY_CHARS],
            source=flow.host,
        )

    def _refused_fips(self, flow: Flow, algorithm: str, user: str) -> None:
        """
        Credentials in an algorithm FIPS mode does not allow: counted (not as a
        guess: no hash was checked) and said once a minute at most.
        """
        metrics.AUTH_FIPS_REFUSED.inc()
        now = self._clock.seconds()
        if self._fips_logged_at is not None and now - self._fips_logged_at < 60.0:
            return
        self._fips_logged_at = now
        self.log.warn(
            "Refused {algorithm} digest credentials for {user} from {source}: FIPS mode"
            " ([security] fips) allows SHA-256 only; the phone must answer the SHA-256"
            " challenge (RFC 8760)",
            algorithm=algorithm[:16],
            user=user[: AuthThrottle.USER_KEY_CHARS],
            source=flow.host,
        )

    def _rejected(self, flow: Flow, why: str, user: str) -> None:
        self.log.debug(
            "Authentication failed for {user} from {source}: {why}",
            user=user,
            source=flow.host,
            why=why,
        )
