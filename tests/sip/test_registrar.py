"""Tests for the registrar and digest authentication (warden.sip.registrar, auth)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from warden.errors import SipError
from warden.model import Binding
from warden.sip.auth import AuthThrottle, NonceManager, NonceState, answer_challenge
from warden.sip.authenticator import REALM_LOG_INTERVAL, Authenticator, Throttled, names_target
from warden.sip.flow import Flow
from warden.sip.message import Request, Response
from warden.sip.parser import parse_datagram
from warden.sip.registrar import ExpiryPolicy, Registrar
from warden.store.credentials import make_extension
from warden.testing.memory import MemoryDirectory, MemoryGuardedLocation, MemoryLocationService

REALM = "pbx.test"
FLOW = Flow("udp", "192.0.2.10", 5062)


def register(
    user: str = "1001",
    contact: str = "<sip:1001@192.0.2.10:5062>",
    cseq: int = 1,
    call_id: str = "call-1",
    expires: str | None = None,
    authorization: str | None = None,
    to_user: str | None = None,
) -> Request:
    """A REGISTER for ``user`` in the test realm."""
    lines = [
        "REGISTER sip:pbx.test SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{cseq}x{call_id}",
        "Max-Forwards: 70",
        f"To: <sip:{to_user or user}@pbx.test>",
        f"From: <sip:{user}@pbx.test>;tag=abc",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    if contact:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if authorization:
        lines.append(f"Authorization: {authorization}")
    request = parse_datagram(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(request, Request)
    return request


class RegistrarTestCase(SynchronousTestCase):
    """A registrar over memory stores and a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.directory = MemoryDirectory(
            [
                make_extension("1001", "Front Desk", REALM, "secret1001"),
                make_extension("1002", "Sales", REALM, "secret1002", algorithms=("SHA-256",)),
                make_extension("1003", "Off", REALM, "secret1003", enabled=False),
            ]
        )
        self.location = MemoryLocationService()
        self.nonces = NonceManager(self.clock, lifetime=300)
        self.throttle = AuthThrottle(self.clock, limit=3, window=60, block_seconds=300)
        self.auth = Authenticator(
            self.clock, self.directory, self.nonces, self.throttle, REALM, ("MD5", "SHA-256")
        )
        self.registrar = Registrar(
            self.clock, self.auth, self.location, ExpiryPolicy(60, 3600, 7200),
            lambda host: host == REALM, "node-a",
        )  # fmt: skip

    def handle(self, request: Request, flow: Flow = FLOW) -> Response:
        """Run the registrar; return the response (errors become responses)."""
        d = self.registrar.handle(request, flow)
        results: list[object] = []
        d.addBoth(results.append)
        value = results[0]
        if hasattr(value, "value"):
            error = value.value  # type: ignore[attr-defined]
            if isinstance(error, SipError):
                response = Response(error.status, error.reason, list(error.headers))
                return response
            raise error
        assert isinstance(value, Response)
        return value

    def challenge(self, user: str = "1001", **kwargs: object) -> Response:
        """Send an unauthenticated REGISTER; it must be challenged."""
        response = self.handle(register(user=user, **kwargs))  # type: ignore[arg-type]
        self.assertEqual(response.status, 401)
        return response

    def authed(
        self,
        user: str = "1001",
        password: str | None = None,
        index: int = 0,
        nc: int = 1,
        challenge: Response | None = None,
        **kwargs: object,
    ) -> Response:
        """Challenge then answer with credentials; return the final response."""
        challenge = challenge or self.challenge(user=user)
        value = challenge.get_all("WWW-Authenticate")[index]
        authz = answer_challenge(
            value, user, password or f"secret{user}", "REGISTER", "sip:pbx.test", nc=nc
        )
        kwargs.setdefault("cseq", 2)
        return self.handle(register(user=user, authorization=authz, **kwargs))  # type: ignore[arg-type]


