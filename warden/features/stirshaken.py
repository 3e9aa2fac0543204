"""
STIR/SHAKEN as a feature plugin (``stirshaken``, ``[stirshaken]``, ADR 0028):
outbound calls to trunks are signed, inbound calls from trunks verified.

- Signing (RFC 8224, RFC 8225, RFC 8588, ATIS-1000074): when ``private_key``
  is set, every INVITE to a trunk (L{warden.sip.external}) gets an
  ``Identity`` header with a SHAKEN PASSporT (ES256) for the caller ID sent
  and the number called; attestation A for an extension calling with a
  number of ``tn_owned``, B for an extension calling with another number, C
  for a caller Warden did not authenticate.
- Verification (RFC 8224 §6.2, ATIS-1000074 §5.3): when ``verify_inbound``
  is set, the Identity header of an INVITE from a trunk is checked (syntax,
  certificate fetched from ``x5u`` and validated against ``trust_anchors``,
  signature, ``iat`` within 60 s, orig and dest against the request). The
  result reaches the callee as ``verstat`` in the user part of the
  P-Asserted-Identity URI (ATIS-1000074 §5.3.1) and the call record;
  ``failure_policy = "reject"`` answers a failure with 438, 436, 437 or 403
  (Stale Date) instead.

With neither ``private_key`` nor ``verify_inbound`` the plugin does nothing.

Metrics: ``warden_stir_signed_total{attest}``, ``warden_stir_sign_skipped_total``,
``warden_stir_verified_total{result,reason}``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import Store
from prometheus_client import Counter
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from warden.config import parse_section
from warden.errors import ConfigError, SipError, SipParseError
from warden.features.passport import (
    IdentityError,
    attestation,
    check_passport,
    decode_passport,
    identity_header,
    matches_owned,
    normalise_tn,
    parse_identity,
    sign_passport,
    verify_signature,
)
from warden.features.smtp import load_trust_root
from warden.features.x5u import CertificateFetcher, UrlPolicy, load_anchors, public_key_of
from warden.interfaces import ICallHook, IWardenPlugin
from warden.sip.headers import parse_address
from warden.sip.hooks import CallAttempt, CallHookBase, OutgoingLeg

if TYPE_CHECKING:
    from warden.plugin import BuildContext
    from warden.sip.message import Request

__all__ = ["FAILED", "NO_VALIDATION", "PASSED", "StirShaken", "StirShakenConfig", "plugin"]

PASSED, FAILED, NO_VALIDATION = "TN-Validation-Passed", "TN-Validation-Failed", "No-TN-Validation"

SIGNED = Counter("warden_stir_signed_total", "Outbound INVITEs signed, by attestation", ["attest"])
SIGN_SKIPPED = Counter(
    "warden_stir_sign_skipped_total",
    "Outbound INVITEs to trunks left unsigned: the caller ID or number is no telephone number",
)
VERIFIED = Counter(
    "warden_stir_verified_total",
    "Inbound INVITEs from trunks checked, by result (passed, failed, none) and reason",
    ["result", "reason"],
)

_TN_PATTERN = re.compile(r"^[0-9xX]{1,15}$")
#: The ``<sip:USER@host...>`` of a P-Asserted-Identity (L{with_verstat}).
_PAI_URI = re.compile(r"<sips?:([^@;>]+)@([^>]*)>")
#: Seconds between two warnings of the same failure reason.
_WARN_INTERVAL = 10.0


def _fail(name: str, problem: str) -> ConfigError:
    return ConfigError(f"stirshaken.{name}", problem)


def _string(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str):
        raise _fail(attribute.name, f"must be a string, got {value!r}")


def _strings(check: re.Pattern[str] | None, expected: str) -> Any:
    def validate(instance: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, tuple) or not all(
            isinstance(v, str) and v and (check is None or check.match(v)) for v in value
        ):
            raise _fail(attribute.name, f"must be a list of {expected}, got {value!r}")

    return validate


def _number(low: float, high: float, integer: bool = False) -> Any:
    def validate(instance: Any, attribute: Any, value: Any) -> None:
        kinds = int if integer else (int, float)
        if (
            not isinstance(value, kinds)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            kind = "an integer" if integer else "a number"
            raise _fail(attribute.name, f"must be {kind} {low:g}..{high:g}, got {value!r}")

    return validate


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@attrs.frozen
class StirShakenConfig:
    """
    ``[stirshaken]``.

    Attributes:
        private_key: PEM file of the EC P-256 signing key ("" signs nothing).
        certificate_url: the ``x5u`` of the signing certificate (https).
        tn_owned: numbers this PBX attests with A (``x`` matches any digit).
        verify_inbound: verify the Identity of INVITEs from trunks.
        trust_anchors: PEM file of the STI-CA certificates trusted.
        x5u_allow: URL prefixes (ending in ``/``) or host names ``x5u`` may name (empty: any
            public host); an internal address only when listed here.
        fetch_ca: PEM file of the CAs trusted for the x5u HTTPS servers ("":
            the system's).
        max_cert_bytes: the largest certificate resource fetched.
        fetch_timeout: seconds a certificate fetch (and so the wait of a call
            being verified) may take.
        cache_seconds: how long a fetched certificate is reused.
        failure_policy: ``mark`` (pass the call with TN-Validation-Failed) or
            ``reject`` (answer 438/436/437/403).
    """

    SECTION: ClassVar[str] = "stirshaken"

    private_key: str = attrs.field(default="", validator=_string, repr=False)
    certificate_url: str = attrs.field(default="", validator=_string)
    tn_owned: tuple[str, ...] = attrs.field(
        default=(), converter=_tuple, validator=_strings(_TN_PATTERN, 'numbers like "1555123xxxx"')
    )
    verify_inbound: bool = attrs.field(default=False)
    trust_anchors: str = attrs.field(default="", validator=_string)
    x5u_allow: tuple[str, ...] = attrs.field(
        default=(), converter=_tuple, validator=_strings(None, "URL prefixes or host names")
    )
    fetch_ca: str = attrs.field(default="", validator=_string)
    max_cert_bytes: int = attrs.field(default=16384, validator=_number(512, 1048576, True))
    fetch_timeout: float = attrs.field(default=2.0, validator=_number(0.1, 30.0))
    cache_seconds: float = attrs.field(default=3600.0, validator=_number(0.0, 86400.0))
    failure_policy: str = attrs.field(default="mark")

    @verify_inbound.validator
    def _check_bool(self, attribute: Any, value: Any) -> None:
        if not isinstance(value, bool):
            raise _fail("verify_inbound", f"must be true or false, got {value!r}")

    @failure_policy.validator
    def _check_policy(self, attribute: Any, value: Any) -> None:
        if value not in ("mark", "reject"):
            raise _fail("failure_policy", f'must be "mark" or "reject", got {value!r}')

    def __attrs_post_init__(self) -> None:
        if self.private_key and not self.certificate_url.startswith("https://"):
            raise _fail("certificate_url", "must be an https URL when private_key is set")
        if self.verify_inbound and not self.trust_anchors:
            raise _fail("trust_anchors", "must name a PEM file when verify_inbound is true")
        for entry in self.x5u_allow:
            if "://" in entry and not entry.startswith("https://"):
                raise _fail("x5u_allow", f"{entry!r}: only https URLs are fetched")
            if "://" in entry and not entry.endswith("/"):
                raise _fail("x5u_allow", f"{entry!r}: a URL prefix must end with /")


def _read(name: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise _fail(name, f"cannot read {path}: {e.strerror}") from None


def load_private_key(path: str) -> ec.EllipticCurvePrivateKey:
    """
    The EC P-256 key of the PEM file at ``path`` (its contents never shown).

    Raises:
        ConfigError: unreadable, not a PEM private key, or not EC P-256.
    """
    try:
        key = serialization.load_pem_private_key(_read("private_key", path), password=None)
    except (ValueError, TypeError):
        raise _fail("private_key", f"{path} holds no unencrypted PEM private key") from None
    if not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"):
        raise _fail("private_key", f"{path} is not an EC P-256 key")
    return key


class StirShaken:
    """
    Signs and verifies calls' Identity headers.

    Args:
        clock: the reactor (``iat``, the fetch timer).
        config: ``[stirshaken]``.
        key: the signing key (None: no signing).
        anchors: the trust anchors (None: no verification).
        fetcher: fetches x5u certificates (None: no verification).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        config: StirShakenConfig,
        key: ec.EllipticCurvePrivateKey | None,
        anchors: Store | None,
        fetcher: CertificateFetcher | None,
    ) -> None:
        self.clock, self.config, self._key = clock, config, key
        self.anchors, self.fetcher = anchors, fetcher
        self._warned: dict[str, float] = {}

    # -- signing ------------------------------------------------------------------

    def sign(self, attempt: CallAttempt, leg: OutgoingLeg) -> None:
        """Add the Identity header to an INVITE to a trunk (a call with a target)."""
        target = attempt.target
        if self._key is None or target is None:
            return
        orig = normalise_tn(target.current.caller_id)
        dest = normalise_tn(target.number)
        if orig is None or dest is None:
            SIGN_SKIPPED.inc()
            return
        authenticated = bool(attempt.caller.realm) and "trunk-inbound" not in attempt.marks
        attest = attestation(authenticated, matches_owned(orig, self.config.tn_owned))
        x5u = self.config.certificate_url
        token, _ = sign_passport(self._key, x5u, attest, orig, [dest], int(self.clock.seconds()))
        leg.request.remove("Identity")
        leg.add_header("Identity", identity_header(token, x5u))
        attempt.stir_attest = attest
        SIGNED.labels(attest).inc()

    # -- verification -------------------------------------------------------------

    async def verify(self, attempt: CallAttempt) -> None:
        """
        Verify the Identity of a call from a trunk; set ``attempt.stir_verstat``
        (and ``stir_attest``).

        Raises:
            SipError: the verification failed and the policy rejects.
        """
        request = attempt.request
        values = request.get_all("Identity")
        if not values:
            attempt.stir_verstat = NO_VALIDATION
            VERIFIED.labels("none", "no_identity").inc()
            return
        first: IdentityError | None = None
        for value in values[:4]:
            try:
                attempt.stir_attest = await self._verified(value, request)
            except IdentityError as e:
                first = first or e
                continue
            attempt.stir_verstat = PASSED
            VERIFIED.labels("passed", "ok").inc()
            return
        assert first is not None
        attempt.stir_verstat = FAILED
        VERIFIED.labels("failed", first.reason).inc()
        self._warn(first)
        if self.config.failure_policy == "reject":
            raise SipError(first.status, first.phrase)

    async def _verified(self, value: str, request: Request) -> str:
        """The attestation of a verified Identity header value."""
        assert self.fetcher is not None and self.anchors is not None
        header = parse_identity(value)
        passport = decode_passport(header)
        chain = await self.fetcher.fetch(header.info)
        now = self.clock.seconds()
        verify_signature(header, public_key_of(chain, self.anchors, now))
        check_passport(passport, now, _caller_tn(request), _called_tns(request))
        return passport.attest

    def _warn(self, error: IdentityError) -> None:
        now = self.clock.seconds()
        if now - self._warned.get(error.reason, -math.inf) < _WARN_INTERVAL:
            return
        self._warned[error.reason] = now
        self.log.warn(
            "STIR/SHAKEN verification failed ({reason}): {detail}",
            reason=error.reason,
            detail=error.detail,
        )

    @staticmethod
    def mark(attempt: CallAttempt, leg: OutgoingLeg) -> None:
        """Put the verification result into the callee's P-Asserted-Identity."""
        if not attempt.stir_verstat:
            return
        pai = leg.request.get("P-Asserted-Identity")
        if pai:
            leg.request.set("P-Asserted-Identity", with_verstat(pai, attempt.stir_verstat))


