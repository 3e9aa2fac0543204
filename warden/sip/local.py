"""
Calls answered inside Warden: local applications (ADR 0022).

A call hook sends a call to a local application by redirecting it to
``"<name>:<argument>"`` (``voicemail:1001``), before routing or when routing
failed (busy, no answer, ring timeout, not registered). The call controller
then answers the caller itself instead of ringing phones:

1. The call's media session (the relay) makes a fresh plain-RTP offer for the
   callee side; an L{warden.rtp.endpoint.RtpEndpoint}, bound on Warden's
   address towards the relay, answers it, and the relay's answer goes to the
   caller in a 200 (retransmitted until the ACK, like any 2xx). The caller's
   media thus still passes the relay: latching, SRTP, the media timeout and the
   call record's media statistics stay what they are for any call.
2. The application (an L{warden.interfaces.ILocalApplication} provider) runs
   with a L{LocalCall}; when it is done Warden hangs up (BYE). A BYE from the
   caller, or the media timeout, ends the call; the endpoint is then closed
   and whatever the application waits for fails with
   L{warden.rtp.endpoint.HungUp}.
3. The call record is written as for any call (callee: the extension the call
   was for, else the target ``voicemail:1001``).
4. An application may instead send the caller on
   (L{LocalCall.transfer}, L{warden.sip.handover}): the caller hears a
   ringback tone from the endpoint while the destination rings, and the call
   is no longer hung up when the application returns.

A number dialled by a phone never names an application by itself: only a
hook's redirect does, so ``voicemail:1001`` typed on a phone is routed (404).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from warden.interfaces import ILocalApplication
from warden.model import Extension
from warden.rtp import g711
from warden.rtp.endpoint import DIGITS, HungUp, ListenUDP, RtpEndpoint
from warden.sip import sdp as sdplib
from warden.sip.sdp import SdpError

if TYPE_CHECKING:
    from warden.sip.call import Call
    from warden.sip.message import Request

__all__ = ["LocalApplications", "LocalCall", "LocalTarget"]

#: Seconds between checks for the ACK an application's hang-up waits for.
ACK_POLL = 0.1
_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}\Z")
_log = Logger()


def _ringback() -> bytes:
    """One ringback cadence (ITU-T E.180, North American): 440 + 480 Hz for 2 s, 4 s off."""
    low, high = g711.tone(440, 2.0, 4000), g711.tone(480, 2.0, 4000)
    mixed = bytearray()
    for i in range(0, len(low), 2):
        total = int.from_bytes(low[i : i + 2], "little", signed=True) + int.from_bytes(
            high[i : i + 2], "little", signed=True
        )
        mixed += total.to_bytes(2, "little", signed=True)
    return bytes(mixed) + bytes(2 * g711.SAMPLE_RATE * 4)


#: What a caller sent on by an application hears while the destination rings.
RINGBACK = _ringback()


@attrs.frozen
class LocalTarget:
    """An application and its argument (``voicemail`` and ``1001``)."""

    name: str
    argument: str
    provider: ILocalApplication = attrs.field(eq=False, repr=False)

    @property
    def text(self) -> str:
        """``name:argument``."""
        return f"{self.name}:{self.argument}"

    def party(self) -> Extension:
        """The callee a call to this target records when no extension is known."""
        return Extension(number=self.text, name=self.name, realm="", ha1_md5="", ha1_sha256="")


@attrs.define(eq=False)
class LocalCall:
    """
    A call answered by Warden, as a local application sees it.

    Attributes:
        call_id: Warden's identifier of the call (its call record's).
        caller: the extension calling.
        dialled: the number the caller dialled.
        argument: the application's argument (the mailbox, for voicemail).
        endpoint: plays, records and reads digits.
    """

    call_id: str
    caller: Extension
    dialled: str
    argument: str
    endpoint: RtpEndpoint
    _hangup: Callable[[str], None] = attrs.field(repr=False)
    _transfer: Callable[[str], None] = attrs.field(repr=False, default=lambda number: None)
    #: Where L{transfer} sent the caller ("" while it did not).
    transferred_to: str = ""

    def hangup(self, cause: str = "application ended") -> None:
        """End the call now (BYE to the caller)."""
        self._hangup(cause)

    def transfer(self, number: str) -> None:
        """
        Send the caller on to ``number``, routed as if the caller had dialled
        it (an extension, a ring group's number or ``ringgroup:<name>``, or an
        application target such as ``voicemail:1001``; L{warden.sip.handover}).
        The application should return next: the call is not hung up then.
        """
        if not self.transferred_to:
            self.transferred_to = number
            self._transfer(number)


class LocalApplications:
    """
    The enabled plugins' local applications, and how the call controller
    answers a call for one.

    Args:
        providers: the ILocalApplication providers, in ``[plugins] enabled`` order.
        clock: paces the endpoints.
        listen_udp: binds an endpoint's socket ``(port, protocol, interface)``.
        local_host_for: Warden's address as seen from a peer address (the
            endpoint binds there, towards the relay).
    """

    def __init__(
        self,
        providers: Sequence[ILocalApplication],
        clock: IReactorTime,
        listen_udp: ListenUDP,
        local_host_for: Callable[[str], str],
    ) -> None:
        self._apps: dict[str, ILocalApplication] = {}
        for provider in providers:
            for name in provider.applications:
                self._apps.setdefault(name, provider)
        self.clock = clock
        self.listen_udp = listen_udp
        self.local_host_for = local_host_for
        #: The endpoint of each call answered locally, by call id.
        self.endpoints: dict[str, RtpEndpoint] = {}
        #: Calls an application sent on (L{LocalCall.transfer}), not yet answered.
        self.transferred: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._apps)

    def target(self, number: str) -> LocalTarget | None:
        """The application ``number`` (``name:argument``) names, or None."""
        name, sep, argument = number.partition(":")
        provider = self._apps.get(name) if sep and _NAME.match(name) else None
        if provider is None or len(argument) > 64:
            return None
        return LocalTarget(name, argument, provider)

    def answer(self, call: Call, target: LocalTarget) -> None:
        """
        Answer the ringing ``call`` with an endpoint and run ``target``'s
        application on it; a call that cannot be answered so fails (488 for
        media the endpoint cannot take, 500 otherwise).
        """
        endpoint: RtpEndpoint | None = None
        try:
            endpoint, answer = self._endpoint(call)
            call.answer_locally(answer, endpoint.host)
        except Exception as e:
            if endpoint is not None:
                endpoint.close()
            if isinstance(e, SdpError):
                call.fail(488, "Not Acceptable Here", "no usable media for " + target.name)
            else:
                _log.failure("Could not answer call {call_id} locally", call_id=call.call_id)
                call.fail(500, "Server Internal Error", "local answer failed")
            return
        previous = call.on_ended

        self.endpoints[call.call_id] = endpoint

        def ended(ended_call: Call) -> None:
            self.endpoints.pop(ended_call.call_id, None)
            self.transferred.discard(ended_call.call_id)
            endpoint.close()
            if previous is not None:
                previous(ended_call)

        call.on_ended = ended
        self._run(call, target, endpoint)

    def _run(self, call: Call, target: LocalTarget, endpoint: RtpEndpoint) -> None:
        """Run ``target``'s application on ``call``, answered by ``endpoint``."""
        local = LocalCall(
            call.call_id, call.caller, call.dialled, target.argument, endpoint,
            lambda cause: self._hangup(call, cause),
            lambda number: self._transfer(call, number),
        )  # fmt: skip
        d = defer.maybeDeferred(
            target.provider.run_application, target.name, target.argument, local
        )
        d.addErrback(self._failed, target, call.call_id)
        d.addBoth(lambda _: self._finished(call, target, local))

    def _finished(self, call: Call, target: LocalTarget, local: LocalCall) -> None:
        """An application returned: hang up, unless it sent the caller on."""
        if not local.transferred_to:
            self._hangup(call, target.name + " ended")

    def _transfer(self, call: Call, number: str) -> None:
        """An application sends its caller on to ``number`` (ringback meanwhile)."""
        endpoint = self.endpoints.get(call.call_id)
        if endpoint is None or endpoint.closed or call.call_id in self.transferred:
            return
        self.transferred.add(call.call_id)
        endpoint.clear_digits()
        self._ringback(call, endpoint)
        call.services.reroute(call, number)

    def _ringback(self, call: Call, endpoint: RtpEndpoint) -> None:
        """Play the ringback tone again and again while the call is sent on."""
        if call.call_id not in self.transferred or endpoint.closed:
            return
        d = endpoint.play(RINGBACK)
        d.addCallback(lambda _: self._ringback(call, endpoint))
        d.addErrback(_hung_up)

    def resume(self, call: Call, target: LocalTarget) -> None:
        """
        A call sent on that ends at a local application (``voicemail:1001``):
        the endpoint still answering its caller runs ``target``.
        """
        self.transferred.discard(call.call_id)
        endpoint = self.endpoints.get(call.call_id)
        if endpoint is None or endpoint.closed:
            call.hangup(None, target.name + " unavailable")
            return
        endpoint.stop_playing()
        self._run(call, target, endpoint)

    def handed_over(self, call: Call) -> None:
        """A phone answered a call sent on: its endpoint is no longer needed."""
        self.transferred.discard(call.call_id)
        endpoint = self.endpoints.pop(call.call_id, None)
        if endpoint is not None:
            endpoint.close()

    def _hangup(self, call: Call, cause: str) -> None:
        """
        BYE once the caller acknowledged the 200 (RFC 3261 §15: not before the
        ACK); the 2xx retransmission ends the call itself when no ACK comes.
        """
        if "a" in call.pending and call.on_ended is not None:
            self.clock.callLater(ACK_POLL, self._hangup, call, cause)
            return
        call.hangup(None, cause)

    def _endpoint(self, call: Call) -> tuple[RtpEndpoint, bytes]:
        """An endpoint and its answer to a fresh plain-RTP offer of the callee side."""
        body = call.a_request.body
        if not body:
            raise SdpError("no offer in the INVITE")
        call.media.signalling_encrypted("b", False)
        offer = call.media.offer_from("a", body)
        parsed = sdplib.parse_sdp(offer)
        index = sdplib.relayed_stream(parsed)
        connection = parsed.connection_for(index) if index is not None else None
        if connection is None:
            raise SdpError("the relay's offer names no address")
        host = self.local_host_for(connection.address)
        endpoint = RtpEndpoint(self.clock, self.listen_udp, host)
        try:
            answer = endpoint.answer(offer)
        except SdpError:
            endpoint.close()
            raise
        return endpoint, answer

    def info(self, call: Call, request: Request) -> bool:
        """
        Whether ``request`` (an INFO from the caller) is for a local
        application's call; a DTMF digit it carries (``application/dtmf-relay``
        ``Signal=5``, or ``application/dtmf``) goes to the endpoint.
        """
        endpoint = self.endpoints.get(call.call_id)
        if endpoint is None:
            return False
        digit = info_digit(request)
        if digit:
            endpoint.digit_received(digit)
        return True

    @staticmethod
    def _failed(failure: Failure, target: LocalTarget, call_id: str) -> None:
        if not isinstance(failure.value, HungUp):
            _log.failure(
                "Local application {name} failed on call {call_id}",
                failure,
                name=target.name,
                call_id=call_id,
            )


def _hung_up(failure: Failure) -> None:
    """The call ended while the endpoint played: nothing more to do."""
    failure.trap(HungUp)  # type: ignore[no-untyped-call]


def info_digit(request: Request) -> str:
    """
    The DTMF digit of a SIP INFO (``application/dtmf-relay``: ``Signal=5``;
    ``application/dtmf``: ``5``), or "" for anything else.
    """
    kind = (request.get("Content-Type") or "").split(";")[0].strip().lower()
    body = request.body[:256].decode("ascii", "replace")
    if kind == "application/dtmf-relay":
        for line in body.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal":
                body = value
                break
        else:
            return ""
    elif kind != "application/dtmf":
        return ""
    digit = body.strip().upper()
    return digit if len(digit) == 1 and digit in DIGITS else ""
