"""
Trunks over TLS (ADR 0034) on a memory reactor: the Request-URI, the
connection opened only for the trunk tried and wrapped in TLS with the
trunk's host for SNI and certificate checks, a failed handshake reported to
the trunk's failure metric, and the connection-level report of a handshake
that fails or stalls.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.features.stir_pki import make_ca
from tests.features.test_trunks import ITSP, TrunkCallTestCase, metric
from tests.sip.test_b2bua import only
from warden.features.trunk_config import parse_routes, parse_trunks
from warden.features.trunks import TrunkService, request_uri
from warden.sip.message import Request
from warden.sip.tls import SipTlsProtocol
from warden.testing.sipstack import FakeSipStack


def sip_protocol(factory: Any, host: str, port: int) -> tuple[SipTlsProtocol, list[str]]:
    """
    The SIP protocol inside the TLS connection ``factory`` builds to
    ``host``:``port``, and the names of the layers around it.
    """
    layers, inner = [], factory.buildProtocol(IPv4Address("TCP", host, port))
    while not isinstance(inner, SipTlsProtocol):
        layers.append(type(inner).__name__)
        inner = getattr(inner, "wrappedProtocol", None) or inner._wrappedProtocol
    return inner, layers


def trunk(**keys: object) -> object:
    return parse_trunks([{"name": "itsp", "host": "sip.example.net", "register": False,
                          **keys}]).trunks[0]  # fmt: skip


class RequestUriTests(SynchronousTestCase):
    """The Request-URI of a call on a trunk (RFC 3261 §19.1.1, RFC 5630 §3.2)."""

    def test_forms(self) -> None:
        """``;transport=tls`` on TLS only; the port only when not the transport's default."""
        for keys, uri in (
            ({}, "sip:15551234567@sip.example.net"),
            ({"transport": "tcp"}, "sip:15551234567@sip.example.net"),
            ({"transport": "tls"}, "sip:15551234567@sip.example.net;transport=tls"),
            ({"transport": "tls", "port": 5071},
             "sip:15551234567@sip.example.net:5071;transport=tls"),
            ({"port": 5061}, "sip:15551234567@sip.example.net:5061"),
        ):  # fmt: skip
            self.assertEqual(request_uri("15551234567", trunk(**keys)), uri)  # type: ignore[arg-type]


class TlsTrunkCallTests(TrunkCallTestCase):
    """A route over a TLS trunk, then a UDP one."""

    def configure(self, inbound: object = None) -> None:
        ca_file = self.mktemp()
        with open(ca_file, "wb") as f:
            f.write(make_ca("Test ITSP CA").pem)
        trunks = parse_trunks([
            {"name": "secure", "host": "192.0.2.70", "transport": "tls", "register": False,
             "tls_ca_file": ca_file, "timeout": 2},
            {"name": "itsp", "host": "192.0.2.50", "register": False},
        ])  # fmt: skip
        routes = parse_routes(
            {"outbound": [{"pattern": "_9NXXNXXXXXX", "strip": 1, "prefix": "1",
                           "trunks": ["secure", "itsp"]}]}
        )  # fmt: skip
        self.plugin.service = TrunkService(
            self.stack.clock, self.stack.sip, self.stack.directory, trunks, {}, routes
        )

    def test_tls_connection_for_the_tried_trunk(self) -> None:
        """
        The call opens one TLS connection, to the TLS trunk's port 5061 (none
        to the UDP trunk); a handshake that fails there counts
        ``warden_trunk_failures_total{reason="tls"}`` and the call goes on to
        the next trunk at once (RFC 3261 §17.1.4: a transport error, not the
        trunk's 2 s timeout; the clock does not move).
        """
        clock = self.stack.clock
        mark = self.stack.mark()
        before = metric("warden_trunk_failures_total", trunk="secure", reason="tls")
        self.alice.call("95552345678")
        connects = [(host, port) for host, port, *_ in clock.tcpClients]
        self.assertEqual(connects, [("192.0.2.70", 5061)])
        inner, layers = sip_protocol(clock.tcpClients[0][2], "192.0.2.70", 5061)
        self.assertIn("BufferingTLSTransport", layers)  # Twisted's TLSMemoryBIOProtocol
        inner.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.70", 5061)))
        inner.connectionLost(Failure(ValueError("certificate verify failed")))
        after = metric("warden_trunk_failures_total", trunk="secure", reason="tls")
        self.assertEqual(after, before + 1)
        invite = only(self.stack.sent_since(mark), ITSP, "INVITE")
        assert isinstance(invite, Request)
        self.assertEqual(invite.uri_text, "sip:15552345678@192.0.2.50")

    def connection(self) -> tuple[Any, SipTlsProtocol]:
        """Alice calls out: the TCP factory of the TLS trunk's connection and its SIP protocol."""
        self.alice.call("95552345678")
        factory = self.stack.clock.tcpClients[0][2]
        return factory, sip_protocol(factory, "192.0.2.70", 5061)[0]

    def test_connection_refused(self) -> None:
        """
        The TLS trunk refuses the TCP connection: counted ``connect``, and the
        call is on the next trunk at once (the clock does not move).
        """
        mark = self.stack.mark()
        before = metric("warden_trunk_failures_total", trunk="secure", reason="connect")
        factory, _ = self.connection()
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        after = metric("warden_trunk_failures_total", trunk="secure", reason="connect")
        self.assertEqual(after, before + 1)
        only(self.stack.sent_since(mark), ITSP, "INVITE")

    def test_lost_before_any_response(self) -> None:
        """
        The connection closes after its handshake, the INVITE unanswered: the
        next trunk at once; a connection closing after the answer fails nothing.
        """
        mark = self.stack.mark()
        _, inner = self.connection()
        inner.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.70", 5061)))
        inner.handshakeCompleted()
        self.assertEqual([m for m, a in self.stack.sent_since(mark) if tuple(a) == ITSP], [])
        inner.connectionLost(Failure(ConnectionError()))
        invite = only(self.stack.sent_since(mark), ITSP, "INVITE")
        mark = self.stack.mark()
        self.stack.deliver(self.itsp.answer(invite, 200), ITSP)
        assert self.plugin.service is not None
        self.assertEqual(self.plugin.service.in_progress()["itsp"], 1)