def with_verstat(value: str, verstat: str) -> str:
    """
    A P-Asserted-Identity ``<sip:USER@host>`` with ``;verstat=`` added to its
    user part and ``user=phone`` to its URI (ATIS-1000074 §5.3.1); unchanged
    when it has no such URI.
    """
    match = _PAI_URI.search(value)
    if match is None:
        return value
    user, rest = match.group(1), match.group(2)
    if "user=phone" not in rest:
        rest += ";user=phone"
    start, end = match.span()
    scheme = value[start + 1 : match.start(1)]
    return f"{value[:start]}<{scheme}{user};verstat={verstat}@{rest}>{value[end:]}"


def _user_tn(value: str | None) -> str | None:
    try:
        user = parse_address(value or "").uri.user_unescaped
    except SipParseError:
        return None
    return normalise_tn(user) if user else None


def _caller_tn(request: Request) -> str | None:
    """The caller's TN: the P-Asserted-Identity user, else the From user."""
    return _user_tn(request.get("P-Asserted-Identity")) or _user_tn(request.get("From"))


def _called_tns(request: Request) -> list[str]:
    """The called TNs: the Request-URI user and the To user."""
    found = [normalise_tn(request.uri.user_unescaped or ""), _user_tn(request.get("To"))]
    return [tn for tn in found if tn]


