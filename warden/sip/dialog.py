"""
Dialogs (RFC 3261 §12): the state two user agents share for a call, and the
in-dialog requests built from it.

A B2BUA call has two dialogs, one per leg; each is independent: its own Call-ID,
tags, CSeq spaces, route set and remote target. Nothing here touches the network
or the clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

import attrs

from warden.iplit import ip_literal
from warden.sip.flow import Flow
from warden.sip.headers import parse_address, quote_string
from warden.sip.message import Request, Response


class DialogState(Enum):
    """
    How far a dialog got (RFC 3261 §12.1): ``PENDING`` until a response with a
    To tag is sent or received, ``EARLY`` after a tagged provisional,
    ``CONFIRMED`` after a 2xx. A dialog that never got past ``EARLY`` ends with
    the INVITE's final error; requests in it afterwards get 481 (§12.2.2).
    """

    PENDING = "pending"
    EARLY = "early"
    CONFIRMED = "confirmed"


@attrs.define
class Dialog:
    """
    One side's view of a dialog.

    Attributes:
        call_id: the dialog's Call-ID.
        local_tag: our tag (From tag in requests we send).
        remote_tag: the peer's tag (None while the dialog is early and untagged).
        local_party: our From/To header value without tag (``<sip:1001@pbx>``).
        remote_party: the peer's header value without tag.
        local_cseq: the CSeq number of the last request we sent.
        remote_cseq: the CSeq number of the last request the peer sent.
        remote_target: the peer's Contact URI (Request-URI of our requests).
        route_set: Route values for our requests (from Record-Route).
        flow: where requests to the peer go.
        local_contact: our Contact URI.
        via_host: the sent-by of our Via (``host:port``) and its transport.
        state: how far the dialog got (L{DialogState}).
    """

    call_id: str
    local_tag: str
    remote_tag: str | None
    local_party: str
    remote_party: str
    local_cseq: int
    remote_cseq: int | None
    remote_target: str
    route_set: list[str]
    flow: Flow
    local_contact: str
    via_host: str
    state: DialogState = DialogState.PENDING

    def request(
        self,
        method: str,
        branch: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        cseq: int | None = None,
    ) -> Request:
        """
        A new in-dialog request (RFC 3261 §12.2.1.1). ``cseq`` defaults to the next
        number; ACK and CANCEL pass the INVITE's number explicitly.
        """
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        to = self.remote_party + (f";tag={self.remote_tag}" if self.remote_tag else "")
        lines = [
            (
                "Via",
                f"SIP/2.0/{self.flow.transport.upper()} {self.via_host};branch={branch};rport",
            ),
            ("Max-Forwards", "70"),
            ("From", f"{self.local_party};tag={self.local_tag}"),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        lines.extend(("Route", route) for route in self.route_set)
        if method not in ("ACK", "CANCEL", "BYE"):
            lines.append(("Contact", f"<{self.local_contact}>"))
        lines.extend(headers)
        request = Request(method, self.remote_target, lines)
        if body:
            request.body = body
        return request

    def accepts(self, request: Request) -> bool:
        """
        Check and record the CSeq of a request from the peer (§12.2.2): lower
        than the last one is out of order.
        """
        number = request.cseq.number
        if self.remote_cseq is not None and number < self.remote_cseq and request.method != "ACK":
            return False
        if request.method != "ACK":
            self.remote_cseq = number
        return True

    def matches(self, request: Request) -> bool:
        """
        Whether ``request`` carries this dialog's ID (RFC 3261 §12: Call-ID, our
        tag as To tag, the peer's tag as From tag; a peer that sent no From tag,
        as RFC 2543 allowed, must send none again, §12.2.2).
        """
        return (
            request.call_id == self.call_id
            and request.to.tag == self.local_tag
            and request.from_.tag == self.remote_tag
        )

    def from_peer(self, source: Flow) -> bool:
        """
        Whether a request that arrived on ``source`` comes from this dialog's peer.

        The peer is the address Warden sends this dialog's requests to. A phone
        sends its own requests from the socket it receives on (RFC 3581
        symmetric signalling; behind a NAT both are the same mapping), so over
        UDP the address and port must both match. A stream peer may open a new
        connection (a TCP/TLS phone reconnecting, or one sending a large
        request over TCP, RFC 3261 §18.1.1) from another port, but not from
        another address: the host must match. See ADR 0012.
        """
        if _ip_text(source.host) != _ip_text(self.flow.host):
            return False
        if source.transport == "udp" and self.flow.transport == "udp":
            return source.port == self.flow.port
        return True

    def update_target(self, message: Request | Response) -> None:
        """A target refresh (re-INVITE, UPDATE, their 2xx) may change the Contact."""
        contacts = message.contacts
        if contacts and contacts[0].uri.is_sip:
            self.remote_target = str(contacts[0].uri)


def _ip_text(host: str) -> str:
    """An IP address in its canonical text form (any other host as it is)."""
    ip = ip_literal(host.strip("[]"))
    return host.lower() if ip is None else str(ip)


def strip_tag(header_value: str) -> str:
    """A From/To header value without its tag parameter."""
    address = parse_address(header_value)
    params = "".join(
        f";{k}" if v is None else f";{k}={v}" for k, v in address.params if k != "tag"
    )
    name = f"{quote_string(address.display)} " if address.display else ""
    return f"{name}<{address.uri}>{params}"


def uas_dialog(
    request: Request, local_tag: str, flow: Flow, local_contact: str, via_host: str
) -> Dialog:
    """Our dialog as the UAS of ``request`` (RFC 3261 §12.1.1)."""
    contacts = request.contacts
    target = str(contacts[0].uri) if contacts else str(request.from_.uri)
    return Dialog(
        call_id=request.call_id,
        local_tag=local_tag,
        remote_tag=request.from_.tag,
        local_party=strip_tag(request.get("To") or ""),
        remote_party=strip_tag(request.get("From") or ""),
        local_cseq=0,
        remote_cseq=request.cseq.number,
        remote_target=target,
        route_set=list(request.get_all("Record-Route")),
        flow=flow,
        local_contact=local_contact,
        via_host=via_host,
    )


def confirm_uac_dialog(dialog: Dialog, response: Response) -> None:
    """
    Complete our UAC dialog from a response with a To tag (§12.1.2): remote tag,
    remote target from Contact, route set from Record-Route reversed (a
    pre-loaded route stays when there is no Record-Route).
    """
    dialog.remote_tag = response.to.tag
    if 200 <= response.status < 300:
        dialog.state = DialogState.CONFIRMED
    elif dialog.state is DialogState.PENDING:
        dialog.state = DialogState.EARLY
    dialog.update_target(response)
    routes = list(reversed(response.get_all("Record-Route")))
    if routes or not dialog.route_set:
        # A pre-loaded route (through another node, L{warden.sip.hop}) stays when
        # the peer left Record-Route out of its response.
        dialog.route_set = routes