class AuthTests(RegistrarTestCase):
    """Digest authentication edge cases."""

    def test_non_utf8_cnonce(self) -> None:
        """
        A cnonce holding an octet that is not UTF-8 is hashed as the octets sent
        (RFC 7616 §3.4.1): the phone that hashed them registers, no 500.
        """
        challenge = self.challenge().get_all("WWW-Authenticate")[0]
        nonce = re.search(r'nonce="([^"]+)"', challenge)[1]  # type: ignore[index]
        cnonce = b"c\xff"

        def md5(data: bytes) -> bytes:
            return hashlib.md5(data).hexdigest().encode()

        ha1 = md5(f"1001:{REALM}:secret1001".encode())
        ha2 = md5(b"REGISTER:sip:pbx.test")
        response = md5(b":".join([ha1, nonce.encode(), b"00000001", cnonce, b"auth", ha2]))
        authz = (
            b'Digest username="1001", realm="pbx.test", nonce="' + nonce.encode()
            + b'", uri="sip:pbx.test", response="' + response + b'", algorithm=MD5,'
            + b' qop=auth, nc=00000001, cnonce="' + cnonce + b'"'
        )  # fmt: skip
        data = (
            register(cseq=2)
            .to_bytes()
            .replace(b"Content-Length", b"Authorization: " + authz + b"\r\nContent-Length")
        )
        request = parse_datagram(data)
        assert isinstance(request, Request)
        self.assertEqual(self.handle(request).status, 200)

    def test_challenge_offers_md5_first(self) -> None:
        """The default challenge offers MD5 then SHA-256, qop=auth, one nonce each."""
        values = self.challenge().get_all("WWW-Authenticate")
        self.assertEqual(len(values), 2)
        self.assertIn("algorithm=MD5", values[0])
        self.assertIn("algorithm=SHA-256", values[1])
        self.assertIn('qop="auth"', values[0])
        self.assertIn('realm="pbx.test"', values[0])

    def test_md5_success(self) -> None:
        """Correct MD5 credentials register the contact."""
        self.assertEqual(self.authed().status, 200)

    def test_sha256_success(self) -> None:
        """Correct SHA-256 credentials (RFC 8760) register the contact."""
        self.assertEqual(self.authed(index=1).status, 200)

    def test_per_extension_algorithms(self) -> None:
        """An extension limited to SHA-256 is offered SHA-256 only."""
        values = self.challenge(user="1002").get_all("WWW-Authenticate")
        self.assertEqual(len(values), 1)
        self.assertIn("algorithm=SHA-256", values[0])
        self.assertEqual(self.authed(user="1002").status, 200)

    def test_wrong_password(self) -> None:
        """A wrong password gets 403 and counts as a failure."""
        self.assertEqual(self.authed(password="nope").status, 403)

    def test_unknown_user_same_as_wrong_password(self) -> None:
        """An unknown user is challenged and then refused exactly like a wrong password."""
        self.assertEqual(self.authed(user="9999", password="x").status, 403)

    def test_disabled_extension(self) -> None:
        """A disabled extension cannot register."""
        self.assertEqual(self.authed(user="1003").status, 403)

    def test_wrong_realm(self) -> None:
        """Credentials for another realm are ignored: a fresh challenge."""
        value = self.challenge().get_all("WWW-Authenticate")[0].replace(REALM, "other.test")
        authz = answer_challenge(value, "1001", "secret1001", "REGISTER", "sip:pbx.test")
        response = self.handle(register(authorization=authz, cseq=2))
        self.assertEqual(response.status, 401)

    def test_stale_nonce(self) -> None:
        """A correct answer with an expired nonce gets 401 stale=true."""
        challenge = self.challenge()
        self.clock.advance(301)
        response = self.authed(challenge=challenge)
        self.assertEqual(response.status, 401)
        self.assertIn("stale=true", response.get("WWW-Authenticate") or "")

    def test_nonce_just_before_expiry(self) -> None:
        """A nonce is accepted up to its lifetime."""
        challenge = self.challenge()
        self.clock.advance(299)
        self.assertEqual(self.authed(challenge=challenge).status, 200)

    def test_replayed_nonce_count(self) -> None:
        """Reusing a nonce-count is a replay: challenged again, not accepted."""
        challenge = self.challenge()
        self.assertEqual(self.authed(challenge=challenge, cseq=2).status, 200)
        replay = self.authed(challenge=challenge, cseq=3)
        self.assertEqual(replay.status, 401)
        self.assertEqual(self.authed(challenge=challenge, nc=2, cseq=4).status, 200)

    def test_forged_nonce(self) -> None:
        """A nonce Warden did not issue is challenged and counted as a failure."""
        value = 'Digest realm="pbx.test", nonce="18c.abcd.0000", algorithm=MD5, qop="auth"'
        authz = answer_challenge(value, "1001", "secret1001", "REGISTER", "sip:pbx.test")
        self.assertEqual(self.handle(register(authorization=authz)).status, 401)

    def test_non_ascii_response(self) -> None:
        """A response hash with non-ASCII characters is wrong credentials, not a crash."""
        challenge = self.challenge().get_all("WWW-Authenticate")[0]
        authz = answer_challenge(challenge, "1001", "secret1001", "REGISTER", "sip:pbx.test")
        authz = (
            authz.replace('response="', 'response="\u00e9\u00e9', 1)
            .encode()
            .decode("unicode_escape")
        )
        self.assertEqual(self.handle(register(authorization=authz, cseq=2)).status, 403)

    def test_unknown_scheme_challenged(self) -> None:
        """An Authorization of an unknown scheme is never accepted (RFC 4475 regaut01)."""
        response = self.handle(register(authorization="NoOneKnowsThisScheme opaque-data=here"))
        self.assertEqual(response.status, 401)

    def test_identity_must_match_to(self) -> None:
        """Credentials of 1001 cannot register 1002's AOR (403)."""
        challenge = self.challenge()
        value = challenge.get_all("WWW-Authenticate")[0]
        authz = answer_challenge(value, "1001", "secret1001", "REGISTER", "sip:pbx.test")
        response = self.handle(register(user="1001", to_user="1002", authorization=authz, cseq=2))
        self.assertEqual(response.status, 403)

    def test_throttle_blocks_source(self) -> None:
        """After the failure limit, the source gets 403 without any credential check."""
        for _ in range(3):
            self.assertEqual(self.authed(password="bad").status, 403)
        self.assertTrue(self.throttle.is_blocked(FLOW.host))
        d = self.registrar.handle(register(), FLOW)
        self.failureResultOf(d, Throttled)
        other = Flow("udp", "192.0.2.99", 5060)
        self.assertEqual(self.handle(register(), other).status, 401)
        self.clock.advance(301)
        self.assertFalse(self.throttle.is_blocked(FLOW.host))

    def test_forged_nonces_block_no_one(self) -> None:
        """
        Credentials with a nonce Warden never issued (spoofed packets) are
        challenged but not counted: far more of them than the failure limit
        leave the source unblocked, and its phone still registers.
        """
        value = 'Digest realm="pbx.test", nonce="18c.abcd.0000", algorithm=MD5, qop="auth"'
        for cseq in range(2, 52):
            authz = answer_challenge(value, "1001", "wrong", "REGISTER", "sip:pbx.test")
            response = self.handle(register(authorization=authz, cseq=cseq))
            self.assertEqual(response.status, 401)
        self.assertFalse(self.throttle.is_blocked(FLOW.host))
        self.assertEqual(self.authed(cseq=60).status, 200)

    def test_nonce_of_another_address_blocks_no_one(self) -> None:
        """
        A nonce Warden issued to another address (the attacker's own) is invalid
        when it comes from the victim's address: wrong passwords sent with it
        from a spoofed source are challenged, not counted, and block no one.
        """
        attacker = Flow("udp", "198.51.100.66", 5060)
        challenge = self.handle(register(), attacker)
        self.assertEqual(challenge.status, 401)
        value = challenge.get_all("WWW-Authenticate")[0]
        for cseq in range(2, 22):
            authz = answer_challenge(value, "1001", "wrong", "REGISTER", "sip:pbx.test", nc=cseq)
            self.assertEqual(self.handle(register(authorization=authz, cseq=cseq)).status, 401)
        self.assertFalse(self.throttle.is_blocked(FLOW.host, "1001"))
        self.assertFalse(self.throttle.is_blocked(attacker.host, "1001"))
        self.assertEqual(self.authed(cseq=30).status, 200)

    def test_replays_block_no_one(self) -> None:
        """
        Replaying a captured REGISTER (same nonce and nonce-count) is challenged
        each time but is no password guess: it is not counted.
        """
        challenge = self.challenge()
        self.assertEqual(self.authed(challenge=challenge, cseq=2).status, 200)
        for cseq in range(3, 13):
            self.assertEqual(self.authed(challenge=challenge, cseq=cseq).status, 401)
        self.assertFalse(self.throttle.is_blocked(FLOW.host, "1001"))

    def test_extension_blocked_alone_at_a_source(self) -> None:
        """
        Wrong passwords for one extension from a NAT address reach the
        per-extension limit first: that extension is refused there (403, no
        credential check), another phone behind the same address still
        registers, and the block ends after the block time.
        """
        self.auth.throttle = self.throttle = AuthThrottle(
            self.clock, limit=5, window=60, block_seconds=300, extension_limit=2
        )
        for cseq in (2, 3):
            self.assertEqual(self.authed(password="bad", cseq=cseq).status, 403)
        self.assertTrue(self.throttle.is_blocked(FLOW.host, "1001"))
        self.assertFalse(self.throttle.is_blocked(FLOW.host))
        self.failureResultOf(self.registrar.handle(register(cseq=4), FLOW), Throttled)
        self.assertEqual(self.authed(user="1002", call_id="call-2").status, 200)
        self.clock.advance(301)
        self.assertEqual(self.authed(cseq=5).status, 200)

    def test_source_limit_over_extensions(self) -> None:
        """
        Guessing across many extensions from one address is still blocked by
        the per-source limit, whatever extension is tried next.
        """
        self.auth.throttle = self.throttle = AuthThrottle(
            self.clock, limit=4, window=60, block_seconds=300, extension_limit=2
        )
        for i, user in enumerate(("1001", "1002", "9001", "9002")):
            self.assertEqual(self.authed(user=user, password="bad", cseq=2 + i).status, 403)
        self.assertTrue(self.throttle.is_blocked(FLOW.host))
        self.failureResultOf(self.registrar.handle(register(user="9003"), FLOW), Throttled)

    def rfc2069_answer(self, password: str = "secret1001") -> str:
        """Correct-or-not credentials without qop (RFC 2069) to a fresh challenge."""
        value = self.challenge().get_all("WWW-Authenticate")[0].replace(', qop="auth"', "")
        authz = answer_challenge(value, "1001", password, "REGISTER", "sip:pbx.test")
        self.assertNotIn("qop=", authz)
        return authz

    def test_rfc2069_refused_by_default(self) -> None:
        """
        A correct digest answer without qop (RFC 2069) is refused with 403 and
        counted as a failure, unless accepting them is configured.
        """
        self.auth.throttle = self.throttle = AuthThrottle(
            self.clock, limit=5, window=60, block_seconds=300, extension_limit=1
        )
        response = self.handle(register(authorization=self.rfc2069_answer(), cseq=2))
        self.assertEqual(response.status, 403)
        self.assertTrue(self.throttle.is_blocked(FLOW.host, "1001"))

    def test_rfc2069_accepted_when_configured(self) -> None:
        """With accept_rfc2069 the same answer registers; a wrong one is still 403."""
        self.auth.accept_rfc2069 = True
        self.assertEqual(
            self.handle(register(authorization=self.rfc2069_answer(), cseq=2)).status, 200
        )
        wrong = self.rfc2069_answer("nope")
        self.assertEqual(self.handle(register(authorization=wrong, cseq=3)).status, 403)

    def answer_with_uri(self, uri: str) -> Response:
        """Correct credentials whose digest uri is ``uri``; the final response."""
        value = self.challenge().get_all("WWW-Authenticate")[0]
        authz = answer_challenge(value, "1001", "secret1001", "REGISTER", uri)
        return self.handle(register(authorization=authz, cseq=2, call_id=f"uri-{uri}"))

    def test_digest_uri_of_another_target_refused(self) -> None:
        """
        Correct credentials computed over a uri naming another user or another
        host than the Request-URI are refused with 400 (RFC 7616 §3.4.6).
        """
        for uri in ("sip:1002@pbx.test", "sip:evil.test", "sip:1001@evil.test", "%%%"):
            response = self.answer_with_uri(uri)
            self.assertEqual(
                (response.status, response.reason),
                (400, "Digest uri does not match the Request-URI"),
                uri,
            )

    def test_digest_uri_forms_accepted(self) -> None:
        """
        The Request-URI itself, with parameters or another case, and SIPp's
        form (the address it sends to, with or without ``sip:``) are accepted.
        """
        for uri in ("sip:PBX.test;transport=udp", "sip:pbx.test:5060", "pbx.test:5060"):
            self.assertEqual(self.answer_with_uri(uri).status, 200, uri)

    def test_names_target_for_invite(self) -> None:
        """For an INVITE the digest uri must name the callee (or be the bare host)."""
        invite = parse_datagram(
            b"INVITE sip:1002@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKi\r\n"
            b"To: <sip:1002@pbx.test>\r\nFrom: <sip:1001@pbx.test>;tag=a\r\n"
            b"Call-ID: i\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        assert isinstance(invite, Request)
        self.assertTrue(names_target("sip:1002@pbx.test", invite))
        self.assertTrue(names_target("sip:1002@pbx.test:5060;user=phone", invite))
        self.assertTrue(names_target("sip:pbx.test:5060", invite))
        self.assertFalse(names_target("sip:1003@pbx.test", invite))
        self.assertFalse(names_target("sip:1002@other.test", invite))
        self.assertFalse(names_target("tel:1002", invite))

    def log_lines(self) -> list[str]:
        """Collect the authenticator's log lines from now on; the list fills up."""
        lines: list[str] = []
        self.auth.log = Logger(observer=lambda event: lines.append(formatEvent(event)))
        return lines

    def test_realm_mismatch_logged_on_register(self) -> None:
        """
        A phone whose extension was stored for another realm is refused (403)
        with one warning naming both realms and the fix, repeated at most every
        REALM_LOG_INTERVAL seconds, and its failures are not counted.
        """
        moved = make_extension("1001", "Front Desk", "old.host", "secret1001")
        self.successResultOf(self.directory.update_extension(moved))
        lines = self.log_lines()
        for cseq in (2, 3, 4, 5):
            self.assertEqual(self.authed(cseq=cseq).status, 403)
        warned = [line for line in lines if "cannot authenticate" in line]
        self.assertEqual(len(warned), 1, lines)
        self.assertIn("realm 'old.host' but this server's realm is 'pbx.test'", warned[0])
        self.assertIn("wardenctl extension set 1001 --new-password", warned[0])
        self.assertFalse(self.throttle.is_blocked(FLOW.host, "1001"))
        self.clock.advance(REALM_LOG_INTERVAL)
        self.assertEqual(self.authed(cseq=6).status, 403)
        self.assertEqual(len([line for line in lines if "cannot authenticate" in line]), 2)

    def test_start_up_realm_check(self) -> None:
        """
        check_realms counts the extensions stored for another realm and says so
        in one warning line with the count and the fix; none are: no line.
        """
        lines = self.log_lines()
        self.assertEqual(self.successResultOf(self.auth.check_realms()), 0)
        self.assertEqual(lines, [])
        for number in ("1001", "1002"):
            moved = make_extension(number, "x", "old.host", "pw")
            self.successResultOf(self.directory.update_extension(moved))
        self.assertEqual(self.successResultOf(self.auth.check_realms()), 2)
        self.assertEqual(len(lines), 1)
        self.assertIn("2 of 3 extensions have passwords stored for another realm", lines[0])
        self.assertIn("('old.host') than this server's realm 'pbx.test'", lines[0])
        self.assertIn("--new-password", lines[0])

    def test_nonce_manager_states(self) -> None:
        """Nonces are valid, stale after the lifetime, invalid when tampered with."""
        nonce = self.nonces.issue()
        self.assertIs(self.nonces.check(nonce), NonceState.VALID)
        tampered = nonce[:-1] + ("1" if nonce[-1] == "0" else "0")
        self.assertIs(self.nonces.check(tampered), NonceState.INVALID)
        self.assertIs(self.nonces.check("garbage"), NonceState.INVALID)
        bound = self.nonces.issue("192.0.2.10")
        self.assertIs(self.nonces.check(bound, "192.0.2.10"), NonceState.VALID)
        self.assertIs(self.nonces.check(bound, "192.0.2.11"), NonceState.INVALID)
        self.assertIs(self.nonces.check(nonce[:-1] + "\u00e9"), NonceState.INVALID)
        self.clock.advance(300.5)
        self.assertIs(self.nonces.check(nonce), NonceState.STALE)
        self.assertEqual(self.nonces.forget_expired(), 2)


class BindingTests(RegistrarTestCase):
    """RFC 3261 §10.3 binding rules."""

    def bindings(self, aor: str = "1001") -> list[tuple[str, float]]:
        """(contact, seconds left) of the AOR."""
        now = self.clock.seconds()
        found = self.successResultOf(self.location.bindings_for(aor, now))
        return sorted((b.contact, b.expires_at - now) for b in found)

    def test_register_lists_bindings(self) -> None:
        """200 OK lists every current binding with its remaining expiry."""
        response = self.authed(contact="<sip:1001@192.0.2.10:5062>;expires=600")
        self.assertEqual(response.get_all("Contact"), ["<sip:1001@192.0.2.10:5062>;expires=600"])
        self.assertEqual(self.bindings(), [("sip:1001@192.0.2.10:5062", 600)])

    def test_several_contacts_and_q(self) -> None:
        """Several contacts per AOR, with q values, ordered by preference."""
        response = self.authed(contact="<sip:a@192.0.2.1>;q=0.5, <sip:b@192.0.2.2>;q=0.9")
        self.assertEqual(
            response.get_all("Contact"),
            ["<sip:b@192.0.2.2>;expires=3600;q=0.9", "<sip:a@192.0.2.1>;expires=3600;q=0.5"],
        )

    def test_expires_header_and_cap(self) -> None:
        """The Expires header applies; intervals above the maximum are capped."""
        self.authed(expires="100000")
        self.assertEqual(self.bindings(), [("sip:1001@192.0.2.10:5062", 7200)])

    def test_non_ascii_expires_parameter(self) -> None:
        """A Contact expires parameter in non-ASCII digits (``³⁶⁰⁰``, ``٦٠٠``) gets 400."""
        for expires in ("\u00b3600", "\u0666\u0660\u0660"):
            response = self.authed(contact=f"<sip:1001@192.0.2.10:5062>;expires={expires}")
            self.assertEqual(response.status, 400, expires)
        self.assertEqual(self.bindings(), [])

    def test_interval_too_brief(self) -> None:
        """An expiry below the minimum gets 423 with Min-Expires."""
        response = self.authed(expires="10")
        self.assertEqual(response.status, 423)
        self.assertEqual(response.get("Min-Expires"), "60")

    def test_unregister_one(self) -> None:
        """expires=0 removes that contact only."""
        self.authed(contact="<sip:a@192.0.2.1>, <sip:b@192.0.2.2>")
        self.authed(contact="<sip:a@192.0.2.1>;expires=0", cseq=3)
        self.assertEqual([c for c, _ in self.bindings()], ["sip:b@192.0.2.2"])

    def test_star_removes_all(self) -> None:
        """Contact: * with Expires: 0 removes every binding."""
        self.authed(contact="<sip:a@192.0.2.1>, <sip:b@192.0.2.2>")
        self.assertEqual(self.authed(contact="*", expires="0", cseq=3).status, 200)
        self.assertEqual(self.bindings(), [])

    def test_star_needs_expires_zero(self) -> None:
        """Contact: * without Expires: 0 is a 400."""
        self.assertEqual(self.authed(contact="*", expires="60").status, 400)

    def test_query(self) -> None:
        """A REGISTER without Contact returns the bindings and changes nothing."""
        self.authed()
        response = self.authed(contact="", cseq=3)
        self.assertEqual(len(response.get_all("Contact")), 1)

    def test_cseq_order(self) -> None:
        """Same Call-ID with a CSeq not above the binding's is refused (§10.3 step 7)."""
        self.authed(cseq=5)
        self.assertEqual(self.authed(cseq=5).status, 400)
        self.assertEqual(self.authed(cseq=6).status, 200)
        self.assertEqual(self.authed(cseq=1, call_id="other").status, 200)

    def test_equal_contacts_replace(self) -> None:
        """A contact equal under §19.1.4 (parameter case) refreshes the binding."""
        self.authed(contact="<sip:1001@192.0.2.1;transport=UDP>")
        self.authed(contact="<sip:1001@192.0.2.1;transport=udp>;expires=120", cseq=3)
        self.assertEqual(len(self.bindings()), 1)
        self.assertEqual(self.bindings()[0][1], 120)

    def test_binding_records_flow_and_node(self) -> None:
        """The binding records the source flow, node, Call-ID and CSeq."""
        self.authed(cseq=7)
        now = self.clock.seconds()
        (binding,) = self.successResultOf(self.location.bindings_for("1001", now))
        self.assertEqual(
            (binding.received, binding.node_id, binding.call_id, binding.cseq),
            ("udp:192.0.2.10:5062", "node-a", "call-1", 7),
        )

    def test_bindings_expire_on_the_clock(self) -> None:
        """A binding is gone once its expiry passes."""
        self.authed(expires="60")
        self.clock.advance(59.9)
        self.assertEqual(len(self.bindings()), 1)
        self.clock.advance(0.2)
        self.assertEqual(self.bindings(), [])

    def test_foreign_domain(self) -> None:
        """REGISTER for a domain Warden does not serve gets 404."""
        request = register()
        request.uri_text = "sip:elsewhere.test"
        request._cache.clear()
        self.assertEqual(self.handle(request).status, 404)

    def test_non_sip_contact(self) -> None:
        """A non-SIP contact cannot be bound."""
        self.assertEqual(self.authed(contact="<tel:+15551234>").status, 400)


class CountingGuardedLocation(MemoryGuardedLocation):
    """
    A node's guarded handle on shared bindings that counts its reads and its
    guarded writes, and runs ``before_guarded`` (another node's write, say)
    before each guarded write.
    """

    def __init__(self, shared: MemoryGuardedLocation | None = None) -> None:
        super().__init__(shared)
        self.reads = 0
        self.guarded = 0
        self.before_guarded: Callable[[], object] = lambda: None

    def bindings_for(self, aor: str, now: float) -> Deferred[list[Binding]]:
        self.reads += 1
        return super().bindings_for(aor, now)

    def apply_unchanged(
        self, aor: str, upserts: Sequence[Binding], removals: Sequence[str]
    ) -> Deferred[None]:
        self.guarded += 1
        self.before_guarded()
        return super().apply_unchanged(aor, upserts, removals)


class GuardedBindingTests(BindingTests):
    """
    The binding rules again, over a location that checks writes against this
    node's view (IGuardedLocation, as Redis does for SIP workers).
    """

    def setUp(self) -> None:
        super().setUp()
        self.location = CountingGuardedLocation()
        self.registrar = self.registrar_on(self.location, "node-a")

    def registrar_on(self, location: MemoryGuardedLocation, node: str) -> Registrar:
        """A registrar of node ``node`` over ``location``, sharing this test's auth."""
        return Registrar(
            self.clock, self.auth, location, ExpiryPolicy(60, 3600, 7200),
            lambda host: host == REALM, node,
        )  # fmt: skip

    def on_peer(self, **kwargs: object) -> Response:
        """L{authed} through another node's registrar over the same bindings."""
        peer = self.registrar_on(CountingGuardedLocation(self.location), "node-b")
        mine, self.registrar = self.registrar, peer
        try:
            return self.authed(**kwargs)  # type: ignore[arg-type]
        finally:
            self.registrar = mine

    def bound_on_both_nodes(self) -> None:
        """Contact a registered through this node, then b through another."""
        self.authed(contact="<sip:a@192.0.2.1>", cseq=2)
        self.on_peer(contact="<sip:b@192.0.2.2>", cseq=1, call_id="phone-b")

    def test_refresh_writes_without_reading_first(self) -> None:
        """A refresh from this node's view writes at once; nothing is read before it."""
        self.authed(cseq=2)
        self.location.reads = 0
        response = self.authed(cseq=4, expires="120")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.get_all("Contact"), ["<sip:1001@192.0.2.10:5062>;expires=120"])
        # The one read is the answer's, served from the write just made.
        self.assertEqual(self.location.reads, 1)

    def test_other_node_wrote_in_between(self) -> None:
        """
        When another node changed the AOR since this node's view, the write is
        refused; the changes are worked out again from the bindings the refusal
        brought and written guarded again, without a read, and the answer lists
        both nodes' bindings.
        """
        self.bound_on_both_nodes()
        self.location.reads = self.location.guarded = 0
        response = self.authed(contact="<sip:a@192.0.2.1>;expires=600", cseq=4)
        self.assertEqual(response.status, 200)
        self.assertEqual(
            sorted(response.get_all("Contact")),
            ["<sip:a@192.0.2.1>;expires=600", "<sip:b@192.0.2.2>;expires=3600"],
        )
        self.assertEqual(self.location.guarded, 2)
        # The one read is the answer's, served from the write just made.
        self.assertEqual(self.location.reads, 1)

    def test_stale_twice_reads_and_writes(self) -> None:
        """
        When another node writes the AOR before each guarded write (a phone
        registering through several nodes at once), the second refusal falls
        back to a read and an unguarded write: no third guarded attempt, and
        nothing written by either node is lost.
        """
        self.authed(contact="<sip:a@192.0.2.1>", cseq=2)
        peer = MemoryGuardedLocation(self.location)
        extra = iter(range(10))

        def peer_writes() -> None:
            n = next(extra)
            binding = Binding(
                aor="1001", contact=f"sip:x{n}@192.0.2.9", key=f"sip:x{n}@192.0.2.9",
                expires_at=self.clock.seconds() + 3600, q=1.0, call_id=f"peer-{n}",
                cseq=1, received="udp:192.0.2.9:5060", user_agent="", node_id="node-b",
                sent_by="192.0.2.9",
            )  # fmt: skip
            peer.apply("1001", [binding], [])

        self.location.before_guarded = peer_writes
        self.location.reads = self.location.guarded = 0
        response = self.authed(contact="<sip:a@192.0.2.1>;expires=600", cseq=4)
        self.assertEqual(response.status, 200)
        self.assertEqual(self.location.guarded, 2)
        self.assertEqual(
            sorted(response.get_all("Contact")),
            [
                "<sip:a@192.0.2.1>;expires=600",
                "<sip:x0@192.0.2.9>;expires=3600",
                "<sip:x1@192.0.2.9>;expires=3600",
            ],
        )

    def test_cseq_order_against_other_node_write(self) -> None:
        """
        A CSeq not above the one another node stored since this node's view is
        refused, though the view alone would have accepted it.
        """
        self.authed(cseq=2)
        self.assertEqual(self.on_peer(cseq=8).status, 200)
        self.assertEqual(self.authed(cseq=6).status, 400)
        self.assertEqual(self.authed(cseq=9).status, 200)

    def test_stale_view_refusing_is_checked(self) -> None:
        """
        A REGISTER the stale view would refuse (CSeq order) is checked against
        the bindings as they are now: another node removed the binding.
        """
        self.authed(cseq=7)
        self.assertEqual(self.on_peer(contact="*", expires="0", cseq=8).status, 200)
        self.assertEqual(self.authed(cseq=3, call_id="call-1").status, 200)
        self.assertEqual(len(self.bindings()), 1)

    def test_query_reads_the_bindings(self) -> None:
        """A query lists what is stored now, not this node's view."""
        self.bound_on_both_nodes()
        response = self.authed(contact="", cseq=4)
        self.assertEqual(len(response.get_all("Contact")), 2)

    def test_unregister_all_removes_other_node_bindings(self) -> None:
        """Contact: * removes the bindings another node added after this node's view."""
        self.bound_on_both_nodes()
        self.assertEqual(self.authed(contact="*", expires="0", cseq=4).status, 200)
        self.assertEqual(self.bindings(), [])
