"""
Tests for the machinery behind the fast REGISTER path: the shared linger queue
of the transaction layer, compacted and indexed messages, the synchronous
shortcuts through Deferreds, and the fast paths of the header parsers (each
checked against the general path it stands in for).
"""

from __future__ import annotations

import gc

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_registrar import RegistrarTestCase, register
from tests.sip.transaction_fakes import EPSILON, TCP, UDP, Harness, make_request
from warden.errors import SipError, SipParseError
from warden.model import Binding
from warden.sip.auth import answer_challenge
from warden.sip.authenticator import as_deferred, then
from warden.sip.dispatch import RequestDispatcher
from warden.sip.flow import Flow
from warden.sip.headers import canonical_name, parse_auth_params, parse_via, split_commas
from warden.sip.message import HeaderList, Request, Response, make_response
from warden.sip.parser import parse_datagram
from warden.sip.transaction import TransactionState
from warden.sip.uri import parse_uri
from warden.testing.memory import MemoryLocationService

S = TransactionState


class AnswerEchoTests(SynchronousTestCase):
    """
    Timer J of many non-INVITE server transactions over UDP (RFC 3261 §17.2.2),
    kept by the layer's answer echoes with one shared timer.
    """

    def setUp(self) -> None:
        self.h = Harness()

    def complete(self, branch: str, at: float) -> object:
        """Receive an OPTIONS with ``branch`` at time ``at`` and answer it 200."""
        self.h.advance_to(at)
        self.h.receive(make_request("OPTIONS", branch=branch))
        txn = self.h.tu.transactions[-1]
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        return txn

    def answered_again(self, branch: str) -> bool:
        """Whether a retransmission of ``branch`` is answered without the TU."""
        requests, sent = len(self.h.tu.requests), len(self.h.send.sent)
        self.h.receive(make_request("OPTIONS", branch=branch))
        if len(self.h.tu.requests) > requests:
            txn = self.h.tu.transactions[-1]  # a new transaction: end it over TCP-like
            txn.respond(make_response(txn.request, 200, to_tag="t"))
            return False
        return len(self.h.send.sent) > sent

    def test_transaction_ends_at_once(self) -> None:
        """The answered transaction ends at once; the layer counts it as live."""
        txn = self.complete("z9hG4bKa", 1.0)
        self.assertIs(txn.state, S.TERMINATED)  # type: ignore[attr-defined]
        self.assertEqual(len(self.h.layer), 1)

    def test_each_ends_at_its_own_deadline(self) -> None:
        """Transactions completed at different times are each answered again until
        exactly 32 s later, on one timer."""
        branches = ["z9hG4bK0", "z9hG4bK1", "z9hG4bK2"]
        for branch, at in zip(branches, [1.0, 1.5, 7.25]):
            self.complete(branch, at)
        self.assertEqual(len(self.h.clock.getDelayedCalls()), 1)
        for branch, deadline in zip(branches, [33.0, 33.5, 39.25]):
            self.h.advance_to(deadline - EPSILON)
            self.assertTrue(self.answered_again(branch))
            self.h.advance_to(deadline)
            self.assertNotIn(branch, [k[0] for k in self.h.layer._echoes._answers])
        self.h.advance_to(80)
        self.assertEqual(len(self.h.layer), 0)
        self.assertEqual(self.h.clock.getDelayedCalls(), [])

    def test_early_end_leaves_no_timer(self) -> None:
        """A waiting answer whose resend fails ends, and leaves no timer."""
        self.complete("z9hG4bKa", 1.0)
        self.h.send.fail = True
        self.h.receive(make_request("OPTIONS", branch="z9hG4bKa"))  # resend fails
        self.assertEqual(len(self.h.layer), 0)
        self.assertEqual(self.h.clock.getDelayedCalls(), [])

    def test_early_end_keeps_the_others(self) -> None:
        """When one of several waiting answers ends early the rest still expire."""
        self.complete("z9hG4bKa", 1.0)
        self.complete("z9hG4bKb", 2.0)
        self.h.send.fail = True
        self.h.receive(make_request("OPTIONS", branch="z9hG4bKa"))
        self.h.send.fail = False
        self.assertEqual(len(self.h.layer), 1)
        self.h.advance_to(34 - EPSILON)
        self.assertTrue(self.answered_again("z9hG4bKb"))
        self.h.advance_to(34)
        self.assertEqual(len(self.h.layer), 0)
        self.assertEqual(self.h.clock.getDelayedCalls(), [])

    def test_queue_restarts_after_draining(self) -> None:
        """After every wait is over, a new one gets a timer again."""
        self.complete("z9hG4bKa", 1.0)
        self.h.advance_to(40)
        self.complete("z9hG4bKb", 50.0)
        self.assertEqual(len(self.h.clock.getDelayedCalls()), 1)
        self.h.advance_to(82 - EPSILON)
        self.assertTrue(self.answered_again("z9hG4bKb"))
        self.h.advance_to(82)
        self.assertEqual(len(self.h.layer), 0)

    def test_answer_is_the_bytes_sent(self) -> None:
        """A retransmission gets the very bytes of the final response, to the flow
        the request came from."""
        self.h.receive(make_request("OPTIONS"))
        txn = self.h.tu.transactions[-1]
        response = make_response(txn.request, 200, to_tag="t")
        sent = response.to_bytes()
        txn.respond(response)
        self.h.receive(make_request("OPTIONS"))
        _, message, flow = self.h.send.sent[-1]
        self.assertEqual((message.to_bytes(), flow), (sent, UDP))

    def test_not_tracked_by_the_collector(self) -> None:
        """What waits holds no object the cyclic garbage collector walks."""
        for n in range(20):
            self.complete(f"z9hG4bK{n}", 1.0)
        gc.collect()
        answers = self.h.layer._echoes._answers
        self.assertEqual(len(answers), 20)
        self.assertFalse(any(gc.is_tracked(v) for v in answers.values()))
        self.assertFalse(any(gc.is_tracked(k) for k in answers))

    def test_terminate_all(self) -> None:
        """terminate_all ends the waiting answers too, and counts them."""
        self.complete("z9hG4bKa", 1.0)
        self.assertEqual(self.h.layer.terminate_all(), 1)
        self.assertEqual((len(self.h.layer), self.h.clock.getDelayedCalls()), (0, []))

    def test_accepted_invites_share_one_timer(self) -> None:
        """INVITE server and client transactions in Accepted (Timers L and M, RFC
        6026) wait on shared linger queues: one timer however many, each ending
        exactly 32 s after its 2xx."""
        txns = []
        for n, at in enumerate([1.0, 2.5, 4.0]):
            self.h.advance_to(at)
            self.h.receive(make_request("INVITE", branch=f"z9hG4bKi{n}"))
            txn = self.h.tu.transactions[-1]
            txn.respond(make_response(txn.request, 200, to_tag="t"))
            txns.append(txn)
        self.assertEqual(len(self.h.clock.getDelayedCalls()), 1)
        for txn, deadline in zip(txns, [33.0, 34.5, 36.0]):
            self.h.advance_to(deadline - EPSILON)
            self.assertIs(txn.state, S.ACCEPTED)
            self.h.advance_to(deadline)
            self.assertIs(txn.state, S.TERMINATED)
        self.assertEqual(self.h.clock.getDelayedCalls(), [])

    def test_reliable_is_not_queued(self) -> None:
        """Over TCP the transaction ends with its final response; nothing is queued."""
        self.h.receive(make_request("OPTIONS"), TCP)
        txn = self.h.tu.transactions[-1]
        txn.respond(make_response(txn.request, 200, to_tag="t"))
        self.assertIs(txn.state, S.TERMINATED)
        self.assertEqual(self.h.clock.getDelayedCalls(), [])


