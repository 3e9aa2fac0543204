"""
``--provision``: create the load test's users through Warden's admin REST API
(``POST /api/v1/extensions``) before the run and delete them after
(``DELETE /api/v1/extensions/<number>``), with the API token from
``$WARDEN_ADMIN_TOKEN`` (sent as ``Authorization: Bearer``, never logged).

HTTPS certificates are verified; ``--admin-ca`` names the PEM file of the CA (or
the self-signed certificate) to trust.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS

from warden.errors import WardenError

from .results import Account

if TYPE_CHECKING:
    from .options import Settings

TOKEN_VARIABLE = "WARDEN_ADMIN_TOKEN"
#: Requests to the admin API in flight at once.
PARALLEL = 8


class ProvisionError(WardenError):
    """The admin API refused to create the users (the message says which and why)."""


def _policy(ca_file: str | None) -> IPolicyForHTTPS:
    if ca_file is None:
        return BrowserLikePolicyForHTTPS()  # type: ignore[no-untyped-call]
    from twisted.internet import ssl

    with open(ca_file, "rb") as f:
        authority = ssl.Certificate.loadPEM(f.read())
    return BrowserLikePolicyForHTTPS(trustRoot=authority)  # type: ignore[no-untyped-call]


class Provisioner:
    """
    Creates and deletes extensions through the admin API at ``base_url``.

    Args:
        reactor: for the HTTP client.
        base_url: ``https://host:port`` (or ``http://`` for a metrics-style listener).
        token: the API token.
        ca_file: PEM certificate to trust for HTTPS, else the system's roots.
    """

    log = Logger()

    def __init__(
        self, reactor: Any, base_url: str, token: str, ca_file: str | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._agent = Agent(reactor, contextFactory=_policy(ca_file))  # type: ignore[no-untyped-call]
        self.created: list[str] = []

    @classmethod
    def for_settings(cls, settings: Settings, reactor: Any) -> Provisioner | None:
        """The provisioner a run asks for (None without ``--provision``)."""
        if not settings.provision or settings.admin_url is None:
            return None
        token = os.environ.get(TOKEN_VARIABLE, "")
        return cls(reactor, settings.admin_url, token, settings.admin_ca)

    async def _request(
        self, method: bytes, path: str, body: dict[str, Any] | None
    ) -> tuple[int, bytes]:
        headers = Headers({b"Authorization": [f"Bearer {self._token}".encode()]})
        producer = None
        if body is not None:
            from io import BytesIO

            from twisted.web.client import FileBodyProducer

            headers.addRawHeader(b"Content-Type", b"application/json")
            data = BytesIO(json.dumps(body).encode())
            producer = FileBodyProducer(data)  # type: ignore[no-untyped-call]
        url = f"{self.base_url}/api/v1/{path}".encode()
        response = await self._agent.request(method, url, headers, producer)
        return response.code, await readBody(response)

    async def _parallel(self, items: Iterable[Any], action: Any) -> None:
        semaphore = defer.DeferredSemaphore(PARALLEL)

        def start(item: Any) -> defer.Deferred[None]:
            return defer.Deferred.fromCoroutine(action(item))

        results = await defer.DeferredList(
            [semaphore.run(start, i) for i in items], consumeErrors=True
        )
        for ok, value in results:  # every request has ended; report the first problem
            if not ok:
                failure: Any = value
                failure.raiseException()

    async def create(self, accounts: list[Account]) -> None:
        """
        Create every account's extension with its password.

        Raises:
            ProvisionError: the API refused one (already created ones are deleted).
        """

        async def one(account: Account) -> None:
            code, body = await self._request(
                b"POST", "extensions", {"number": account.user, "password": account.password}
            )
            if code != 201:
                raise ProvisionError(
                    f"POST {self.base_url}/api/v1/extensions for {account.user}: "
                    f"{code} {_reason(body)}"
                )
            self.created.append(account.user)

        try:
            await self._parallel(accounts, one)
        except ProvisionError:
            await self.delete(accounts)
            raise
        except Exception as e:  # connection refused, TLS failure...
            await self.delete(accounts)
            raise ProvisionError(f"admin API at {self.base_url}: {e}") from None

    async def delete(self, accounts: list[Account]) -> None:
        """Delete the extensions this provisioner created (failures are logged)."""
        mine = set(self.created)

        async def one(account: Account) -> None:
            code, body = await self._request(b"DELETE", f"extensions/{account.user}", None)
            if code in (204, 404):
                self.created.remove(account.user)
            else:
                self.log.warn(
                    "Could not delete extension {number}: {code} {reason}",
                    number=account.user,
                    code=code,
                    reason=_reason(body),
                )

        try:
            await self._parallel([a for a in accounts if a.user in mine], one)
        except Exception as e:  # the run's report matters more than the clean-up
            self.log.warn("Deleting extensions failed: {why}", why=str(e))


def _reason(body: bytes) -> str:
    try:
        document = json.loads(body)
        error = document.get("error", document)
        return str(error.get("message") or error)
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")
