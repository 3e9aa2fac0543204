"""
``sip.max_message_bytes`` on UDP, with real sockets on 127.0.0.1: a datagram up
to the limit arrives whole however far past Twisted's default 8,192-byte read
it goes, and one past the limit is counted and dropped, never parsed truncated.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from warden.sip import metrics
from warden.sip.dispatch import RequestDispatcher
from warden.sip.message import Response
from warden.sip.parser import parse_datagram
from warden.sip.service import udp_server
from warden.sip.timers import TimerSettings
from warden.sip.transaction import TransactionLayer
from warden.sip.transport import SipDatagramProtocol, TransportHub

LIMIT = 16384


def options(size: int) -> bytes:
    """
    An OPTIONS request of exactly ``size`` bytes: an extension header pads it
    right after the request line, so a truncated copy loses the headers that
    follow (From, To, CSeq...) and cannot pass for the whole request.
    """
    start = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nX-Padding: "
    rest = (
        f"\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKbig{size};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:1001@127.0.0.1>;tag=f1\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: big-{size}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    data = (start + "a" * (size - len(start) - len(rest)) + rest).encode()
    assert len(data) == size
    return data


class Phone(DatagramProtocol):
    """A UDP client that hands each response it receives to a waiting Deferred."""

    def __init__(self) -> None:
        self.waiting: defer.Deferred[Response] | None = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Deliver a response to whoever waits for one."""
        message = parse_datagram(datagram)
        if self.waiting is not None and isinstance(message, Response):
            waiting, self.waiting = self.waiting, None
            waiting.callback(message)


class LargeDatagramTests(TestCase):
    """The SIP UDP listener as SipService builds it, on a real socket."""

    timeout = 10

    def setUp(self) -> None:
        hub = TransportHub(reactor, LIMIT, 600.0)  # type: ignore[arg-type]
        core = RequestDispatcher(lambda host: host == "127.0.0.1")
        self.layer = TransactionLayer(reactor, TimerSettings(), hub.send, core)  # type: ignore[arg-type]
        hub.receiver = self.layer.receive
        server = udp_server(0, SipDatagramProtocol(hub), "127.0.0.1", LIMIT)
        server.startService()
        self.addCleanup(server.stopService)
        self.addCleanup(self.layer.terminate_all)
        self.address = ("127.0.0.1", server._port.getHost().port)  # type: ignore[attr-defined]
        self.phone = Phone()
        port = reactor.listenUDP(0, self.phone, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)

    def ask(self, size: int) -> defer.Deferred[Response]:
        """Send an OPTIONS of ``size`` bytes; a Deferred for the response."""
        self.phone.waiting = defer.Deferred()
        self.phone.transport.write(options(size), self.address)  # type: ignore[union-attr]
        return self.phone.waiting

    @defer.inlineCallbacks
    def test_large_datagram_answered(self) -> Any:
        """A 12,000-byte OPTIONS (over 8 KiB, under the limit) gets 200."""
        response = yield self.ask(12000)
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_datagram_at_limit_answered(self) -> Any:
        """A datagram of exactly ``max_message_bytes`` is accepted."""
        response = yield self.ask(LIMIT)
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_oversized_datagram_dropped(self) -> Any:
        """
        A datagram one byte over the limit is counted as a parse error and
        dropped; the next normal request is still answered.
        """
        errors = metrics.PARSE_ERRORS.labels("udp")
        before = errors._value.get()
        self.phone.transport.write(options(LIMIT + 1), self.address)  # type: ignore[union-attr]
        response = yield self.ask(600)
        self.assertEqual(response.status, 200)
        self.assertEqual(errors._value.get(), before + 1)