class CompactTests(SynchronousTestCase):
    """Message.compact keeps the message as it was, in less memory."""

    DATA = (
        b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nTo: <sip:bob@example.com>\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )

    def test_parsed_message(self) -> None:
        """A parsed message compacts to its bytes and reads back unchanged."""
        message = parse_datagram(self.DATA)
        headers = list(message.headers)
        message.compact()
        self.assertEqual(message.get("Via"), "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1")
        self.assertEqual(message.headers, headers)
        self.assertEqual(message.to_bytes(), self.DATA)

    def test_dropping_raw_keeps_headers(self) -> None:
        """Setting ``raw`` on a compacted message keeps the headers it held."""
        message = parse_datagram(self.DATA)
        headers = list(message.headers)
        message.compact()
        message.raw = None
        self.assertEqual(message.headers, headers)

    def test_body_change_keeps_headers(self) -> None:
        """Changing the body of a compacted message keeps its headers."""
        message = parse_datagram(self.DATA)
        headers = list(message.headers)
        message.compact()
        message.set_body(b"x")
        self.assertEqual(message.headers, headers)
        self.assertEqual(parse_datagram(message.to_bytes()).body, b"x")

    def test_built_message(self) -> None:
        """A message built here compacts its headers and gives them back as a list."""
        response = Response(200, "OK", [("Via", "a"), ("To", "b")])
        data = response.to_bytes()
        response.compact()
        self.assertEqual(response.to_bytes(), data)
        response.headers.append(("X-A", "y"))
        self.assertEqual(response.get("X-A"), "y")


