"""
The certificates of SHAKEN PASSporTs (RFC 8224 §6.2, ATIS-1000074 §5.3):
fetching ``x5u`` over HTTPS with SSRF defences, a size cap, a time limit and
a cache, and validating the chain against the configured STI-CA trust
anchors.

SSRF (server-side request forgery): an ``x5u`` comes from the network, so
only ``https`` URLs are fetched, never with credentials in the URL; with
``x5u_allow`` set only URLs matching it are; and a host that is (or resolves
to) a loopback, private, link-local, multicast or otherwise non-global
address is refused unless the URL matches ``x5u_allow`` explicitly. The
connection goes to the address checked (no second resolution).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from warden.features.passport import BAD_INFO, UNSUPPORTED, IdentityError
from warden.tls import client_tls_options

__all__ = ["CertificateFetcher", "UrlPolicy", "load_anchors", "public_key_of"]

_MAX_URL = 2048
_CACHE_ENTRIES = 256
#: Certificate URLs fetched at once, at most (a flood of calls naming new
#: URLs is refused rather than opening connections without bound).
MAX_FETCHES = 32


class UrlPolicy:
    """
    Which ``x5u`` URLs may be fetched (see the module docstring).

    Args:
        allow: ``x5u_allow``: URL prefixes (``https://certs.example.net/``)
            or host names; empty: any public HTTPS host.
    """

    def __init__(self, allow: Sequence[str]) -> None:
        self.allow = tuple(allow)

    def check(self, url: str) -> bool:
        """
        Whether ``x5u_allow`` lists ``url`` explicitly, once it may be fetched.

        Raises:
            IdentityError: 436 for a URL that is not fetched.
        """
        if len(url) > _MAX_URL or not (url.isascii() and url.isprintable()):
            raise IdentityError(BAD_INFO, "x5u_refused", "x5u is not a short ASCII URL")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises for a bad port)
        except ValueError:
            raise IdentityError(BAD_INFO, "x5u_refused", "x5u is not a URL") from None
        if parts.scheme != "https":
            raise IdentityError(BAD_INFO, "x5u_refused", "x5u is not an https URL")
        if "@" in parts.netloc or not parts.hostname:
            raise IdentityError(BAD_INFO, "x5u_refused", "x5u has no host, or credentials")
        host = parts.hostname.lower()
        explicit = any(
            url.startswith(entry) if "://" in entry else host == entry.lower()
            for entry in self.allow
        )
        if self.allow and not explicit:
            raise IdentityError(BAD_INFO, "x5u_refused", f"x5u host {host} is not in x5u_allow")
        return explicit

    @staticmethod
    def check_address(address: str, explicit: bool) -> None:
        """
        Refuse a non-global address unless the URL was allowed explicitly.

        Raises:
            IdentityError: 436.
        """
        ip = ipaddress.ip_address(address)
        if not ip.is_global and not explicit:
            raise IdentityError(BAD_INFO, "x5u_refused", f"x5u host is an internal address ({ip})")


@implementer(IStreamClientEndpoint)
class _CheckedEndpoint:
    """Connects to the address the host resolves to, once it passed L{UrlPolicy}."""

    def __init__(self, fetcher: CertificateFetcher, host: str, port: int, explicit: bool) -> None:
        self.fetcher, self.host, self.port, self.explicit = fetcher, host, port, explicit

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        reactor: Any = self.fetcher.reactor
        try:
            address = str(ipaddress.ip_address(self.host))
        except ValueError:
            address = await reactor.resolve(self.host)
        UrlPolicy.check_address(address, self.explicit)
        kind = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        tcp = kind(reactor, address, self.port, timeout=self.fetcher.timeout)
        options = client_tls_options(self.host, self.fetcher.trust_root, self.fetcher.fips)
        protocol: IProtocol = await wrapClientTLS(options, tcp).connect(factory)
        return protocol


@implementer(IAgentEndpointFactory)
class _Endpoints:
    def __init__(self, fetcher: CertificateFetcher, explicit: bool) -> None:
        self.fetcher, self.explicit = fetcher, explicit

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:  # noqa: N802 (Twisted's name)
        host = uri.host.decode("ascii").strip("[]")
        return _CheckedEndpoint(self.fetcher, host, uri.port, self.explicit)


_CLEAN = Failure(ResponseDone())


class _LimitedBody(Protocol):
    """Collects a response body of at most ``limit`` bytes; aborts beyond it."""

    def __init__(self, limit: int, done: Deferred[bytes]) -> None:
        self.limit, self.done, self.chunks, self.size = limit, done, list[bytes](), 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            if not self.done.called:
                detail = f"certificate at x5u is over {self.limit} bytes"
                self.done.errback(IdentityError(BAD_INFO, "x5u_too_large", detail))
            cast(Any, self.transport).stopProducing()
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = _CLEAN) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(IdentityError(BAD_INFO, "x5u_fetch", "x5u response cut short"))


class CertificateFetcher:
    """
    Fetches and caches the certificate chains of ``x5u`` URLs.

    Args:
        reactor: timers, TCP and name resolution.
        policy: which URLs may be fetched.
        trust_root: trusted for the HTTPS servers (None: the system's CAs).
        max_bytes: the largest certificate resource accepted.
        timeout: seconds a fetch may take in all (connect, TLS, response).
        cache_seconds: how long a fetched chain is reused.
        fips: FIPS-approved TLS only (``[security] fips``).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        policy: UrlPolicy,
        trust_root: Any,
        max_bytes: int,
        timeout: float,
        cache_seconds: float,
        fips: bool = False,
    ) -> None:
        self.reactor, self.policy, self.trust_root = reactor, policy, trust_root
        self.fips = fips
        self.max_bytes, self.timeout, self.cache_seconds = max_bytes, timeout, cache_seconds
        self._cache: dict[str, tuple[float, list[x509.Certificate]]] = {}
        self._waiting: dict[str, list[Deferred[list[x509.Certificate]]]] = {}

    def fetch(self, url: str) -> Deferred[list[x509.Certificate]]:
        """
        The certificates at ``url`` (leaf first), from the cache while fresh.
        Calls asking for a URL being fetched wait for that fetch; at most
        L{MAX_FETCHES} URLs are fetched at once.

        Raises (as the Deferred's failure):
            IdentityError: 436 for a refused URL, a failed, slow, oversized or
                unreadable fetch, or too many fetches at once.
        """
        now = self.reactor.seconds()
        cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            return defer.succeed(cached[1])
        try:
            explicit = self.policy.check(url)
        except IdentityError:
            return defer.fail()
        waiting = self._waiting.get(url)
        if waiting is not None:
            follower: Deferred[list[x509.Certificate]] = Deferred()
            waiting.append(follower)
            return follower
        if len(self._waiting) >= MAX_FETCHES:
            detail = f"over {MAX_FETCHES} certificate fetches at once"
            return defer.fail(IdentityError(BAD_INFO, "x5u_fetch", detail))
        self._waiting[url] = []
        d = Deferred.fromCoroutine(self._fetch(url, explicit))
        d.addTimeout(self.timeout, self.reactor, onTimeoutCancel=_timed_out)
        d.addErrback(self._fetch_failed)
        d.addBoth(self._fetched, url)
        return d

    def _fetched(self, result: Any, url: str) -> Any:
        """Hand the outcome of ``url``'s fetch to the calls waiting for it too."""
        for follower in self._waiting.pop(url, []):
            if isinstance(result, Failure):
                follower.errback(result)
            else:
                follower.callback(result)
        return result

    async def _fetch(self, url: str, explicit: bool) -> list[x509.Certificate]:
        pool = HTTPConnectionPool(self.reactor, persistent=False)
        agent = Agent.usingEndpointFactory(self.reactor, _Endpoints(self, explicit), pool)
        headers = Headers({b"Accept": [b"application/pem-certificate-chain"]})
        response: IResponse = await agent.request(b"GET", url.encode("ascii"), headers)
        if response.code != 200:
            response.deliverBody(Protocol())  # discard it
            raise IdentityError(BAD_INFO, "x5u_fetch", f"x5u answered HTTP {response.code}")
        if isinstance(response.length, int) and response.length > self.max_bytes:
            response.deliverBody(Protocol())
            raise IdentityError(
                BAD_INFO, "x5u_too_large", f"certificate at x5u is over {self.max_bytes} bytes"
            )
        done: Deferred[bytes] = Deferred(lambda _: _stop(response))
        response.deliverBody(_LimitedBody(self.max_bytes, done))
        certificates = parse_certificates(await done)
        if len(self._cache) >= _CACHE_ENTRIES:
            self._cache.pop(next(iter(self._cache)))
        self._cache[url] = (self.reactor.seconds() + self.cache_seconds, certificates)
        return certificates

    @staticmethod
    def _fetch_failed(failure: Failure) -> Failure:
        if failure.check(IdentityError):
            return failure
        if failure.check(defer.TimeoutError, defer.CancelledError):
            raise IdentityError(BAD_INFO, "x5u_timeout", "x5u fetch timed out")
        detail = f"x5u fetch failed: {type(failure.value).__name__}"
        raise IdentityError(BAD_INFO, "x5u_fetch", detail)


def _timed_out(result: object, timeout: float) -> object:
    """Whatever the cancelled fetch ended with, it is a time-out."""
    raise IdentityError(BAD_INFO, "x5u_timeout", f"x5u fetch took over {timeout:g} s")


def _stop(response: IResponse) -> None:
    transport = getattr(response, "_transport", None)
    if transport is not None:
        transport.stopProducing()


def parse_certificates(data: bytes) -> list[x509.Certificate]:
    """
    The certificates of an ``x5u`` resource: PEM (leaf first, then
    intermediates), or one DER certificate.

    Raises:
        IdentityError: 436 when it holds none.
    """
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise IdentityError(BAD_INFO, "x5u_fetch", "x5u holds no certificate") from None


def load_anchors(pem: bytes) -> Store:
    """
    The STI-CA trust anchors of a PEM file.

    Raises:
        ValueError: it holds no certificate.
    """
    return Store(x509.load_pem_x509_certificates(pem))


def public_key_of(
    chain: Sequence[x509.Certificate], anchors: Store, now: float
) -> ec.EllipticCurvePublicKey:
    """
    The leaf's public key, once the chain (leaf first) validates against
    ``anchors`` at ``now`` (RFC 5280 path validation by
    ``cryptography.x509.verification``, Web PKI rules for the CAs, any
    extensions on the leaf: SHAKEN certificates carry no SAN) and the leaf's
    key is EC P-256 (ATIS-1000080). The TNAuthList extension is not checked.

    Raises:
        IdentityError: 437 for a chain that does not validate or a wrong key.
    """
    leaf, intermediates = chain[0], list(chain[1:])
    key = leaf.public_key()
    if not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"):
        raise IdentityError(UNSUPPORTED, "cert_invalid", "the certificate key is not EC P-256")
    at = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
        raise IdentityError(UNSUPPORTED, "cert_invalid", "the certificate is not valid now")
    verifier = (
        PolicyBuilder()
        .store(anchors)
        .time(at)
        .max_chain_depth(4)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as e:
        detail = f"the certificate chain is not trusted: {str(e)[:120]}"
        raise IdentityError(UNSUPPORTED, "cert_untrusted", detail) from None
    return key
