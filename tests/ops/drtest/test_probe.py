"""
The drill's probe on Warden's SIP stack, against a Clock and a fake socket: its
requests are retransmitted by the transaction layer (RFC 3261 §17.1.2.2 Timer E),
a failed INVITE is acknowledged by its transaction (§17.1.1.3), retransmitted
requests from the PBX are absorbed, and the digest answer is made from HA1.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.backup.helpers import REALM, password
from warden.interfaces import ITransactionUser
from warden.ops.drtest.probe import Identity, ProbeAgent, ProbeFailed
from warden.sip.auth import challenge, expected_response, parse_credentials
from warden.sip.message import Request, Response, make_response
from warden.sip.parser import parse_datagram
from warden.sip.timers import TimerSettings
from warden.store.credentials import make_extension
from warden.testing.rtpnet import FakeNetwork

SERVER = ("127.0.0.1", 5060)
PORT = 40000


def _identity() -> Identity:
    e = make_extension("100", "", REALM, password("100"))
    return Identity("100", REALM, {"MD5": e.ha1_md5, "SHA-256": e.ha1_sha256})


class ProbeAgentTests(SynchronousTestCase):
    """ProbeAgent's requests and answers go through Warden's transaction layer."""

    def setUp(self) -> None:
        """A probe bound to a fake UDP port, with a Clock."""
        self.clock = Clock()
        self.network = FakeNetwork()
        self.agent = ProbeAgent(self.clock, SERVER, _identity())
        self.port = self.network.listen_udp(PORT, self.agent, interface="127.0.0.1")
        self.agent.bound(PORT)

    def sent(self) -> list[Request | Response]:
        """The messages the probe wrote since the last call, all to the server."""
        out = []
        for datagram, addr in self.network.sent_from(PORT):
            self.assertEqual(addr, SERVER)
            message = parse_datagram(datagram)
            assert isinstance(message, (Request, Response))
            out.append(message)
        return out

    def reply(self, request: Request, status: int, **kw: object) -> None:
        """The server answers ``request``."""
        response = make_response(request, status, **kw)  # type: ignore[arg-type]
        self.network.deliver(PORT, response.to_bytes(), SERVER)

    def test_provides(self) -> None:
        """The probe is a transaction user."""
        self.assertTrue(verifyObject(ITransactionUser, self.agent))

    def test_register_retransmitted_on_timer_e(self) -> None:
        """
        An unanswered REGISTER goes again after T1, then 2*T1 (RFC 3261
        §17.1.2.2), and not a moment before; the 401 is answered with a digest
        made from the stored HA1 and the 200 completes the registration.
        """
        t1 = TimerSettings().t1
        done = Deferred.fromCoroutine(self.agent.register())
        [first] = self.sent()
        self.assertEqual(first.method, "REGISTER")  # type: ignore[union-attr]
        self.clock.advance(t1 - 0.001)
        self.assertEqual(self.sent(), [])
        self.clock.advance(0.001)
        self.assertEqual([m.to_bytes() for m in self.sent()], [first.to_bytes()])
        self.clock.advance(2 * t1 - 0.001)
        self.assertEqual(self.sent(), [])
        self.clock.advance(0.001)
        self.assertEqual(len(self.sent()), 1)
        assert isinstance(first, Request)
        self.reply(first, 401, headers=[("WWW-Authenticate", challenge(REALM, "n1", "MD5"))])
        [second] = self.sent()
        assert isinstance(second, Request)
        creds = parse_credentials(second.get("Authorization") or "")
        assert creds is not None
        self.assertEqual(
            creds.response, expected_response(creds, _identity().ha1["MD5"], "REGISTER")
        )
        self.assertNotEqual(second.top_via.branch, first.top_via.branch)
        self.reply(second, 200)
        self.assertIsNone(self.successResultOf(done))
        self.clock.advance(60)
        self.assertEqual(self.sent(), [])

    def test_failed_invite_acknowledged_by_its_transaction(self) -> None:
        """
        A 486 to the probe's INVITE is acknowledged with an ACK on the INVITE's
        branch (RFC 3261 §17.1.1.3), and the call fails with the status.
        """
        done = Deferred.fromCoroutine(self.agent.call("101"))
        [invite] = self.sent()
        assert isinstance(invite, Request)
        self.assertEqual(invite.method, "INVITE")
        self.reply(invite, 486, to_tag="t1")
        [ack] = self.sent()
        assert isinstance(ack, Request)
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(ack.top_via.branch, invite.top_via.branch)
        self.assertIn("486", str(self.failureResultOf(done, ProbeFailed).value))

    def test_no_answer_is_probe_failed(self) -> None:
        """A REGISTER nobody answers fails the probe with 'no answer' after 8 s."""
        done = Deferred.fromCoroutine(self.agent.register())
        self.clock.advance(7.9)
        self.assertNoResult(done)
        self.clock.advance(0.1)
        self.assertIn("no answer", str(self.failureResultOf(done, ProbeFailed).value))

    def test_retransmitted_invite_answered_once(self) -> None:
        """
        The PBX's retransmitted INVITE is absorbed by the server transaction:
        one call counted, the same 200 sent again.
        """
        invite = Request(
            "INVITE",
            f"sip:100@127.0.0.1:{PORT}",
            [
                ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKpbx1"),
                ("Max-Forwards", "70"),
                ("From", "<sip:101@127.0.0.1>;tag=f1"),
                ("To", "<sip:100@127.0.0.1>"),
                ("Call-ID", "c1@127.0.0.1"),
                ("CSeq", "1 INVITE"),
            ],
        )
        self.network.deliver(PORT, invite.to_bytes(), SERVER)
        self.network.deliver(PORT, invite.to_bytes(), SERVER)
        self.assertEqual(self.agent.answered_calls, 1)
        statuses = [m.status for m in self.sent() if isinstance(m, Response)]
        self.assertEqual(statuses[0], 200)
        self.assertTrue(all(s == 200 for s in statuses))

    def test_closing_ends_transactions(self) -> None:
        """
        Closing the socket stops the probe's retransmissions and ends what waited
        for an answer at once (no timer left).
        """
        done = Deferred.fromCoroutine(self.agent.register())
        self.port.stopListening()
        self.assertIn("no answer", str(self.failureResultOf(done, ProbeFailed).value))
        self.assertEqual(self.clock.getDelayedCalls(), [])
