"""
Every extension point of Warden, as zope interfaces.

Each interface has one conformance test mixin (``tests/store/conformance.py`` for
the stores) that every implementation, fakes included, must pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from zope.interface import Interface

from warden.store.model import Binding, Extension

if TYPE_CHECKING:
    from warden.sip.flow import Flow
    from warden.sip.message import Request, Response
    from warden.sip.transaction import ClientTransaction, ServerTransaction


class IDirectory(Interface):
    """
    Extensions and their credentials.

    Passwords are never stored: only the digest HA1 values for MD5 and SHA-256
    (RFC 2617, RFC 8760), computed over ``username:realm:password``.
    Every method returns a Deferred.
    """

    def add_extension(extension: Extension) -> Deferred[None]:
        """
        Add a new L{warden.store.model.Extension}.

        Fires with None; fails with L{warden.errors.ExtensionExists} when the number
        is taken.
        """

    def get_extension(number: str) -> Deferred[Extension | None]:
        """Fire with the Extension for ``number``, or None."""

    def list_extensions() -> Deferred[list[Extension]]:
        """Fire with every Extension, ordered by number."""

    def update_extension(extension: Extension) -> Deferred[None]:
        """
        Replace the stored Extension with the same number.

        Fails with L{warden.errors.ExtensionNotFound} when there is none.
        """

    def remove_extension(number: str) -> Deferred[bool]:
        """Remove the extension; fire with True if it existed, else False."""

    def upsert_extensions(extensions: Sequence[Extension]) -> Deferred[tuple[int, int]]:
        """
        Insert or replace many Extensions in one transaction (bulk provisioning).

        Fires with a tuple ``(added, updated)`` of counts. Idempotent: importing the
        same list twice changes nothing the second time (an unchanged row counts as
        neither added nor updated).
        """

    def count_extensions() -> Deferred[int]:
        """Fire with the number of extensions."""


class ILocationService(Interface):
    """
    Registrar bindings (RFC 3261 §10): AOR -> contacts, each with an absolute expiry.

    ``aor`` is the extension number (the user part of the AOR in a local domain).
    A binding is identified within its AOR by its contact URI, compared with
    L{warden.sip.uri.contact_key}. Every method returns a Deferred.
    """

    def bindings_for(aor: str, now: float) -> Deferred[list[Binding]]:
        """Fire with the list of Bindings of ``aor`` whose ``expires_at > now``."""

    def apply(aor: str, upserts: Sequence[Binding], removals: Sequence[str]) -> Deferred[None]:
        """
        Atomically change the bindings of ``aor``.

        ``upserts``: Bindings to add or replace (same key replaces).
        ``removals``: keys (strings) of bindings to remove; unknown keys are ignored.
        Fires with None.
        """

    def remove_aor(aor: str) -> Deferred[int]:
        """Remove every binding of ``aor``. Fires with the number removed."""

    def expire(now: float) -> Deferred[int]:
        """Remove every binding with ``expires_at <= now``; fire with the number removed."""

    def all_bindings(now: float) -> Deferred[list[Binding]]:
        """Fire with every unexpired binding (for operators and restarts)."""

    def count(now: float) -> Deferred[int]:
        """Fire with the number of unexpired bindings."""

    def flush() -> Deferred[None]:
        """Fire once everything accepted so far is durable (no-op for memory)."""


class ITransactionUser(Interface):
    """
    The transaction user (TU) above L{warden.sip.transaction.TransactionLayer}
    (RFC 3261 §17): the core that answers requests.
    """

    def request_received(transaction: ServerTransaction, request: Request, flow: Flow) -> None:
        """
        A new request: not a retransmission, not an ACK matched to a transaction.

        The TU must eventually call ``transaction.respond(response)`` with a final
        response. For an INVITE the transaction sends "100 Trying" itself after
        200 ms of silence; a 2xx to an INVITE is sent once by the transaction and
        retransmitted by the TU (RFC 3261 §13.3.1.4) through ``respond`` again.
        """

    def ack_received(request: Request, flow: Flow) -> None:
        """
        An ACK that matched no INVITE server transaction, or one in the Accepted
        state: the end-to-end ACK for a 2xx, for the dialog.
        """

    def response_received_stray(response: Response, flow: Flow) -> None:
        """
        A response that matched no client transaction (RFC 3261 §18.1.2), e.g. a
        2xx to an INVITE retransmitted after Timer M.
        """


class IClientTransactionUser(Interface):
    """What a client transaction reports to the TU that sent its request."""

    def response_received(transaction: ClientTransaction, response: Response) -> None:
        """
        A provisional or final response (retransmissions absorbed). For an INVITE
        every 2xx is passed up while the transaction is Accepted (RFC 6026 §7.2),
        so the TU acknowledges each one; 300-699 are acknowledged by the transaction.
        """

    def timed_out(transaction: ClientTransaction) -> None:
        """Timer B or F fired: no final response came (RFC 3261 §17.1)."""

    def transport_failed(transaction: ClientTransaction) -> None:
        """The transport could not send the request or the ACK (RFC 3261 §17.1.4)."""
