"""Tests for L{warden.rtp.ng}: requests, replies, retransmission, hostile replies."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warden.rtp import bencode
from warden.rtp.errors import MediaError
from warden.rtp.ng import NgClient, NgError, NgTimeout, parse_address
from warden.testing.ngserver import FakeNgServer


class NgClientTests(SynchronousTestCase):
    """An NgClient on a Clock against the fake rtpengine."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.server = FakeNgServer()
        self.client = NgClient(self.clock, self.server.address)
        self.port = self.server.listen_udp(0, self.client, "127.0.0.1")

    def result(self, command: str, params: dict[str, Any] | None = None) -> Any:
        return self.successResultOf(self.client.request(command, params))

    def test_ping(self) -> None:
        """ping is answered with pong; the datagram is cookie, space, dictionary."""
        self.assertEqual(self.result("ping"), {"result": b"pong"})
        datagram, addr = self.server.sent[0]
        cookie, _, body = datagram.partition(b" ")
        self.assertEqual(addr, self.server.address)
        self.assertEqual(len(cookie), 16)
        self.assertEqual(bencode.decode(body), {"command": b"ping"})
        self.assertEqual(self.client.pending, 0)

    def test_error_reply(self) -> None:
        """An error reply fails with NgError carrying the reason."""
        failure = self.failureResultOf(self.client.request("query", {"call-id": "nope"}), NgError)
        self.assertEqual(failure.value.reason, "Unknown call-id")
        self.assertIsInstance(failure.value, MediaError)

    def test_retransmits_same_datagram_then_times_out(self) -> None:
        """Unanswered: sent again after 0.5 s and 1 s more, then NgTimeout after 2 s more."""
        self.server.down = True
        d = self.client.request("ping")
        self.clock.advance(0.5)
        self.clock.advance(1.0)
        self.assertEqual(len(self.server.sent), 3)
        self.assertEqual(len({datagram for datagram, _ in self.server.sent}), 1)
        self.assertNoResult(d)
        self.clock.advance(1.99)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.failureResultOf(d, NgTimeout)
        self.assertEqual((self.client.pending, self.clock.getDelayedCalls()), (0, []))

    def test_lost_reply_then_answered(self) -> None:
        """A retransmission gets the remembered reply; the work is done once."""
        self.server.hold = True
        d = self.client.request("ping")
        self.server.held.clear()  # the first reply is lost
        self.server.hold = False
        self.clock.advance(0.5)
        self.assertEqual(self.successResultOf(d), {"result": b"pong"})
        self.assertEqual(len(self.server.requests), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_duplicate_and_late_replies_dropped(self) -> None:
        """A second copy of a reply, or one after the request timed out, is ignored."""
        self.server.hold = True
        d = self.client.request("ping")
        self.clock.advance(0.5)
        self.assertEqual(len(self.server.held), 2)
        self.server.release_held()
        self.successResultOf(d)

    def test_hostile_replies_dropped(self) -> None:
        """Wrong source, unknown cookie, garbage: dropped; the request still completes."""
        self.server.hold = True
        d = self.client.request("ping")
        ((_, reply),) = self.server.held
        cookie = reply.partition(b" ")[0]
        forged = [
            (reply, ("127.0.0.2", 2223)),
            (reply, ("127.0.0.1", 2224)),
            (b"0123456789abcdef " + reply.partition(b" ")[2], self.server.address),
            (cookie + b" d6:result", self.server.address),
            (cookie + b" i1e" + b"x" * 70000, self.server.address),
            (cookie, self.server.address),
            (b"", self.server.address),
        ]
        for datagram, source in forged:
            self.server.deliver(self.port, datagram, source)
        self.assertNoResult(d)
        self.server.release_held()
        self.successResultOf(d)

    def test_unusable_result(self) -> None:
        """A reply that is not a dictionary, or an unknown result, fails the request."""
        self.server.hold = True
        d = self.client.request("ping")
        cookie = self.server.held[0][1].partition(b" ")[0]
        self.server.deliver(self.port, cookie + b" d6:result10:load limite")
        failure = self.failureResultOf(d, NgError)
        self.assertEqual(failure.value.reason, "unexpected result load limit")
        d = self.client.request("ping")
        cookie = self.server.held[1][1].partition(b" ")[0]
        self.server.deliver(self.port, cookie + b" l6:resulte")
        self.failureResultOf(d, NgError)

    def test_reason_sanitised(self) -> None:
        """An error-reason is bounded and stripped of control characters."""
        self.server.hold = True
        d = self.client.request("ping")
        cookie = self.server.held[0][1].partition(b" ")[0]
        body = bencode.encode({"result": "error", "error-reason": b"bad\r\n\x1b[31m" + b"x" * 500})
        self.server.deliver(self.port, cookie + b" " + body)
        reason = self.failureResultOf(d, NgError).value.reason
        self.assertTrue(reason.startswith("bad???[31m"))
        self.assertEqual(len(reason), 200)

    def test_bounded_pending(self) -> None:
        """More waiting requests than max_pending fail at once."""
        self.server.down = True
        client = NgClient(self.clock, self.server.address, max_pending=2)
        self.server.listen_udp(0, client, "127.0.0.1")
        client.request("ping")
        client.request("ping")
        self.failureResultOf(client.request("ping"), MediaError)

    def test_close(self) -> None:
        """close() fails what waits, stops listening, and refuses new requests."""
        self.server.down = True
        d = self.client.request("ping")
        self.client.close()
        self.failureResultOf(d, MediaError)
        self.assertTrue(self.port.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.failureResultOf(self.client.request("ping"), MediaError)

    def test_send_error_retransmitted(self) -> None:
        """A send refused by the socket (ICMP unreachable) is retried like a lost one."""
        calls = []

        def refuse(datagram: bytes, addr: Any = None) -> None:
            calls.append(datagram)
            raise ConnectionRefusedError(111, "Connection refused")

        self.port.write = refuse  # type: ignore[method-assign]
        d = self.client.request("ping")
        self.clock.pump([0.5, 1.0, 2.0])
        self.failureResultOf(d, NgTimeout)
        self.assertEqual(len(calls), 3)


class ParseAddressTests(SynchronousTestCase):
    """rtpengine_ng values."""

    def test_valid(self) -> None:
        """IPv4 and bracketed IPv6 with a port."""
        self.assertEqual(parse_address("127.0.0.1:2223"), ("127.0.0.1", 2223))
        self.assertEqual(parse_address("[::1]:2223"), ("::1", 2223))

    def test_invalid(self) -> None:
        """No port, a name, bare IPv6, ports out of range or not ASCII digits."""
        fullwidth = "127.0.0.1:\uff12\uff12\uff12\uff13"
        bad = ("127.0.0.1", "localhost:2223", "::1:2223", "127.0.0.1:0", "127.0.0.1:65536",
               fullwidth, "127.0.0.1:+22", "1.2.3.4:", ":2223", "[::1]:x")  # fmt: skip
        for text in bad:
            self.assertRaises(ValueError, parse_address, text)
