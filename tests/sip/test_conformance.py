"""
The RFC 4475 and RFC 5118 torture messages against the whole SIP stack (fake
transports, Clock): each is answered as RFC 4475 expects, and nothing raises.

The corpus ships in ``tests/data/conformance`` (``WARDEN_CONFORMANCE_DIR``
overrides). RFC 5118 messages read differently by different stacks are
answered as docs/adr/0002-sip-parsing-choices.md records.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.corpus import conformance_dir
from warden.sip.auth import answer_challenge
from warden.sip.message import Message
from warden.sip.parser import parse_datagram
from warden.store.credentials import make_extension
from warden.testing.sipstack import REALM, FakeSipStack

CORPUS = conformance_dir()
LOCAL = frozenset({REALM, "127.0.0.1", "example.com"})
DROPPED = None

# file -> the status Warden answers with (None: dropped, no response can be routed
# or the message is a stray response). A new INVITE is challenged (407); one with a
# To tag matches no dialog (481).
EXPECTED: dict[str, int | None] = {
    # RFC 4475 §3.1.1: valid, parsed and processed.
    "wsinv": 481, "intmeth": 405, "esc01": 407, "escnull": 401, "esc02": 405,
    "lwsdisp": 200, "longreq": 407, "dblreq": 401, "semiuri": 200, "transports": 200,
    "mpart01": 405, "unreason": DROPPED, "noreason": DROPPED,
    # §3.1.2: invalid, 400 when a response can be routed.
    "badinv01": DROPPED, "clerr": 400, "ncl": 400, "scalar02": 400, "scalarlg": DROPPED,
    "quotbal": 400, "ltgtruri": 400, "lwsruri": 400, "lwsstart": 400, "trws": 400,
    "escruri": 400, "baddate": 400, "regbadct": 400, "badaspec": 400, "baddn": 400,
    "badvers": 505, "mismatch01": 400, "mismatch02": 400, "bigcode": DROPPED,
    # §3.2 transaction layer.
    "badbranch": 200,
    # §3.3 application layer.
    "insuf": 400, "unkscm": 416, "novelsc": 416, "unksm2": 400, "bext01": 420,
    "invut": 415, "regaut01": 401, "multi01": 400, "mcl01": 400, "bcast": DROPPED,
    "zeromf": 483, "cparam01": 401, "cparam02": 401, "regescrt": 401, "sdp01": 406,
    # §3.4 backward compatibility.
    "inv2543": 407,
    # RFC 5118.
    "ipv4-mapped-ipv6": 407, "ipv6-bad": 400, "ipv6-bug-abnf-3-colons": 400,
    "ipv6-correct-abnf-2-colons": 200, "ipv6-good": 404, "ipv6-in-sdp": 407,
    "mult-ip-in-header": 481, "mult-ip-in-sdp": 407, "port-ambiguous": 404,
    "port-unambiguous": 404, "via-received-param-no-delim": 200,
    "via-received-param-with-delim": 481,
}  # fmt: skip


def corpus_files() -> list[Path]:
    """Every torture message file."""
    return sorted(CORPUS.glob("rfc4475/*.dat")) + sorted(CORPUS.glob("rfc5118/*.dat"))


class TortureTests(SynchronousTestCase):
    """Each message gets the answer RFC 4475 (or our recorded choice) expects."""

    def setUp(self) -> None:
        if not corpus_files():
            self.fail(f"conformance corpus not found in {CORPUS}")

    def test_every_file_is_classified(self) -> None:
        """The table covers the whole corpus (61 messages), no more, no less."""
        names = {path.stem for path in corpus_files()}
        self.assertEqual(names, set(EXPECTED))
        self.assertEqual(len(names), 61)

    def check(self, path: Path, answers: list[Message]) -> None:
        """The answers to one message match the table."""
        expected = EXPECTED[path.stem]
        statuses = [getattr(m, "status", None) for m in answers]
        if expected is None:
            self.assertEqual(statuses, [], path.stem)
        else:
            self.assertEqual(statuses, [expected], path.stem)

    def test_udp(self) -> None:
        """Over UDP every message gets its expected answer."""
        for path in corpus_files():
            stack = FakeSipStack(local_domains=LOCAL)
            self.check(path, stack.send_udp(path.read_bytes()))

    def test_tcp(self) -> None:
        """Over TCP the same answers come back on the connection."""
        for path in corpus_files():
            stack = FakeSipStack(local_domains=LOCAL)
            peer = stack.connect_tcp()
            data = path.read_bytes()
            if path.stem in ("clerr",):
                # Content-Length beyond the data: on a stream Warden waits for the
                # rest; the peer closing (or the idle timer) ends it.
                self.assertEqual(peer.send(data), [])
                continue
            answers = peer.send(data)
            if path.stem == "dblreq":
                answers = answers[:1]  # the extra octets are a second, broken message
            self.check(path, answers)

    def test_bext01_lists_unsupported(self) -> None:
        """420 names every unknown Require option in Unsupported (RFC 4475 §3.3.5)."""
        stack = FakeSipStack(local_domains=LOCAL)
        (response,) = stack.send_udp((CORPUS / "rfc4475" / "bext01.dat").read_bytes())
        self.assertEqual(
            response.get_all("Unsupported"), ["nothingSupportsThis", "nothingSupportsThisEither"]
        )

    def test_invut_and_sdp01_name_accept(self) -> None:
        """415 and 406 tell the client what Warden accepts."""
        for name in ("invut", "sdp01"):
            stack = FakeSipStack(local_domains=LOCAL)
            (response,) = stack.send_udp((CORPUS / "rfc4475" / f"{name}.dat").read_bytes())
            self.assertEqual(response.get("Accept"), "application/sdp")


class RegistrarContactFormTests(SynchronousTestCase):
    """cparam01, cparam02, regescrt: the contacts a registrar must store (RFC 4475 §3.3)."""

    def register(self, name: str, user: str) -> tuple[FakeSipStack, Message]:
        """Send the message, answer the challenge as ``user``, return the final answer."""
        stack = FakeSipStack(local_domains=LOCAL)
        stack.directory = stack.directory  # keep the fixture's directory
        self.successResultOf(stack.directory.add_extension(make_extension(user, "", REALM, "pw")))
        data = (CORPUS / "rfc4475" / f"{name}.dat").read_bytes()
        (challenge,) = stack.send_udp(data)
        self.assertEqual(challenge.status, 401)
        authz = answer_challenge(
            challenge.get_all("WWW-Authenticate")[0], user, "pw", "REGISTER", "sip:example.com"
        )
        request = parse_datagram(data)
        request.set("Authorization", authz)
        request.set("CSeq", f"{request.cseq.number + 1} REGISTER")
        request.set("Via", request.get("Via").replace("branch=z9hG4bK", "branch=z9hG4bK2"))  # type: ignore[union-attr]
        (final,) = stack.send_udp(request.to_bytes())
        return stack, final

    def stored(self, stack: FakeSipStack, aor: str) -> list[str]:
        """Contacts stored for ``aor``."""
        found = self.successResultOf(stack.location.bindings_for(aor, stack.clock.seconds()))
        return sorted(b.contact for b in found)

    def test_cparam01(self) -> None:
        """A Contact addr-spec's parameters are header parameters, not URI ones."""
        stack, final = self.register("cparam01", "watson")
        self.assertEqual(final.status, 200)
        self.assertEqual(self.stored(stack, "watson"), ["sip:+19725552222@gw1.example.net"])

    def test_cparam02(self) -> None:
        """Parameters inside <> stay on the URI; those after it belong to the header."""
        stack, final = self.register("cparam02", "watson")
        self.assertEqual(final.status, 200)
        self.assertEqual(
            self.stored(stack, "watson"), ["sip:+19725552222@gw1.example.net;unknownparam"]
        )

    def test_regescrt(self) -> None:
        """An escaped Route header inside the Contact URI is kept with the binding."""
        stack, final = self.register("regescrt", "user")
        self.assertEqual(final.status, 200)
        self.assertEqual(
            self.stored(stack, "user"), ["sip:user@example.com?Route=%3Csip:sip.example.com%3E"]
        )
