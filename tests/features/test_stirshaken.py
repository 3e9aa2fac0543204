"""
The STIR/SHAKEN plugin (L{warden.features.stirshaken}) and its certificate
handling (L{warden.features.x5u}): configuration, signing of calls to trunks
with the right attestation, verification of calls from trunks with a
verstat and the policy's response, SSRF refusal, oversized and slow
certificate fetches, chain validation. Clock-driven, no network.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import Certificate
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone

from tests.features.stir_pki import Issued, make_ca, make_leaf
from warden.config import parse_config_text
from warden.errors import ConfigError, SipError
from warden.features.passport import IdentityError, identity_header, sign_passport
from warden.features.stirshaken import (
    FAILED,
    NO_VALIDATION,
    PASSED,
    StirShaken,
    StirShakenConfig,
    with_verstat,
)
from warden.features.x5u import (
    MAX_FETCHES,
    CertificateFetcher,
    UrlPolicy,
    _LimitedBody,
    load_anchors,
    public_key_of,
)
from warden.model import Extension
from warden.plugin import BuildContext, discover, enabled_plugins
from warden.sip.external import Destination, RouteTarget
from warden.sip.flow import Flow
from warden.sip.hooks import CallAttempt, OutgoingLeg
from warden.sip.message import Request
from warden.sip.parser import parse_datagram

X5U = "https://certs.example.net/warden.pem"
NOW = 1_765_000_000.0
CALLER_ID, NUMBER = "15551230042", "15552345678"


def _config(**kw: Any) -> StirShakenConfig:
    return StirShakenConfig(**kw)


def _write(data: bytes) -> str:
    fd, path = tempfile.mkstemp()
    os.write(fd, data)
    os.close(fd)
    return path


class ConfigTests(SynchronousTestCase):
    """``[stirshaken]``: a bad value names the key."""

    def problem(self, text: str) -> ConfigError:
        """Parse ``text`` as a Warden configuration: it must fail."""
        return self.assertRaises(ConfigError, parse_config_text, text, "warden.toml", discover())

    def test_defaults(self) -> None:
        """Nothing is signed or verified by default; the policy marks."""
        config = StirShakenConfig()
        self.assertEqual((config.private_key, config.verify_inbound), ("", False))
        self.assertEqual((config.failure_policy, config.fetch_timeout), ("mark", 2.0))

    def test_bad_values(self) -> None:
        """Each bad value is refused naming its key and the file."""
        cases = {
            'private_key = "/k.pem"\ncertificate_url = "http://x/c.pem"': "certificate_url",
            "verify_inbound = true": "trust_anchors",
            'verify_inbound = "yes"': "verify_inbound",
            'failure_policy = "drop"': "failure_policy",
            'tn_owned = ["1555-123"]': "tn_owned",
            "tn_owned = [15551230000]": "tn_owned",
            'x5u_allow = ["http://certs/"]': "x5u_allow",
            'x5u_allow = ["https://certs.example.net"]': "x5u_allow",
            "max_cert_bytes = 10": "max_cert_bytes",
            "fetch_timeout = 0": "fetch_timeout",
            "fetch_timeout = 100": "fetch_timeout",
            "colour = 1": "colour",
        }
        for body, key in cases.items():
            error = self.problem(f"[stirshaken]\n{body}\n")
            self.assertEqual(error.path, f"stirshaken.{key}", body)
            self.assertIn("warden.toml", str(error))

    def test_key_files(self) -> None:
        """An unreadable key, or one not EC P-256, stops the start; its contents never shown."""
        from warden.features.stirshaken import load_private_key

        rsa_pem = Issued(rsa.generate_private_key(65537, 2048), make_ca().cert).key_pem
        p384 = Issued(ec.generate_private_key(ec.SECP384R1()), make_ca().cert).key_pem
        for data, words in ((rsa_pem, "not an EC P-256"), (p384, "not an EC P-256"),
                            (b"junk", "no unencrypted PEM")):  # fmt: skip
            path = _write(data)
            self.addCleanup(os.unlink, path)
            error = self.assertRaises(ConfigError, load_private_key, path)
            self.assertEqual(error.path, "stirshaken.private_key")
            self.assertIn(words, str(error))
            self.assertNotIn("PRIVATE KEY", str(error))
        error = self.assertRaises(ConfigError, load_private_key, "/nonexistent/key.pem")
        self.assertIn("cannot read /nonexistent/key.pem", str(error))


class PolicyTests(SynchronousTestCase):
    """Which x5u URLs are fetched (SSRF defence)."""

    def refused(self, policy: UrlPolicy, url: str, address: str | None = None) -> str:
        """``url`` (resolving to ``address``) must be refused with 436; the detail."""

        def check() -> None:
            explicit = policy.check(url)
            if address is not None:
                policy.check_address(address, explicit)

        error = self.assertRaises(IdentityError, check)
        self.assertEqual((error.status, error.reason), (436, "x5u_refused"))
        return error.detail

    def test_scheme_and_form(self) -> None:
        """Only https, with a host, no credentials, short ASCII."""
        policy = UrlPolicy(())
        self.assertIn("not an https", self.refused(policy, "http://certs.example.net/c.pem"))
        self.assertIn("not an https", self.refused(policy, "file:///etc/passwd"))
        self.assertIn("credentials", self.refused(policy, "https://u:p@certs.example.net/"))
        self.assertIn("no host", self.refused(policy, "https:///c.pem"))
        self.assertIn("not a URL", self.refused(policy, "https://certs.example.net:99999/"))
        self.assertIn("ASCII", self.refused(policy, "https://c\u00e9rts.example/"))
        self.assertIn("ASCII", self.refused(policy, "https://certs.example.net/" + "a" * 3000))

    def test_internal_addresses(self) -> None:
        """Loopback, private, link-local (cloud metadata) and IPv6 loopback are refused."""
        policy = UrlPolicy(())
        for address in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "169.254.169.254", "::1",
                        "0.0.0.0", "fc00::1"):  # fmt: skip
            detail = self.refused(policy, "https://certs.example.net/c.pem", address)
            self.assertIn("internal address", detail)
        explicit = policy.check("https://certs.example.net/c.pem")
        policy.check_address("93.184.216.34", explicit)  # a public address passes

    def test_allow_list(self) -> None:
        """With x5u_allow only listed URLs pass, and a listed one may be internal."""
        policy = UrlPolicy(("https://127.0.0.1:8443/", "certs.example.net"))
        self.assertIn("not in x5u_allow", self.refused(policy, "https://other.example/c.pem"))
        self.assertIn("not in x5u_allow", self.refused(policy, "https://127.0.0.1:9443/c.pem"))
        explicit = policy.check("https://127.0.0.1:8443/c.pem")
        self.assertTrue(explicit)
        policy.check_address("127.0.0.1", explicit)
        explicit = policy.check("https://CERTS.example.net/c.pem")
        self.assertTrue(explicit)


class FetchTests(SynchronousTestCase):
    """Fetching certificates: size cap, time limit, cache."""

    def fetcher(self, reactor: Any, **kw: Any) -> CertificateFetcher:
        """A fetcher allowing 127.0.0.1 (1 kB, 2 s, 60 s cache unless ``kw``)."""
        settings: dict[str, Any] = {"max_bytes": 1024, "timeout": 2.0, "cache_seconds": 60.0}
        settings.update(kw)
        return CertificateFetcher(reactor, UrlPolicy(("https://127.0.0.1:8443/",)), None,
                                  **settings)  # fmt: skip

    def test_refused_url_fails_at_once(self) -> None:
        """A refused URL fails with 436 without any connection."""
        reactor = MemoryReactorClock()
        failure = self.failureResultOf(
            self.fetcher(reactor).fetch("https://10.0.0.1/c.pem"), IdentityError
        )
        self.assertEqual(failure.value.reason, "x5u_refused")
        self.assertEqual(reactor.tcpClients, [])

    def test_timeout(self) -> None:
        """A server that never answers: the fetch fails as x5u_timeout when the time is up."""
        reactor = MemoryReactorClock()
        d = self.fetcher(reactor).fetch("https://127.0.0.1:8443/c.pem")
        self.assertEqual([c[:2] for c in reactor.tcpClients], [("127.0.0.1", 8443)])
        reactor.advance(1.99)
        self.assertNoResult(d)
        reactor.advance(0.02)
        failure = self.failureResultOf(d, IdentityError)
        self.assertEqual((failure.value.status, failure.value.reason), (436, "x5u_timeout"))

    def test_shared_and_bounded(self) -> None:
        """
        Calls asking for a URL being fetched share that fetch (and its
        outcome); beyond MAX_FETCHES URLs at once a fetch fails at once.
        """
        reactor = MemoryReactorClock()
        fetcher = self.fetcher(reactor)
        first = fetcher.fetch("https://127.0.0.1:8443/c.pem")
        second = fetcher.fetch("https://127.0.0.1:8443/c.pem")
        self.assertEqual(len(reactor.tcpClients), 1)
        others = [fetcher.fetch(f"https://127.0.0.1:8443/{n}.pem") for n in range(MAX_FETCHES - 1)]
        self.assertEqual(len(reactor.tcpClients), MAX_FETCHES)
        refused = self.failureResultOf(
            fetcher.fetch("https://127.0.0.1:8443/more.pem"), IdentityError
        )
        self.assertIn("at once", refused.value.detail)
        reactor.advance(2.0)
        for d in (first, second, *others):
            self.assertEqual(self.failureResultOf(d, IdentityError).value.reason, "x5u_timeout")
        fetcher.fetch("https://127.0.0.1:8443/more.pem")  # room again
        self.assertEqual(len(reactor.tcpClients), MAX_FETCHES + 1)

    def test_oversized_body(self) -> None:
        """A body over the cap fails as x5u_too_large and the transfer is stopped."""
        done: Deferred[bytes] = Deferred()
        body = _LimitedBody(1024, done)
        transport = StringTransport()
        body.makeConnection(transport)
        body.dataReceived(b"x" * 1000)
        self.assertNoResult(done)
        body.dataReceived(b"x" * 25)
        failure = self.failureResultOf(done, IdentityError)
        self.assertEqual((failure.value.status, failure.value.reason), (436, "x5u_too_large"))
        self.assertEqual(transport.producerState, "stopped")
        body.connectionLost(Failure(ResponseDone()))  # nothing more happens

    def test_body_within_limit(self) -> None:
        """A body up to the cap arrives whole; a cut connection is x5u_fetch."""
        done: Deferred[bytes] = Deferred()
        body = _LimitedBody(1024, done)
        body.makeConnection(StringTransport())
        body.dataReceived(b"a" * 1000)
        body.dataReceived(b"b" * 24)
        body.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.successResultOf(done), b"a" * 1000 + b"b" * 24)
        cut: Deferred[bytes] = Deferred()
        body = _LimitedBody(1024, cut)
        body.makeConnection(StringTransport())
        body.connectionLost(Failure(ConnectionError()))
        self.assertEqual(self.failureResultOf(cut, IdentityError).value.reason, "x5u_fetch")

    def test_cache(self) -> None:
        """A fetched chain is reused for cache_seconds, then fetched again."""
        reactor = MemoryReactorClock()
        fetched: list[str] = []
        chain = [make_ca().cert]

        class Counting(CertificateFetcher):
            async def _fetch(self, url: str, explicit: bool) -> list[Certificate]:
                fetched.append(url)
                self._cache[url] = (self.reactor.seconds() + self.cache_seconds, chain)
                return chain

        fetcher = Counting(reactor, UrlPolicy(()), None, 1024, 2.0, 60.0)
        for _ in range(2):
            self.assertEqual(self.successResultOf(fetcher.fetch(X5U)), chain)
        self.assertEqual(len(fetched), 1)
        reactor.advance(61)
        self.successResultOf(fetcher.fetch(X5U))
        self.assertEqual(len(fetched), 2)


class ChainTests(SynchronousTestCase):
    """Certificate chains against the trust anchors."""

    def setUp(self) -> None:
        """A CA trusted as the anchor."""
        self.ca = make_ca()
        self.anchors = load_anchors(self.ca.pem)
        self.now = __import__("time").time()

    def test_valid(self) -> None:
        """A leaf of the CA (directly, or through an intermediate) gives its key."""
        leaf = make_leaf(self.ca)
        key = public_key_of([leaf.cert], self.anchors, self.now)
        self.assertEqual(key.public_numbers(), leaf.key.public_key().public_numbers())
        intermediate = make_ca("Intermediate", issuer=self.ca)
        deep = make_leaf(intermediate)
        public_key_of([deep.cert, intermediate.cert], self.anchors, self.now)

    def refused(self, chain: list[Certificate]) -> IdentityError:
        """``chain`` must be refused with 437; the error."""
        error = self.assertRaises(IdentityError, public_key_of, chain, self.anchors, self.now)
        self.assertEqual((error.status, error.phrase), (437, "Unsupported Credential"))
        return error

    def test_untrusted(self) -> None:
        """A leaf of another CA, or an intermediate missing, is cert_untrusted."""
        self.assertEqual(self.refused([make_leaf(make_ca("Rogue")).cert]).reason, "cert_untrusted")
        intermediate = make_ca("Intermediate", issuer=self.ca)
        self.assertEqual(self.refused([make_leaf(intermediate).cert]).reason, "cert_untrusted")

    def test_wrong_key_or_dates(self) -> None:
        """An RSA or P-384 leaf, an expired or future leaf, is cert_invalid."""
        for leaf in (
            make_leaf(self.ca, key=rsa.generate_private_key(65537, 2048)),
            make_leaf(self.ca, key=ec.generate_private_key(ec.SECP384R1())),
            make_leaf(self.ca, valid_days=(-10, -1)),
            make_leaf(self.ca, valid_days=(1, 10)),
        ):
            self.assertEqual(self.refused([leaf.cert]).reason, "cert_invalid")


class _FakeFetcher:
    """Answers every x5u with ``chain`` (or fails with ``error``)."""

    def __init__(self, chain: list[Certificate], error: IdentityError | None = None) -> None:
        self.chain, self.error, self.urls = chain, error, list[str]()

    def fetch(self, url: str) -> Deferred[list[Certificate]]:
        self.urls.append(url)
        if self.error is not None:
            return defer.fail(self.error)
        return defer.succeed(self.chain)


def _attempt(caller: Extension, headers: list[tuple[str, str]], marks: set[str]) -> CallAttempt:
    request = Request("INVITE", f"sip:{NUMBER}@pbx.example", headers)
    return CallAttempt(caller, NUMBER, request, Flow("udp", "192.0.2.1", 5060), marks)


def _leg(caller_id: str = CALLER_ID) -> OutgoingLeg:
    return OutgoingLeg(Request("INVITE", f"sip:{NUMBER}@itsp.example", [
        ("From", f"<sip:{caller_id}@itsp.example>;tag=1"),
        ("P-Asserted-Identity", f"<sip:{caller_id}@itsp.example>"),
    ]))  # fmt: skip


def _target(caller_id: str = CALLER_ID) -> RouteTarget:
    flow = Flow("udp", "192.0.2.9", 5060)
    destination = Destination("itsp", flow, f"sip:{NUMBER}@itsp.example", "itsp.example",
                               caller_id)  # fmt: skip
    return RouteTarget(NUMBER, (destination,))


EXTENSION = Extension("2000", "Alice", "pbx.example", "h1", "h2")
OUTSIDE = Extension(CALLER_ID, "", "", "", "")


class SigningTests(SynchronousTestCase):
    """Calls to trunks get an Identity header with the right attestation."""

    def setUp(self) -> None:
        """A signer owning 1555123xxxx, at NOW."""
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.clock = MemoryReactorClock()
        self.clock.advance(NOW)
        config = _config(private_key="k", certificate_url=X5U, tn_owned=("1555123xxxx",))
        self.stir = StirShaken(self.clock, config, self.key, None, None)

    def signed(self, caller: Extension, caller_id: str, marks: set[str]) -> dict[str, Any]:
        """Sign a leg; the header's claims, checked with PyJWT."""
        attempt = _attempt(caller, [], marks)
        attempt.target = _target(caller_id)
        leg = _leg(caller_id)
        self.stir.sign(attempt, leg)
        [value] = leg.request.get_all("Identity")
        token, _, params = value.partition(";")
        self.assertEqual(params, f"info=<{X5U}>;alg=ES256;ppt=shaken")
        claims: dict[str, Any] = jwt.decode(
            token, self.key.public_key(), algorithms=["ES256"], options={"verify_iat": False}
        )
        self.assertEqual(attempt.stir_attest, claims["attest"])
        return claims

    def test_attestations(self) -> None:
        """A: an extension with an owned number; B: another number; C: a caller from outside."""
        claims = self.signed(EXTENSION, CALLER_ID, set())
        self.assertEqual(
            (claims["attest"], claims["orig"], claims["dest"], claims["iat"]),
            ("A", {"tn": CALLER_ID}, {"tn": [NUMBER]}, int(NOW)),
        )
        self.assertEqual(self.signed(EXTENSION, "+1 555 999 0000", set())["attest"], "B")
        self.assertEqual(self.signed(OUTSIDE, CALLER_ID, {"trunk-inbound"})["attest"], "C")

    def test_not_a_trunk_or_not_a_number(self) -> None:
        """Calls to extensions, and caller IDs that are no number, are not signed."""
        attempt = _attempt(EXTENSION, [], set())
        leg = _leg()
        self.stir.sign(attempt, leg)
        self.assertEqual(leg.request.get_all("Identity"), [])
        attempt.target = _target("anonymous")
        self.stir.sign(attempt, leg)
        self.assertEqual((leg.request.get_all("Identity"), attempt.stir_attest), ([], ""))