@implementer(IPlugin, IWardenPlugin, ICallHook)
class StirShakenPlugin(CallHookBase):
    """STIR/SHAKEN: signs outbound trunk calls, verifies inbound ones."""

    name = "stirshaken"
    description = (
        "STIR/SHAKEN: Identity signing to trunks, verification from trunks ([stirshaken])"
    )
    sections: tuple[str, ...] = ("stirshaken",)
    needs: tuple[str, ...] = ()
    provides: tuple[str, ...] = ("stirshaken",)

    def __init__(self) -> None:
        self.service: StirShaken | None = None

    def parse_section(self, name: str, table: Any, filename: str | None) -> object:
        """``[stirshaken]`` into a L{StirShakenConfig}."""
        return parse_section(StirShakenConfig, name, table, filename)

    def make(self, context: BuildContext) -> None:
        """
        Read the key and trust anchors now (a bad file stops the start) and
        build L{StirShaken}; nothing when neither signing nor verification is on.

        Raises:
            ConfigError: an unreadable or unsuitable key or PEM file.
        """
        self.service = None
        config = context.config.plugin_sections.get("stirshaken")
        if not isinstance(config, StirShakenConfig):
            config = StirShakenConfig()
        if not (config.private_key or config.verify_inbound):
            return
        key = load_private_key(config.private_key) if config.private_key else None
        anchors, fetcher = None, None
        if config.verify_inbound:
            anchors = _anchors(config.trust_anchors)
            root = load_trust_root(config.fetch_ca, "stirshaken.fetch_ca")
            fetcher = CertificateFetcher(
                context.reactor, UrlPolicy(config.x5u_allow), root,
                config.max_cert_bytes, config.fetch_timeout, config.cache_seconds,
                context.config.security.fips,
            )  # fmt: skip
        self.service = StirShaken(context.reactor, config, key, anchors, fetcher)
        context.provide("stirshaken", self.service)

    def before_routing(self, attempt: CallAttempt) -> Deferred[None] | None:
        """Verify the Identity of a call from a trunk."""
        service = self.service
        if service is None or service.fetcher is None or "trunk-inbound" not in attempt.marks:
            return None
        return Deferred.fromCoroutine(service.verify(attempt))

    def leg_built(self, attempt: CallAttempt, leg: OutgoingLeg) -> None:
        """Sign an INVITE to a trunk; pass the verification result to a callee."""
        if self.service is not None:
            self.service.sign(attempt, leg)
            self.service.mark(attempt, leg)


def _anchors(path: str) -> Store:
    try:
        return load_anchors(_read("trust_anchors", path))
    except ValueError:
        raise _fail("trust_anchors", f"{path} holds no PEM certificate") from None


plugin = StirShakenPlugin()