class HeaderIndexTests(SynchronousTestCase):
    """The name index of a parsed message follows every change to its headers."""

    def message(self) -> Request:
        """A parsed OPTIONS with two Via lines."""
        request = make_request("OPTIONS")
        self.assertIsInstance(request.headers, HeaderList)
        return request

    def test_lookups(self) -> None:
        """get, get_all, count and header_names agree with the header list."""
        request = self.message()
        self.assertEqual(request.count("Via"), 2)
        self.assertEqual(request.get("v"), "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKtest1")
        self.assertEqual(len(request.get_all("Via")), 2)
        self.assertEqual(request.get_all("Require"), [])
        present, repeated = request.header_names()
        self.assertIn("Call-ID", present)
        self.assertEqual(set(repeated), {"Via"})

    def test_direct_changes(self) -> None:
        """Changing the list directly, in any way, is seen by the lookups."""
        request = self.message()
        headers = request.headers
        request.get("X-A")  # build the index
        headers.append(("X-A", "1"))
        self.assertEqual(request.get("X-A"), "1")
        headers[len(headers) - 1] = ("X-A", "2")
        self.assertEqual(request.get("x-a"), "2")
        headers.insert(0, ("X-A", "0"))
        self.assertEqual(request.get_all("X-A"), ["0", "2"])
        del headers[0]
        self.assertEqual(request.count("X-A"), 1)
        headers += [("X-B", "b")]
        self.assertEqual(request.get("X-B"), "b")
        headers.extend([("X-C", "c")])
        self.assertEqual(request.get("X-C"), "c")
        headers.remove(("X-C", "c"))
        self.assertIsNone(request.get("X-C"))
        headers.pop()
        self.assertIsNone(request.get("X-B"))
        headers.reverse()
        self.assertEqual(request.get("Via"), "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKlower")
        headers.sort()
        headers *= 2
        self.assertEqual(request.count("X-A"), 2)
        headers.clear()
        self.assertIsNone(request.get("Via"))

    def test_replaced_list(self) -> None:
        """A plain list set as the headers is scanned, and still seen."""
        request = self.message()
        plain = [("Via", "v")]
        request.headers = plain
        plain.append(("X-A", "1"))
        self.assertEqual(request.get("X-A"), "1")
        self.assertEqual(request.count("Via"), 1)