class TlsRegistrationTests(SynchronousTestCase):
    """A registering TLS trunk whose connection fails."""

    def test_register_fails_at_once(self) -> None:
        """
        The provider refuses the certificate: the REGISTER fails at once
        (RFC 3261 §8.1.3.1), not at Timer F (32 s): state ``failed``,
        ``register_transport`` and ``tls`` counted, the clock unmoved.
        """
        ca_file = self.mktemp()
        with open(ca_file, "wb") as f:
            f.write(make_ca("Test ITSP CA").pem)
        stack = FakeSipStack()
        trunks = parse_trunks([
            {"name": "reg", "host": "192.0.2.71", "transport": "tls", "username": "acct",
             "password_env": "X", "tls_ca_file": ca_file},
        ])  # fmt: skip
        service = TrunkService(
            stack.clock, stack.sip, stack.directory, trunks, {"reg": "pw"}, parse_routes({})
        )
        before = {
            reason: metric("warden_trunk_failures_total", trunk="reg", reason=reason)
            for reason in ("tls", "register_transport")
        }
        service.startService()
        self.addCleanup(service.stopService)
        [(host, port, factory, *_)] = stack.clock.tcpClients
        self.assertEqual((host, port), ("192.0.2.71", 5061))
        [state] = service.status()
        self.assertEqual(state["state"], "registering")
        inner, _ = sip_protocol(factory, host, port)
        inner.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", host, port)))
        inner.connectionLost(Failure(ValueError("certificate verify failed")))
        [state] = service.status()
        self.assertEqual(state["state"], "failed")
        self.assertIn("transport", state["last_error"])
        for reason, value in before.items():
            after = metric("warden_trunk_failures_total", trunk="reg", reason=reason)
            self.assertEqual(after, value + 1, reason)


class HandshakeReportTests(SynchronousTestCase):
    """A connection Warden opened tells why its handshake failed, once."""

    def connect(self) -> tuple[SipTlsProtocol, list[str], FakeSipStack]:
        stack = FakeSipStack()
        reports: list[str] = []
        protocol = SipTlsProtocol(stack.hub, 10.0, reports.append)
        protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 5061)))
        return protocol, reports, stack

    def test_refused(self) -> None:
        """Closed before the handshake finished: reported with the error's text."""
        protocol, reports, _ = self.connect()
        protocol.connectionLost(Failure(ValueError("IPAddressMismatch")))
        self.assertEqual(reports, ["IPAddressMismatch"])

    def test_stalled(self) -> None:
        """No handshake in time: reported once, as such."""
        protocol, reports, stack = self.connect()
        stack.clock.advance(10.001)
        protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(reports, ["no handshake in time"])

    def test_after_handshake(self) -> None:
        """A connection closing after its handshake is no failure."""
        protocol, reports, _ = self.connect()
        protocol.handshakeCompleted()
        protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(reports, [])


class ClientOptionsTests(SynchronousTestCase):
    """The TLS client options of a trunk: the name checked and sent is ``host``."""

    def test_server_name(self) -> None:
        """
        A host name is the name verified and the SNI sent (never the resolved
        address); an IP address is verified as one and sends no SNI.
        """
        from warden.features.trunks import trunk_tls_options

        named: Any = trunk_tls_options(trunk(transport="tls"), fips=False)  # type: ignore[arg-type]
        self.assertEqual((named._hostnameASCII, named._hostnameIsDnsName, named._sendServerName),
                         ("sip.example.net", True, True))  # fmt: skip
        by_address: Any = trunk_tls_options(
            trunk(transport="tls", host="192.0.2.70"),
            fips=False,  # type: ignore[arg-type]
        )
        self.assertEqual((by_address._hostnameIsDnsName, by_address._sendServerName),
                         (False, False))  # fmt: skip
