"""
A Warden SIP stack with calls (L{warden.testing.sipstack.FakeSipStack}: call
controller, media relay on a fake network, call records), built as production
builds it, plus scripted phones: for B2BUA unit tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from warden.interfaces import ICallHook, ILocalApplication, IMediaRelay
from warden.model import Binding
from warden.sip.auth import answer_challenge
from warden.sip.dialplan import Rule
from warden.sip.hooks import CallHooks
from warden.sip.message import Message, Request, Response, make_response, new_tag
from warden.sip.parser import parse_datagram
from warden.store.credentials import make_extension
from warden.testing.reactor import MemoryWardenReactor
from warden.testing.rtpnet import sdp_body
from warden.testing.sipstack import MEDIA_ADDRESS, REALM, FakeSipStack, stack_config

__all__ = ["MEDIA_ADDRESS", "WARDEN", "CallStack", "Phone"]

WARDEN = ("192.0.2.1", 5060)


class CallStack(FakeSipStack):
    """FakeSipStack at L{WARDEN}; extensions 1001-1004 with password ``pw<number>``."""

    def __init__(
        self,
        ring_timeout: float = 30.0,
        max_calls: int = 0,
        media_timeout: float = 60.0,
        dialplan: tuple[Rule, ...] = (),
        hooks: Sequence[ICallHook] | CallHooks = (),
        applications: Sequence[ILocalApplication] = (),
        media: IMediaRelay | None = None,
        reactor: MemoryWardenReactor | None = None,
    ) -> None:
        local = frozenset({REALM, WARDEN[0]})
        config = stack_config(
            local, WARDEN[0], WARDEN[1], ring_timeout=ring_timeout, max_calls=max_calls,
            dialplan=dialplan,
        )  # fmt: skip
        super().__init__(
            local, interface=WARDEN[0], port=WARDEN[1], config=config, hooks=hooks,
            applications=applications, media_timeout=media_timeout, media=media, reactor=reactor,
        )  # fmt: skip
        for number in ("1002", "1003", "1004"):
            self.successResultOf_(
                self.directory.add_extension(
                    make_extension(number, f"Ext {number}", REALM, f"pw{number}")
                )
            )
        self.addressing = self.sip.addressing
        assert self.sip.qualifier is not None and self.sip.calls is not None
        self.qualifier = self.sip.qualifier
        self.calls = self.sip.calls

    def shuttle(self) -> None:
        """
        Carry datagrams between the local applications' endpoints and the relay's
        callee side (the fake network delivers nothing by itself).
        """
        applications = self.calls.applications
        if applications is None:
            return
        network = self.network
        for endpoint in list(applications.endpoints.values()):
            assert endpoint.remote is not None
            relay_b = endpoint.remote[1]
            for data, _ in network.sent_from(endpoint.port):
                network.deliver(relay_b, data, (endpoint.host, endpoint.port))
            for data, address in network.sent_from(relay_b):
                if address == (endpoint.host, endpoint.port):
                    network.deliver(endpoint.port, data, endpoint.remote)

    @staticmethod
    def successResultOf_(d: Any) -> Any:  # noqa: N802
        """The result of an already-fired Deferred."""
        results: list[Any] = []
        d.addBoth(results.append)
        return results[0]

    def register(self, number: str, address: tuple[str, int]) -> None:
        """Bind ``number`` to a phone at ``address`` directly in the location service."""
        host, port = address
        binding = Binding(
            aor=number, contact=f"sip:{number}@{host}:{port}", key=f"{number}@{host}:{port}",
            expires_at=self.clock.seconds() + 3600, received=f"udp:{host}:{port}",
        )  # fmt: skip
        self.successResultOf_(self.location.apply(number, [binding], []))

    def deliver(
        self, message: Message | bytes, source: tuple[str, int]
    ) -> list[tuple[Message, Any]]:
        """Deliver a datagram from ``source``; return (message, destination) Warden sent."""
        data = message if isinstance(message, bytes) else message.to_bytes()
        before = len(self.udp_transport.written)
        self.udp.datagramReceived(data, source)
        return self.sent_since(before)

    def sent_since(self, before: int) -> list[tuple[Message, Any]]:
        """Messages sent over UDP since the ``before``-th datagram."""
        return [(parse_datagram(d), a) for d, a in self.udp_transport.written[before:]]

    def mark(self) -> int:
        """A position in the sent datagrams."""
        return len(self.udp_transport.written)


class Phone:
    """A scripted SIP phone at ``address`` for extension ``number``."""

    def __init__(self, stack: CallStack, number: str, address: tuple[str, int]) -> None:
        self.stack = stack
        self.number = number
        self.address = address
        self.tag = new_tag()
        self.call_id = f"{new_tag()}@{address[0]}"
        self.cseq = 0
        self.rtp_port = 40000 + int(number[-1]) * 10

    def sdp(self, direction: str = "sendrecv") -> bytes:
        """This phone's SDP offer or answer."""
        return sdp_body(self.address[0], self.rtp_port, direction=direction)

    def invite(
        self,
        target: str,
        body: bytes | None = None,
        authorization: str | None = None,
        branch: str | None = None,
        cseq: int | None = None,
    ) -> Request:
        """An initial INVITE to ``target``."""
        self.cseq = cseq or self.cseq + 1
        host, port = self.address
        lines = [
            f"INVITE sip:{target}@{REALM} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{port};branch={branch or 'z9hG4bK' + new_tag()};rport",
            "Max-Forwards: 70",
            f'From: "Phone {self.number}" <sip:{self.number}@{REALM}>;tag={self.tag}',
            f"To: <sip:{target}@{REALM}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} INVITE",
            f"Contact: <sip:{self.number}@{host}:{port}>",
        ]
        if authorization:
            lines.append(f"Proxy-Authorization: {authorization}")
        body = self.sdp() if body is None else body
        if body:
            lines.append("Content-Type: application/sdp")
        request = parse_datagram(
            ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        )
        assert isinstance(request, Request)
        return request

    def call(
        self,
        target: str,
        body: bytes | None = None,
        source: tuple[str, int] | None = None,
        edit: Callable[[Request], object] | None = None,
    ) -> tuple[Request, list[tuple[Message, Any]]]:
        """
        INVITE, answer the 407, re-INVITE with credentials; return it and what
        Warden sent. ``source``: where the datagrams come from (default: the
        phone's address, which its Via and Contact name); ``edit`` changes each
        INVITE before it is sent.
        """
        source = source or self.address
        first = self.invite(target, body)
        if edit is not None:
            edit(first)
        sent = self.stack.deliver(first, source)
        challenge = next(m for m, _ in sent if isinstance(m, Response) and m.status == 407)
        self.stack.deliver(self.ack_for(first, challenge), source)
        authz = answer_challenge(
            challenge.get("Proxy-Authenticate") or "", self.number, f"pw{self.number}", "INVITE",
            f"sip:{target}@{REALM}",
        )  # fmt: skip
        second = self.invite(target, body, authorization=authz)
        if edit is not None:
            edit(second)
        return second, self.stack.deliver(second, source)

    def call_answered(
        self, target: str, callee: Phone
    ) -> tuple[Request, Request, Response, Response]:
        """
        Call ``target`` (authenticated), ``callee`` answers 200 with its SDP, ACK:
        returns this phone's INVITE, the callee's INVITE, its 200 and ours.
        """
        invite, sent = self.call(target)
        callee_invite = next(
            m for m, a in sent
            if isinstance(m, Request) and m.method == "INVITE" and tuple(a) == callee.address
        )  # fmt: skip
        callee_ok = callee.answer(callee_invite, 200, body=callee.sdp())
        ok = next(
            m for m, a in self.stack.deliver(callee_ok, callee.address)
            if isinstance(m, Response) and m.status == 200 and tuple(a) == self.address
        )  # fmt: skip
        self.stack.deliver(self.ack_for(invite, ok), self.address)
        return invite, callee_invite, callee_ok, ok

    def ack_for(self, invite: Request, response: Response) -> Request:
        """ACK for a non-2xx final (same branch) or a 2xx (new branch)."""
        branch = invite.top_via.branch if response.status >= 300 else "z9hG4bK" + new_tag()
        host, port = self.address
        headers = [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", invite.get("From") or ""),
            ("To", response.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} ACK"),
        ]
        return Request("ACK", invite.uri_text, headers)

    def answer(
        self, request: Request, status: int, tag: str | None = None, body: bytes = b""
    ) -> Response:
        """A response of this phone to a request Warden sent it."""
        headers = [("Contact", f"<sip:{self.number}@{self.address[0]}:{self.address[1]}>")]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        response = make_response(request, status, to_tag=tag or self.tag, headers=headers)
        response.body = body
        return response

    def in_dialog(
        self,
        method: str,
        dialog_request: Request,
        dialog_response: Response,
        uac: bool,
        body: bytes = b"",
    ) -> Request:
        """A request inside the dialog of ``dialog_request``."""
        self.cseq += 1 if uac else 0
        host, port = self.address
        if uac:
            from_, to = dialog_request.get("From"), dialog_response.get("To")
            target = dialog_response.contacts[0].uri
            cseq = self.cseq
        else:
            from_, to = dialog_response.get("To"), dialog_request.get("From")
            target = dialog_request.contacts[0].uri
            cseq = 1000 + self.cseq
            self.cseq += 1
        headers = [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch=z9hG4bK{new_tag()};rport"),
            ("Max-Forwards", "70"), ("From", from_ or ""), ("To", to or ""),
            ("Call-ID", dialog_request.call_id), ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:{self.number}@{host}:{port}>"),
        ]  # fmt: skip
        if body:
            headers.append(("Content-Type", "application/sdp"))
        request = Request(method, str(target), headers)
        request.body = body
        return request
