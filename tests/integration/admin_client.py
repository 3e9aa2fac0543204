"""
An HTTPS client of a real Warden's admin API for integration tests: it trusts
exactly the certificate in the Warden's data directory and verifies it.
"""

from __future__ import annotations

import io
import json
import ssl as stdlib_ssl
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import ssl, threads
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from tests.integration.clients import LOCALHOST, poll, real_reactor


@attrs.frozen
class HttpResult:
    """Status, headers (lower-case names, last value) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class AdminClient:
    """
    Args:
        port: the admin HTTPS port on 127.0.0.1.
        cert_path: the PEM certificate to trust (the only one).
    """

    def __init__(self, port: int, cert_path: Path) -> None:
        self.port = port
        self.cert_path = cert_path
        trust = ssl.Certificate.loadPEM(cert_path.read_bytes())
        self._agent = Agent(real_reactor(), BrowserLikePolicyForHTTPS(trustRoot=trust))  # type: ignore[arg-type]
        self.base = f"https://{LOCALHOST}:{port}"
        self.token: str | None = None

    async def request(self, method: str, path: str, body: Any = None) -> HttpResult:
        """One request; JSON body when given, the bearer token when set."""
        headers = Headers()
        if self.token:
            headers.addRawHeader("authorization", f"Bearer {self.token}")
        producer = None
        if body is not None:
            headers.addRawHeader("content-type", "application/json")
            producer = FileBodyProducer(io.BytesIO(json.dumps(body).encode()))
        response = await self._agent.request(
            method.encode(), (self.base + path).encode(), headers, producer
        )
        data = await readBody(response)
        found = {
            k.decode().lower(): v[-1].decode() for k, v in response.headers.getAllRawHeaders()
        }
        return HttpResult(response.code, found, data)

    async def login(self, username: str, password: str) -> None:
        """Log in and use the session token from now on."""
        result = await self.request("POST", "/api/v1/auth/login",
                                    {"username": username, "password": password})  # fmt: skip
        assert result.status == 200, result.body
        self.token = result.json()["token"]


def _served_certificate(port: int, maximum: stdlib_ssl.TLSVersion | None) -> bytes:
    context = stdlib_ssl.SSLContext(stdlib_ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = stdlib_ssl.CERT_NONE
    if maximum is not None:
        context.minimum_version = stdlib_ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
        context.set_ciphers("ALL:@SECLEVEL=0")
    import socket

    with socket.create_connection((LOCALHOST, port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return der


async def served_certificate(port: int, maximum: stdlib_ssl.TLSVersion | None = None) -> bytes:
    """The DER certificate the server presents (a TLS handshake in a thread)."""
    result: bytes = await threads.deferToThreadPool(
        real_reactor(), real_reactor().getThreadPool(), _served_certificate, port, maximum
    )
    return result


async def new_admin(warden: Any, name: str = "ops") -> tuple[AdminClient, str]:
    """
    An account ``name`` made with ``wardenctl admin add`` on the running
    ``warden`` (a L{tests.integration.harness.WardenProcess}), and a client
    logged in as it; returns the client and the account's password.
    """
    from tests.integration.harness import wardenctl

    added = await wardenctl(warden.config_path, "admin", "add", name)
    assert added.code == 0, added.stderr
    password = added.stdout.split("one-time password: ")[1].split()[0]
    cert = warden.data_dir / "admin-cert.pem"
    assert await poll(cert.exists, 10), "no admin certificate"
    client = AdminClient(warden.admin_port, cert)
    await client.login(name, password)
    return client, password
