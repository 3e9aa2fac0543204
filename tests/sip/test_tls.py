"""
The SIP TLS listener (L{warden.sip.tls}) on a Clock and StringTransport: the
handshake deadline (``[tls] handshake_timeout``), messages arriving as transport
``tls`` and answered on their connection, the shared per-IP connection cap, and
Via/Contact naming the TLS port on TLS flows.
"""

from __future__ import annotations

import os

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_transport import options
from warden.sip import metrics
from warden.sip.addressing import Addressing
from warden.sip.flow import Flow
from warden.sip.parser import StreamFramer
from warden.sip.tls import SipTlsFactory, SipTlsProtocol
from warden.testing.sipstack import FakeSipStack
from warden.tls import ReloadableContextFactory, generate_self_signed

EPSILON = 0.001


def tls_options(n: int = 1) -> bytes:
    """An OPTIONS request as a phone sends it over TLS."""
    return options(n).replace(b"SIP/2.0/UDP", b"SIP/2.0/TLS")


def connect(stack: FakeSipStack, timeout: float = 10.0) -> tuple[SipTlsProtocol, StringTransport]:
    """A SIP-over-TLS connection (below the TLS layer) from 192.0.2.30:40000."""
    protocol = SipTlsProtocol(stack.hub, timeout)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.30", 40000))
    protocol.makeConnection(transport)
    return protocol, transport


def deadlines(stack: FakeSipStack, protocol: SipTlsProtocol) -> list[object]:
    """The pending handshake deadlines of ``protocol``."""
    return [
        call
        for call in stack.clock.getDelayedCalls()
        if call.func == protocol._handshake_timed_out  # type: ignore[attr-defined]
    ]


class HandshakeDeadlineTests(SynchronousTestCase):
    """A connection must complete its TLS handshake within handshake_timeout."""

    def test_stalled_handshake_is_aborted(self) -> None:
        """
        Without a handshake the connection stays open until just before the
        timeout and is aborted just after it; the timeout is counted.
        """
        stack = FakeSipStack()
        _protocol, transport = connect(stack, timeout=10.0)
        before = metrics.TLS_HANDSHAKE_TIMEOUTS._value.get()
        stack.clock.advance(10.0 - EPSILON)
        self.assertFalse(transport.disconnecting)
        stack.clock.advance(2 * EPSILON)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(metrics.TLS_HANDSHAKE_TIMEOUTS._value.get(), before + 1)

    def test_completed_handshake_stops_the_deadline(self) -> None:
        """After the handshake the deadline is gone: the connection lives on."""
        stack = FakeSipStack()
        protocol, transport = connect(stack, timeout=10.0)
        protocol.handshakeCompleted()
        stack.clock.advance(11.0)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(deadlines(stack, protocol), [])

    def test_lost_connection_cancels_the_deadline(self) -> None:
        """A connection that closes during its handshake leaves no timer behind."""
        stack = FakeSipStack()
        protocol, _ = connect(stack)
        protocol.connectionLost()
        self.assertNotIn(protocol, stack.hub.connections)
        deadlines = [
            c for c in stack.clock.getDelayedCalls() if c.func == protocol._handshake_timed_out
        ]
        self.assertEqual(deadlines, [])


class TlsMessagesTests(SynchronousTestCase):
    """Messages on a TLS connection."""

    def test_answered_on_the_connection_as_tls(self) -> None:
        """
        An OPTIONS over TLS is answered on the same connection, its Via keeps
        TLS and gets ``received``/``rport``, and the request is counted under
        transport ``tls``.
        """
        stack = FakeSipStack()
        protocol, transport = connect(stack)
        protocol.handshakeCompleted()
        before = metrics.REQUESTS.labels("OPTIONS", "tls")._value.get()
        protocol.dataReceived(tls_options())
        (response,) = StreamFramer().feed(transport.value())
        self.assertEqual(response.status, 200)
        self.assertTrue(response.top_via.transport.upper() == "TLS")
        self.assertEqual(response.top_via.param("rport"), "40000")
        self.assertEqual(metrics.REQUESTS.labels("OPTIONS", "tls")._value.get(), before + 1)


class TlsFactoryTests(SynchronousTestCase):
    """The listener's factory."""

    def setUp(self) -> None:
        """A generated certificate for the factory's context."""
        directory = self.mktemp()
        os.mkdir(directory)
        cert, key = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
        generate_self_signed(cert, key, Clock())
        self.context = ReloadableContextFactory(cert, key, listener="test-sip")

    def test_wraps_sip_in_tls(self) -> None:
        """A connection is TLS around a SIP-over-TLS protocol with the deadline."""
        stack = FakeSipStack()
        factory = SipTlsFactory(stack.hub, self.context, 7.0)
        built = factory.buildProtocol(IPv4Address("TCP", "192.0.2.40", 5000))
        assert isinstance(built, TLSMemoryBIOProtocol)
        inner = built.wrappedProtocol
        assert isinstance(inner, SipTlsProtocol)
        self.assertEqual(inner.handshake_timeout, 7.0)

    def test_cap_shared_with_tcp(self) -> None:
        """
        TCP and TLS connections count against one per-IP cap
        (``sip.tcp_connections_per_ip``): with the cap held by TCP, a TLS
        connection from that IP is refused before any TLS work.
        """
        stack = FakeSipStack(tcp_connections_per_ip=2)
        stack.connect_tcp(("192.0.2.50", 1))
        stack.connect_tcp(("192.0.2.50", 2))
        factory = SipTlsFactory(stack.hub, self.context, 10.0)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.50", 3)))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.51", 3)))


class TlsAddressingTests(SynchronousTestCase):
    """Via and Contact towards a TLS peer carry the TLS port."""

    def test_via_for_tls_uses_tls_port(self) -> None:
        """RFC 3261 §18.2.1: the sent-by on a TLS flow is the TLS port, 5060 elsewhere."""
        addressing = Addressing("192.0.2.1", lambda: 5060, tls_port=lambda: 5061)
        self.assertEqual(addressing.via_for(Flow("tls", "192.0.2.9", 4000)), "192.0.2.1:5061")
        self.assertEqual(addressing.via_for(Flow("tcp", "192.0.2.9", 4000)), "192.0.2.1:5060")
        self.assertEqual(addressing.via_for(Flow("udp", "192.0.2.9", 4000)), "192.0.2.1:5060")
