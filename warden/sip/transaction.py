"""
The SIP transaction layer (RFC 3261 §17, updated by RFC 6026).

L{TransactionLayer} sits between the transport layer and the transaction user
(TU). Messages from the network go to L{TransactionLayer.receive}, which matches
them to transactions (§17.1.3 for responses, §17.2.3 for requests, with the RFC
2543 rules for requests whose branch lacks the magic cookie), absorbs
retransmissions, and creates a server transaction for each new request. The TU
sends requests with L{TransactionLayer.send_request}. Terminated transactions are
forgotten at once.

The transactions themselves live in L{warden.sip.transaction_server} and
L{warden.sip.transaction_client}; this module re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeGuard

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from warden.errors import SipParseError
from warden.interfaces import IClientTransactionUser, ITransactionObserver, ITransactionUser
from warden.randomness import random_hex
from warden.sip.flow import Flow
from warden.sip.message import Message, Request, Response
from warden.sip.parser import parse_datagram
from warden.sip.timers import TimerSettings
from warden.sip.transaction_base import (
    NO_OBSERVER,
    StateRule,
    Transaction,
    TransactionContext,
    TransactionState,
    TransactionStateError,
)
from warden.sip.transaction_client import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
    make_ack,
)
from warden.sip.transaction_server import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)
from warden.sip.uri import contact_key

__all__ = [
    "MAGIC_COOKIE",
    "ClientTransaction",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "ServerTransaction",
    "StateRule",
    "Transaction",
    "TransactionLayer",
    "TransactionState",
    "TransactionStateError",
    "is_rfc3261_branch",
    "make_ack",
    "server_key",
]

MAGIC_COOKIE = "z9hG4bK"
_COOKIE_LOWER = MAGIC_COOKIE.lower()


def is_rfc3261_branch(branch: str | None) -> TypeGuard[str]:
    """
    True when ``branch`` starts with the magic cookie and has something after it
    (RFC 3261 §8.1.1.7). A branch that is the cookie alone (RFC 4475 ``badbranch``)
    is matched by the RFC 2543 rules, like no branch at all.
    """
    return (
        branch is not None
        and len(branch) > len(MAGIC_COOKIE)
        and branch[: len(MAGIC_COOKIE)].lower() == _COOKIE_LOWER
    )


def _uri_key(request: Request) -> str:
    try:
        return contact_key(request.uri)  # §19.1.4 equality, as a string
    except SipParseError:
        return request.uri_text


def _rfc3261_key(request: Request, method: str) -> Hashable | None:
    via = request.top_via
    branch = via.branch
    if not is_rfc3261_branch(branch):
        return None
    return ("3261", branch.lower(), via.host, via.port, method)


def _rfc2543_key(request: Request, method: str, to_tag: str | None) -> Hashable:
    return (
        "2543",
        _uri_key(request),
        to_tag,
        request.from_.tag,
        request.call_id,
        request.cseq.number,
        method,
        request.top_via,
    )


def server_key(request: Request, method: str) -> Hashable:
    """
    The key a request's server transaction is filed under (§17.2.3), taking the
    method as ``method`` (INVITE for an ACK or a CANCEL looking for its INVITE).

    With a magic-cookie branch: branch (case-insensitive, §7.3.1), sent-by and
    method; only the top Via is needed. Otherwise the RFC 2543 rules: Request-URI,
    To tag, From tag, Call-ID, CSeq number, method and the whole top Via.

    Raises SipParseError when the request lacks the headers matching needs.
    """
    key = _rfc3261_key(request, method)
    if key is None:
        key = _rfc2543_key(request, method, request.to.tag)
    return key


class TransactionLayer:
    """
    Matches messages to transactions, creates and forgets them.

    Args:
        clock: the time source of every timer.
        settings: T1, T2, T4 and the timers derived from them.
        send: hands a message to the transport layer for a flow; raises when the
            message cannot be sent.
        tu: receives new requests, ACKs for 2xx and stray responses.
        observer: told of every response sent and every transaction's latency
            (the SIP service binds it to its metrics); by default, nobody.
        send_data: sends a serialised response for a flow, raising as ``send``
            does; a retransmitted request answered again from a transaction's
            echo (L{AnswerEchoes}) goes out through it without parsing the
            stored bytes again. Without it they are parsed and go to ``send``.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        settings: TimerSettings,
        send: Callable[[Message, Flow], None],
        tu: ITransactionUser,
        observer: ITransactionObserver = NO_OBSERVER,
        send_data: Callable[[bytes, Flow], None] | None = None,
    ) -> None:
        self._context = TransactionContext(clock, settings, send, self._forget, observer)
        self._send_data = send_data
        self._echoes = self._context.echoes
        self._tu = tu
        self._server: dict[Hashable, ServerTransaction] = {}
        self._client: dict[Hashable, ClientTransaction] = {}

    @property
    def retransmissions(self) -> int:
        """Requests and responses sent again because a timer fired."""
        return self._context.retransmissions

    @property
    def absorbed(self) -> int:
        """Received retransmissions that went no further than their transaction."""
        return self._context.absorbed

    def __len__(self) -> int:
        """The number of live transactions (those waiting out Timer J as echoes too)."""
        return len(self._server) + len(self._client) + len(self._echoes)

    def new_branch(self) -> str:
        """A fresh branch: the magic cookie and 96 random bits (§8.1.1.7)."""
        return MAGIC_COOKIE + random_hex(12)

    # -- from the transport layer -------------------------------------------------

    def receive(self, message: Message, flow: Flow) -> None:
        """
        A message from the transport layer.

        Raises SipParseError, before any state changes, when the message lacks the
        headers matching needs (Via; for responses CSeq; for RFC 2543 requests
        From, To, Call-ID and CSeq).
        """
        if isinstance(message, Request):
            self._receive_request(message, flow)
        elif isinstance(message, Response):
            self._receive_response(message, flow)

    def _receive_request(self, request: Request, flow: Flow) -> None:
        if request.method == "ACK":
            matched = self._match_ack(request)
            if matched is None or not matched.handle_request(request, flow):
                self._tu.ack_received(request, flow)
            return
        key = server_key(request, request.method)
        if key in self._echoes:
            self._answer_again(key)
            return
        existing = self._server.get(key)
        if existing is not None:
            existing.handle_request(request, flow)
            return
        txn: ServerTransaction
        if request.method == "INVITE":
            txn = InviteServerTransaction(self._context, request, flow, key)
        else:
            txn = NonInviteServerTransaction(self._context, request, flow, key)
        self._server[key] = txn
        txn.start()
        try:
            self._tu.request_received(txn, request, flow)
        finally:
            txn.limit_wait()  # the transaction ends even if the TU never answers

    def _answer_again(self, key: Hashable) -> None:
        """A retransmission of a request answered in a transaction now an echo (§17.2.2)."""
        answer = self._echoes.answer(key)
        if answer is None:
            return
        data, flow = answer
        self._context.absorbed += 1
        try:
            if self._send_data is not None:
                self._send_data(data, flow)
            else:
                self._context.send(parse_datagram(data, len(data)), flow)
        except Exception as e:  # the transport boundary, as Transaction._transmit
            self.log.info(
                "Answering a retransmission on {flow} failed: {error!r}", flow=str(flow), error=e
            )
            self._echoes.discard(key)

    def _match_ack(self, ack: Request) -> ServerTransaction | None:
        """
        The INVITE server transaction an ACK belongs to (§17.2.3). Under the RFC
        2543 rules the ACK's To tag must be the tag of the response the
        transaction sent, which an initial INVITE did not carry.
        """
        key = _rfc3261_key(ack, "INVITE")
        if key is not None:
            return self._server.get(key)
        tag = ack.to.tag
        for invite_tag in (tag, None):
            txn = self._server.get(_rfc2543_key(ack, "INVITE", invite_tag))
            sent = txn.last_response if txn is not None else None
            if sent is not None and sent.to.tag == tag:
                return txn
        return None

    def _receive_response(self, response: Response, flow: Flow) -> None:
        branch = response.top_via.branch
        txn = None
        if branch is not None:
            txn = self._client.get((branch.lower(), response.cseq.method))
        if txn is None:
            self._tu.response_received_stray(response, flow)
        else:
            txn.handle_response(response)

    # -- from the TU --------------------------------------------------------------

    def send_request(
        self, request: Request, flow: Flow, user: IClientTransactionUser
    ) -> ClientTransaction:
        """
        Send ``request`` on ``flow`` in a new client transaction (§17.1).

        The request must carry its top Via with a fresh magic-cookie branch
        (L{new_branch}). ``user`` hears of the outcome; if the first send fails,
        ``user.transport_failed`` is called before this returns.

        Raises ValueError for an ACK (never sent in a client transaction, §17.1),
        a branch without the magic cookie, or a branch already in use.
        """
        if request.method == "ACK":
            raise ValueError("an ACK is not sent in a client transaction (RFC 3261 §17.1)")
        branch = request.top_via.branch
        if not is_rfc3261_branch(branch):
            raise ValueError(f"top Via branch {branch!r} lacks the {MAGIC_COOKIE} cookie")
        key = (branch.lower(), request.method)
        if key in self._client:
            raise ValueError(f"a {request.method} transaction with branch {branch} exists")
        txn: ClientTransaction
        if request.method == "INVITE":
            txn = InviteClientTransaction(self._context, request, flow, key, user)
        else:
            txn = NonInviteClientTransaction(self._context, request, flow, key, user)
        self._client[key] = txn
        txn.start()
        return txn

    def find_invite_server_transaction(self, cancel: Request) -> InviteServerTransaction | None:
        """
        The INVITE server transaction a CANCEL refers to: matched by the §17.2.3
        rules with the method taken as INVITE (§9.2). None when there is none.
        """
        txn = self._server.get(server_key(cancel, "INVITE"))
        return txn if isinstance(txn, InviteServerTransaction) else None

    def flow_failed(self, host: str, port: int) -> int:
        """
        The stream connection (TCP or TLS) to ``host``:``port`` could not be
        opened, its TLS handshake failed, or it closed: each client
        transaction sent on it that has no response yet fails at once
        (§8.1.3.1, §17.1.4: its user hears of a transport error, a 503,
        rather than waiting for its timers). Returns how many failed.
        """
        failed = [
            txn for txn in self._client.values()
            if txn.flow.reliable and (txn.flow.host, txn.flow.port) == (host, port)
            and txn.state in (TransactionState.CALLING, TransactionState.TRYING)
        ]  # fmt: skip
        for txn in failed:
            txn._transport_error()
        return len(failed)

    # -- housekeeping -------------------------------------------------------------

    def terminate_all(self) -> int:
        """
        Terminate every live transaction at once, cancelling its timers, without
        telling anyone (a user agent that is shutting down). Returns how many.
        """
        live: list[Transaction] = [*self._server.values(), *self._client.values()]
        for txn in live:
            txn._terminate()
        echoes = len(self._echoes)
        self._echoes.clear()
        return len(live) + echoes

    def _forget(self, txn: Transaction) -> None:
        table: dict[Hashable, ServerTransaction] | dict[Hashable, ClientTransaction]
        table = self._server if isinstance(txn, ServerTransaction) else self._client
        if table.get(txn.key) is txn:
            del table[txn.key]
