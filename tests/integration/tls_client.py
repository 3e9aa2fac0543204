"""
A SIP user agent client over TLS for the integration tests: Warden's parser and
digest code over a Twisted TLS connection (no certificate verification: the
tests' certificates are self-signed), with the served certificate's
fingerprint at hand.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.hazmat.primitives import serialization
from twisted.internet import protocol, ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.integration.clients import (
    ANSWER_SDP,
    LOCALHOST,
    SipUdpClient,
    new_branch,
    poll,
    real_reactor,
)
from warden.errors import SipParseError
from warden.sip.message import Request, Response, make_response, new_tag
from warden.sip.parser import StreamFramer
from warden.tls import fingerprint


#: The answer of an auto-answering client: G.711 A-law at a port nobody uses.
class SipTlsClient(protocol.Protocol):
    """
    One TLS connection to Warden's SIP listener. Requests Warden sends on it
    are kept in L{requests}; INVITEs are answered with 200 and BYEs with 200
    (a phone that picks up at once).
    """

    #: The digest REGISTER exchange of the UDP client, over this connection.
    register = SipUdpClient.register

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.framer = StreamFramer()
        self.lost = False
        self.requests: list[Request] = []
        self.tag = new_tag()
        self._pending: dict[str, Deferred[Response]] = {}

    @classmethod
    async def connect(cls, server: tuple[str, int]) -> SipTlsClient:
        """Connect and finish the TLS handshake."""
        client = cls(server)
        options = ssl.CertificateOptions(verify=False)
        endpoint = SSL4ClientEndpoint(real_reactor(), server[0], server[1], options, timeout=5)
        await connectProtocol(endpoint, client)
        await client.request("OPTIONS", f"sip:{server[0]}:{server[1]}", client._probe_headers())
        return client

    def _probe_headers(self) -> list[tuple[str, str]]:
        return [
            ("From", f"<sip:probe@{LOCALHOST}>;tag={new_branch()}"),
            ("To", f"<sip:{self.server[0]}>"),
            ("Call-ID", new_branch()),
            ("CSeq", "1 OPTIONS"),
        ]

    @property
    def peer_fingerprint(self) -> str:
        """The SHA-256 fingerprint of the certificate Warden served."""
        cert = self.transport.getPeerCertificate()  # type: ignore[union-attr]
        pem = cert.to_cryptography().public_bytes(serialization.Encoding.PEM)
        return fingerprint(pem)

    @property
    def local_port(self) -> int:
        """This end's port."""
        return int(self.transport.getHost().port)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        """Hand final responses to their waiters; keep requests from Warden."""
        try:
            messages = self.framer.feed(data)
        except SipParseError:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        for message in messages:
            if isinstance(message, Request):
                self.requests.append(message)
                self._answer(message)
                continue
            assert isinstance(message, Response)
            branch = message.top_via.param("branch")
            if message.status >= 200 and branch is not None:
                waiting = self._pending.pop(branch, None)
                if waiting is not None:
                    waiting.callback(message)

    def _answer(self, request: Request) -> None:
        """Pick up an INVITE, accept a BYE (RFC 3261 §13.3, §15.1.2)."""
        if request.method == "INVITE":
            contact = f"<sip:callee@{LOCALHOST}:{self.local_port};transport=tls>"
            response = make_response(request, 200, "OK", self.tag, [("Contact", contact)])
            response.set_body(ANSWER_SDP, "application/sdp")
        elif request.method in ("BYE", "CANCEL", "OPTIONS"):
            response = make_response(request, 200, "OK", self.tag)
        else:
            return
        self.transport.write(response.to_bytes())  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        """Warden (or we) closed the connection."""
        self.lost = True

    def request(
        self,
        method: str,
        uri: str,
        headers: Iterable[tuple[str, str]],
        timeout: float = 5.0,
        retransmit: bool = False,
    ) -> Deferred[Response]:
        """Send a request on the connection; fires with its final response."""
        branch = new_branch()
        via = f"SIP/2.0/TLS {LOCALHOST}:{self.local_port};branch={branch};rport"
        request = Request(method, uri, [("Via", via), ("Max-Forwards", "70"), *headers])
        answered: Deferred[Response] = Deferred()
        self._pending[branch] = answered
        self.transport.write(request.to_bytes())  # type: ignore[union-attr]
        answered.addTimeout(timeout, real_reactor())
        return answered

    async def close(self) -> None:
        """Close and wait (bounded) until the connection is gone."""
        if not self.lost:
            self.transport.abortConnection()  # type: ignore[union-attr]
            await poll(lambda: self.lost, 5.0, 0.01)


async def callee_behind_nat(
    case: TestCase, server: tuple[str, int], number: str, password: str
) -> SipTlsClient:
    """
    A phone registered over TLS at ``server`` as extension ``number`` with a
    Contact Warden cannot reach (as behind a NAT), so that it is reached
    through its connection only (RFC 5923); closed when ``case`` ends.
    """
    phone = await SipTlsClient.connect(server)
    case.addCleanup(lambda: Deferred.fromCoroutine(phone.close()))
    unreachable = f"<sip:{number}@192.0.2.1:5061;transport=tls>"
    registered = await phone.register(number, password, unreachable)
    case.assertEqual(registered.status, 200)
    return phone