class VerificationTests(SynchronousTestCase):
    """Calls from trunks: verstat and the failure policy."""

    def setUp(self) -> None:
        """A CA, a SHAKEN leaf of it, a clock at NOW."""
        self.ca = make_ca(at=NOW)
        self.leaf = make_leaf(self.ca, at=NOW)
        self.clock = MemoryReactorClock()
        self.clock.advance(NOW)

    def verify(
        self, identity: str | None, fetcher: Any = None, policy: str = "mark",
        orig: str = CALLER_ID,
    ) -> CallAttempt:  # fmt: skip
        """Verify a call from a trunk carrying ``identity``; the attempt after it."""
        config = _config(verify_inbound=True, trust_anchors="a", failure_policy=policy)
        fetcher = fetcher or _FakeFetcher([self.leaf.cert])
        stir = StirShaken(self.clock, config, None, load_anchors(self.ca.pem), fetcher)
        headers = [("From", f"<sip:{orig}@itsp.example>;tag=1"),
                   ("To", f"<sip:{NUMBER}@pbx.example>")]  # fmt: skip
        if identity is not None:
            headers.append(("Identity", identity))
        attempt = _attempt(OUTSIDE, headers, {"trunk-inbound"})
        failures: list[Failure] = []
        Deferred.fromCoroutine(stir.verify(attempt)).addErrback(failures.append)
        if failures:
            failures[0].raiseException()
        return attempt

    def identity(self, iat: float = NOW, dest: str = NUMBER, key: Any = None) -> str:
        """An Identity header signed with the leaf's key (or ``key``)."""
        token, _ = sign_passport(key or self.leaf.key, X5U, "A", CALLER_ID, [dest], int(iat))
        return identity_header(token, X5U)

    def test_passed(self) -> None:
        """A valid header: TN-Validation-Passed, the PASSporT's attestation recorded."""
        attempt = self.verify(self.identity())
        self.assertEqual((attempt.stir_verstat, attempt.stir_attest), (PASSED, "A"))

    def test_compact_form(self) -> None:
        """An Identity header received in its compact form ``y`` (RFC 8224 §4) is verified."""
        config = _config(verify_inbound=True, trust_anchors="a")
        fetcher = _FakeFetcher([self.leaf.cert])
        stir = StirShaken(self.clock, config, None, load_anchors(self.ca.pem), fetcher)
        data = (
            f"INVITE sip:{NUMBER}@pbx.example SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
            f"From: <sip:{CALLER_ID}@itsp.example>;tag=1\r\nTo: <sip:{NUMBER}@pbx.example>\r\n"
            f"Call-ID: c1\r\nCSeq: 1 INVITE\r\ny: {self.identity()}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        request = parse_datagram(data)
        assert isinstance(request, Request)
        attempt = CallAttempt(OUTSIDE, NUMBER, request, Flow("udp", "192.0.2.1", 5060),
                              {"trunk-inbound"})  # fmt: skip
        self.successResultOf(Deferred.fromCoroutine(stir.verify(attempt)))
        self.assertEqual((attempt.stir_verstat, fetcher.urls), (PASSED, [X5U]))

    def test_no_identity(self) -> None:
        """No Identity header: No-TN-Validation."""
        self.assertEqual(self.verify(None).stir_verstat, NO_VALIDATION)

    def test_failures_marked(self) -> None:
        """Each failure passes the call marked TN-Validation-Failed under the mark policy."""
        rogue = make_leaf(make_ca("Rogue", at=NOW), at=NOW)
        for identity, fetcher in (
            (self.identity(key=ec.generate_private_key(ec.SECP256R1())), None),
            (self.identity(iat=NOW - 61), None),
            (self.identity(dest="15550000000"), None),
            (self.identity(key=rogue.key), _FakeFetcher([rogue.cert])),
            ("garbage", None),
        ):
            attempt = self.verify(identity, fetcher)
            self.assertEqual(attempt.stir_verstat, FAILED, identity[:60])

    def test_failures_rejected(self) -> None:
        """Under the reject policy each failure is answered with its RFC 8224 response."""
        rogue = make_leaf(make_ca("Rogue", at=NOW), at=NOW)
        timeout = IdentityError((436, "Bad Identity Info"), "x5u_timeout", "timed out")
        cases = [
            (self.identity(key=ec.generate_private_key(ec.SECP256R1())), None, 438),
            (self.identity(iat=NOW + 61), None, 403),
            (self.identity(dest="15550000000"), None, 438),
            (self.identity(key=rogue.key), _FakeFetcher([rogue.cert]), 437),
            (self.identity(), _FakeFetcher([], timeout), 436),
            ("a.b.c;info=<https://x/>", None, 438),
        ]
        for identity, fetcher, status in cases:
            error = self.assertRaises(SipError, self.verify, identity, fetcher, "reject")
            self.assertEqual(error.status, status, identity[:60])

    def test_wrong_orig(self) -> None:
        """A From that is not the PASSporT's orig fails."""
        self.assertEqual(self.verify(self.identity(), orig="15559999999").stir_verstat, FAILED)

    def test_verstat_to_callee(self) -> None:
        """The callee's P-Asserted-Identity carries the verstat in its user part."""
        attempt = self.verify(self.identity())
        leg = _leg()
        StirShaken.mark(attempt, leg)
        self.assertEqual(
            leg.request.get("P-Asserted-Identity"),
            f"<sip:{CALLER_ID};verstat={PASSED}@itsp.example;user=phone>",
        )

    def test_with_verstat(self) -> None:
        """The display name and parameters stay; a URI without user is left alone."""
        self.assertEqual(
            with_verstat('"Bob" <sip:+1555@h;user=phone>;x=1', FAILED),
            f'"Bob" <sip:+1555;verstat={FAILED}@h;user=phone>;x=1',
        )
        self.assertEqual(with_verstat("<sip:h>", FAILED), "<sip:h>")


class PluginTests(SynchronousTestCase):
    """The plugin as ``makeService`` builds it."""

    def build(self, section: str) -> Any:
        """Build the stirshaken plugin with ``[stirshaken]`` ``section``."""
        config = parse_config_text(f'[plugins]\nenabled = ["stirshaken"]\n[stirshaken]\n{section}')
        [plugin] = enabled_plugins(config.plugins.enabled, discover())
        plugin.make(BuildContext(MemoryReactorClock(), config, None, {}, [plugin]))
        return plugin

    def test_inert_by_default(self) -> None:
        """With neither signing nor verification configured it does nothing at any hook."""
        plugin = self.build("")
        self.assertIsNone(plugin.service)
        attempt = _attempt(EXTENSION, [("Identity", "x")], {"trunk-inbound"})
        attempt.target = _target()
        self.assertIsNone(plugin.before_routing(attempt))
        leg = _leg()
        plugin.leg_built(attempt, leg)
        self.assertEqual(leg.request.get_all("Identity"), [])

    def test_signing_and_verifying(self) -> None:
        """Configured, it reads the key and anchors and signs and verifies."""
        ca = make_ca()
        key_path, anchors_path = _write(make_leaf(ca).key_pem), _write(ca.pem)
        self.addCleanup(os.unlink, key_path)
        self.addCleanup(os.unlink, anchors_path)
        plugin = self.build(
            f'private_key = "{key_path}"\ncertificate_url = "{X5U}"\n'
            f'verify_inbound = true\ntrust_anchors = "{anchors_path}"\n'
        )
        attempt = _attempt(EXTENSION, [], set())
        attempt.target = _target()
        leg = _leg()
        plugin.leg_built(attempt, leg)
        self.assertEqual(len(leg.request.get_all("Identity")), 1)
        self.assertIsNone(plugin.before_routing(attempt))  # not from a trunk
        inbound = _attempt(OUTSIDE, [], {"trunk-inbound"})
        d = plugin.before_routing(inbound)
        self.successResultOf(d)
        self.assertEqual(inbound.stir_verstat, NO_VALIDATION)

    def test_bad_anchors(self) -> None:
        """A trust-anchor file holding no certificate stops the start, naming the key."""
        path = _write(b"not a certificate")
        self.addCleanup(os.unlink, path)
        error = self.assertRaises(
            ConfigError, self.build, f'verify_inbound = true\ntrust_anchors = "{path}"\n'
        )
        self.assertEqual(error.path, "stirshaken.trust_anchors")