class ThenTests(SynchronousTestCase):
    """then() and as_deferred(): synchronous when the value is there already."""

    def test_plain_value(self) -> None:
        """A plain value goes to the function at once."""
        self.assertEqual(then(2, lambda x: x + 1), 3)

    def test_fired(self) -> None:
        """A fired Deferred's result goes to the function at once; its answer is returned."""
        self.assertEqual(then(defer.succeed(2), lambda x: x + 1), 3)

    def test_pending(self) -> None:
        """A pending Deferred gets the function as a callback."""
        d: Deferred[int] = Deferred()
        result = then(d, lambda x: x + 1)
        self.assertIsInstance(result, Deferred)
        d.callback(2)
        self.assertEqual(self.successResultOf(as_deferred(result)), 3)

    def test_failed(self) -> None:
        """A failed Deferred is passed on, the function not called."""
        result = then(defer.fail(ValueError("x")), lambda x: self.fail("called"))
        self.failureResultOf(as_deferred(result), ValueError)

    def test_as_deferred(self) -> None:
        """A plain value becomes a fired Deferred; a Deferred stays itself."""
        self.assertEqual(self.successResultOf(as_deferred(1)), 1)
        d: Deferred[int] = Deferred()
        self.assertIs(as_deferred(d), d)


class SlowLocation(MemoryLocationService):
    """Bindings whose writes become durable only when ``release()`` is called."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deferred[None]] = []

    def apply(self, aor: str, upserts: object, removals: object) -> Deferred[None]:
        super().apply(aor, upserts, removals)  # type: ignore[arg-type]
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d

    def release(self) -> None:
        """Make every write so far durable."""
        pending, self.pending = self.pending, []
        for d in pending:
            d.callback(None)


class AsynchronousStoreTests(RegistrarTestCase):
    """The registrar waits for stores that answer later (SQLite's write-behind)."""

    def test_ok_after_durable(self) -> None:
        """The 200 comes once the binding is durable, not before."""
        self.location = SlowLocation()
        self.registrar._location = self.location
        challenge = self.challenge()
        authz = answer_challenge(
            challenge.get_all("WWW-Authenticate")[0], "1001", "secret1001", "REGISTER",
            "sip:pbx.test",
        )  # fmt: skip
        d = self.registrar.handle(register(authorization=authz, cseq=2), UDP)
        self.assertNoResult(d)
        self.location.release()
        response = self.successResultOf(d)
        self.assertEqual(response.status, 200)
        self.assertIn("sip:1001@192.0.2.10:5062", response.get("Contact") or "")

    def test_directory_later(self) -> None:
        """A directory that answers later gets the challenge out when it does."""
        d_ext: Deferred[object] = Deferred()
        extension = self.successResultOf(self.directory.get_extension("1001"))
        self.auth._directory = type("Later", (), {"get_extension": lambda _, n: d_ext})()
        d = self.registrar.handle(register(), UDP)
        self.assertNoResult(d)
        d_ext.callback(extension)
        self.assertEqual(self.failureResultOf(d, SipError).value.status, 401)


class CoreHandlerTests(SynchronousTestCase):
    """What the dispatcher does with what a handler gives back (as maybeDeferred would)."""

    def respond(self, handler: object) -> Response:
        """Dispatch a REGISTER to ``handler``; return the response sent."""
        core = RequestDispatcher(lambda host: True)
        core.register_handler("REGISTER", handler)  # type: ignore[arg-type]
        sent: list[Response] = []
        txn = type("Txn", (), {"respond": lambda _, r: sent.append(r)})()
        core.request_received(txn, register(), Flow("udp", "192.0.2.10", 5062))
        (response,) = sent
        return response

    def test_plain_response(self) -> None:
        """A handler may return a Response instead of a Deferred."""
        response = self.respond(lambda request, flow: make_response(request, 202))
        self.assertEqual(response.status, 202)

    def test_raises(self) -> None:
        """A handler that raises SipError gets that error as the response."""

        def handler(request: Request, flow: Flow) -> None:
            raise SipError(404, "Not Here")

        self.assertEqual(self.respond(handler).status, 404)

    def test_bug(self) -> None:
        """A handler that fails with anything else gets a 500 (and is logged)."""

        def handler(request: Request, flow: Flow) -> None:
            raise ZeroDivisionError()

        self.assertEqual(self.respond(handler).status, 500)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class FastPathTests(SynchronousTestCase):
    """The parsers' fast paths read the usual input as the general paths do."""

    def test_header_names(self) -> None:
        """Usual and unusual spellings map to the same canonical names."""
        for name in ("Call-ID", "call-id", "CALL-ID", "Call-Id", "cAlL-iD", "i", "I"):
            self.assertEqual(canonical_name(name), "Call-ID")
        self.assertEqual(canonical_name("x-my-header"), "X-My-Header")
        self.assertEqual(canonical_name("x-my-header"), "X-My-Header")  # remembered
        self.assertRaises(SipParseError, canonical_name, "bad name")

    def test_split_commas(self) -> None:
        """Commas inside quotes and angle brackets do not split."""
        self.assertEqual(
            split_commas('"a, b" <sip:x,y@h>, c, "d\\", e"'),
            ['"a, b" <sip:x,y@h>', "c", '"d\\", e"'],
        )
        self.assertEqual(split_commas("a,,b ,"), ["a", "b"])
        self.assertRaises(SipParseError, split_commas, 'a, "b')

    def test_auth_params(self) -> None:
        """Usual and unusual credentials give the same parameters."""
        usual = 'Digest username="a\\"b", realm=r, nonce="n,1", qop=auth'
        unusual = 'Digest username = "a\\"b" ,realm=r,\r\n nonce="n,1",, qop=auth'
        expected = ("Digest", {"username": 'a"b', "realm": "r", "nonce": "n,1", "qop": "auth"})
        self.assertEqual(parse_auth_params(usual), expected)
        self.assertEqual(parse_auth_params(unusual), expected)

    def test_uris(self) -> None:
        """The usual SIP URI and its unusual spellings parse alike; bad hosts fail."""
        usual = parse_uri("sip:1001@192.0.2.10:5062;transport=udp")
        self.assertEqual(parse_uri("SIP:1001@192.0.2.10:5062;Transport=udp"), usual)
        self.assertEqual(usual.host, "192.0.2.10")
        self.assertEqual(usual.params, (("transport", "udp"),))
        for bad in ("sip:a@1.2.3.256", "sip:a@h:65536", "sip:a@-h", "sip:a@h;=x"):
            self.assertRaises(SipParseError, parse_uri, bad)
        self.assertEqual(parse_uri("sip:a@1.2.3.4.5").host, "1.2.3.4.5")

    def test_via(self) -> None:
        """The usual Via and an unusual spelling of it parse alike."""
        usual = parse_via("SIP/2.0/udp Host.Example:5060;branch=z9hG4bK1;rport")
        self.assertEqual(
            parse_via("SIP / 2.0 / udp  Host.Example:5060 ;branch=z9hG4bK1;rport"), usual
        )
        self.assertEqual((usual.transport, usual.host, usual.port), ("UDP", "host.example", 5060))
        self.assertRaises(SipParseError, parse_via, "SIP/2.0/UDP h;branch=")
        self.assertRaises(SipParseError, parse_via, "SIP/2.0/UDP h:70000")


class BindingContactTests(SynchronousTestCase):
    """A binding keeps the Contact URI as URI.__str__ writes it."""

    def test_uri_text(self) -> None:
        """URIs serialise with user, password, port, parameters and headers."""
        text = "sips:a:pw@h:5061;lr;transport=tcp?x=y&z=w"
        self.assertEqual(str(parse_uri(text)), text)
        self.assertEqual(str(parse_uri("sip:h")), "sip:h")
        binding = Binding(aor="1", contact=str(parse_uri("sip:1@h;x")), key="k", expires_at=1.0)
        self.assertEqual(binding.contact, "sip:1@h;x")
