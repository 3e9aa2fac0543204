"""
A client transaction's outcome as a Deferred, for Warden's own user agents (the
load generator, the drill's probe): the transaction user that a request sent
with L{warden.sip.transaction.TransactionLayer.send_request} reports to
(RFC 3261 §17.1).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from warden.interfaces import IClientTransactionUser
from warden.sip.message import Response
from warden.sip.transaction import ClientTransaction


@implementer(IClientTransactionUser)
class ResponseWaiter:
    """
    Collects a client transaction's outcome: ``final`` fires with the final
    response, or with None on time-out or transport failure (``cause`` says which).
    Provisional responses go to ``on_provisional``; 2xx retransmissions to an
    INVITE (RFC 6026 §7.2) to ``on_2xx_again``.
    """

    def __init__(self) -> None:
        self.final: defer.Deferred[Response | None] = defer.Deferred()
        self.cause: str | None = None
        self.on_provisional: Any = None
        self.on_2xx_again: Any = None
        self._done = False

    def response_received(self, transaction: ClientTransaction, response: Response) -> None:
        """A provisional or final response."""
        if response.status < 200:
            if self.on_provisional is not None:
                self.on_provisional(response)
            return
        if self._done:
            if response.status < 300 and self.on_2xx_again is not None:
                self.on_2xx_again(response)
            return
        self._done = True
        self.final.callback(response)

    def timed_out(self, transaction: ClientTransaction) -> None:
        """Timer B or F fired."""
        self.fail("timeout")

    def transport_failed(self, transaction: ClientTransaction) -> None:
        """The request could not be sent."""
        self.fail("transport")

    def fail(self, cause: str) -> None:
        """End without a final response, for ``cause``."""
        if not self._done:
            self._done = True
            self.cause = cause
            self.final.callback(None)
