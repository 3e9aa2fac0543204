"""
A local HTTPS server for webhook tests: a self-signed certificate for
127.0.0.1 made for the test (its PEM is the CA a client is given), every POST
kept, and the statuses answered in the order a test scripts them.

    server = start_webhook_server(directory)
    url = server.url("/hook/secret-token")
    ... POSTs arrive ... server.requests[0].body
"""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.web import resource, server

from tests.integration.clients import LOCALHOST, real_reactor
from warden.tls import generate_self_signed

__all__ = ["WebhookServer", "server_certificate", "start_webhook_server"]


@attrs.frozen
class Received:
    """One POST: its path, headers (lower-case names) and body."""

    path: str
    headers: dict[str, str]
    body: bytes


class _Hook(resource.Resource):
    isLeaf = True

    def __init__(self, owner: WebhookServer) -> None:
        super().__init__()
        self.owner = owner

    def render_POST(self, request: server.Request) -> bytes:
        assert request.content is not None
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        self.owner.requests.append(
            Received(request.path.decode(), headers, request.content.read())
        )
        status = self.owner.statuses.pop(0) if self.owner.statuses else 200
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/plain")
        return b"x" * self.owner.answer_bytes


class WebhookServer:
    """
    The server's state.

    Attributes:
        ca_path: the certificate the server presents (give it as the CA).
        statuses: statuses answered next, in order (then 200).
        requests: the POSTs received.
        answer_bytes: the size of each answer's body.
    """

    def __init__(self, ca_path: Path) -> None:
        self.ca_path = ca_path
        self.statuses: list[int] = []
        self.requests: list[Received] = []
        self.answer_bytes = 2
        self._port: IListeningPort | None = None

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server."""
        assert self._port is not None
        return f"https://{LOCALHOST}:{self._port.getHost().port}{path}"

    def stop(self) -> Deferred[None]:
        """Stop listening."""
        assert self._port is not None
        stopped: Deferred[None] = self._port.stopListening()  # type: ignore[assignment]
        return stopped


def server_certificate(directory: Path, name: str) -> tuple[Path, ssl.ContextFactory]:
    """
    A new self-signed certificate for 127.0.0.1 in ``directory``: its PEM
    file (the CA a client trusts) and a server context serving it.
    """
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    generate_self_signed(str(cert), str(key), real_reactor(), common_name=f"{name} test")
    return cert, ssl.DefaultOpenSSLContextFactory(str(key), str(cert))


def start_webhook_server(directory: Path) -> WebhookServer:
    """An HTTPS server on 127.0.0.1 (a free port) with a new certificate in ``directory``."""
    cert, context = server_certificate(directory, "webhook")
    hook = WebhookServer(cert)
    hook._port = real_reactor().listenSSL(
        0, server.Site(_Hook(hook)), context, interface=LOCALHOST
    )
    return hook
