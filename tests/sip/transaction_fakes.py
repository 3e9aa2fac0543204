"""
Recording fakes and message builders for the transaction layer tests.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import Clock
from zope.interface import implementer

from warden.interfaces import IClientTransactionUser, ITransactionObserver, ITransactionUser
from warden.sip.flow import Flow
from warden.sip.message import Message, Request, Response, make_response
from warden.sip.parser import parse_datagram
from warden.sip.timers import TimerSettings
from warden.sip.transaction import ClientTransaction, ServerTransaction, TransactionLayer

UDP = Flow("udp", "192.0.2.10", 5060)
TCP = Flow("tcp", "192.0.2.10", 5060, connection=object())

# How far before or after a deadline the tests look.
EPSILON = 0.001


def wire(message: Message) -> Message:
    """``message`` as the transport layer would hand it over: serialised and parsed."""
    return parse_datagram(message.to_bytes())


def make_request(
    method: str = "INVITE",
    branch: str | None = "z9hG4bKtest1",
    cseq: int = 1,
    call_id: str = "call-1@192.0.2.10",
    to_tag: str | None = None,
    cseq_method: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> Request:
    """A parsed request as a phone at 192.0.2.10 would send it."""
    branch_param = "" if branch is None else f";branch={branch}"
    to = "<sip:bob@example.com>" + ("" if to_tag is None else f";tag={to_tag}")
    lines = [
        f"{method} sip:bob@example.com SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.10:5060{branch_param}",
        "Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKlower",
        "Max-Forwards: 70",
        "From: Alice <sip:alice@example.com>;tag=from1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        *[f"{name}: {value}" for name, value in extra],
        "Content-Length: 0",
    ]
    message = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def reply(request: Request, status: int, to_tag: str = "srv1") -> Response:
    """A response to ``request`` as it arrives from the network."""
    response = wire(make_response(request, status, to_tag=to_tag))
    assert isinstance(response, Response)
    return response


class RecordingSend:
    """
    A fake ``send``: records ``(time, message, flow)``; raises ConnectionError
    while ``fail`` is set.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, Message, Flow]] = []
        self.fail = False

    def __call__(self, message: Message, flow: Flow) -> None:
        if self.fail:
            raise ConnectionError("network unreachable")
        self.sent.append((self.clock.seconds(), message, flow))

    @property
    def messages(self) -> list[Message]:
        """Everything sent, in order."""
        return [message for _, message, _ in self.sent]

    @property
    def statuses(self) -> list[int]:
        """Status codes of the responses sent, in order."""
        return [m.status for m in self.messages if isinstance(m, Response)]

    @property
    def last(self) -> Message:
        """The last message sent."""
        return self.sent[-1][1]


@implementer(ITransactionUser)
class RecordingTU:
    """
    A fake transaction user that records what it is given. ``on_request``, when
    set, is called with each new server transaction (to answer at once).
    """

    def __init__(self) -> None:
        self.requests: list[tuple[ServerTransaction, Request, Flow]] = []
        self.acks: list[tuple[Request, Flow]] = []
        self.strays: list[tuple[Response, Flow]] = []
        self.on_request: Callable[[ServerTransaction], None] | None = None

    def request_received(
        self, transaction: ServerTransaction, request: Request, flow: Flow
    ) -> None:
        self.requests.append((transaction, request, flow))
        if self.on_request is not None:
            self.on_request(transaction)

    def ack_received(self, request: Request, flow: Flow) -> None:
        self.acks.append((request, flow))

    def response_received_stray(self, response: Response, flow: Flow) -> None:
        self.strays.append((response, flow))

    @property
    def transactions(self) -> list[ServerTransaction]:
        """The server transactions received, in order."""
        return [txn for txn, _, _ in self.requests]


@implementer(IClientTransactionUser)
class RecordingUser:
    """A fake client transaction user that records every event."""

    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.timeouts: list[ClientTransaction] = []
        self.failures: list[ClientTransaction] = []

    def response_received(self, transaction: ClientTransaction, response: Response) -> None:
        self.responses.append(response)

    def timed_out(self, transaction: ClientTransaction) -> None:
        self.timeouts.append(transaction)

    def transport_failed(self, transaction: ClientTransaction) -> None:
        self.failures.append(transaction)

    @property
    def statuses(self) -> list[int]:
        """Status codes of the responses received, in order."""
        return [response.status for response in self.responses]


@implementer(ITransactionObserver)
class RecordingObserver:
    """Records what the layer reports: ``(status, transport, method)`` and latencies."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, str, str]] = []
        self.exchanges: list[tuple[str, str, float]] = []

    def response_sent(self, status: int, transport: str, method: str) -> None:
        self.responses.append((status, transport, method))

    def exchange_ended(self, method: str, role: str, seconds: float) -> None:
        self.exchanges.append((method, role, seconds))


class Harness:
    """
    A layer on a Clock with a recording send and TU; it reports to ``observer``
    (by default a L{RecordingObserver}, kept as ``recorded``).
    """

    def __init__(
        self,
        settings: TimerSettings | None = None,
        observer: ITransactionObserver | None = None,
    ) -> None:
        self.clock = Clock()
        self.settings = settings or TimerSettings()
        self.send = RecordingSend(self.clock)
        self.tu = RecordingTU()
        self.recorded = RecordingObserver()
        self.layer = TransactionLayer(
            self.clock, self.settings, self.send, self.tu, observer or self.recorded
        )

    def advance_to(self, when: float) -> None:
        """Move the clock forward to ``when`` seconds."""
        self.clock.advance(when - self.clock.seconds())

    def sends_between(self, deadlines: list[float]) -> list[tuple[int, int]]:
        """
        For each deadline, the number of messages sent just before it and once the
        clock reaches it exactly (the clock moves forward through them). Landing on
        the deadline itself, rather than past it, keeps each timer restarted from
        its exact due time, so a schedule that drifts fails the test.
        """
        counts = []
        for deadline in deadlines:
            self.advance_to(deadline - EPSILON)
            before = len(self.send.sent)
            self.advance_to(deadline)
            assert self.clock.seconds() == deadline
            counts.append((before, len(self.send.sent)))
        return counts

    def receive(self, message: Message, flow: Flow = UDP) -> None:
        """Hand ``message`` to the layer as the transport would."""
        self.layer.receive(message, flow)
