"""
What L{warden.ops.loadtest.agent.SipAgent} operations return: accounts, and the
outcome and timings of registrations and calls. Plain frozen values, so other
tools (the disaster-recovery drill, tests) can keep and compare them.

Times are in seconds on the agent's clock; a timer that did not run is None.
A failure has a ``cause``: the final status code as text (``"403"``), or
``"timeout"`` (no final response within the transaction timeout, RFC 3261 §17.1),
``"transport"`` (the request could not be sent), ``"unreachable"`` (the agent
is not connected), ``"stopped"`` (the agent stopped first), ``"bad-response"``
(a response the agent could not use, such as a 2xx without SDP or a malformed
answer to a REGISTER), ``"bad-challenge"`` (a 401/407 whose digest challenge
cannot be answered).
"""

from __future__ import annotations

import attrs

from .media import MediaResult


@attrs.frozen
class Account:
    """
    A SIP user the agent logs in as.

    Attributes:
        user: the user part of the address of record (the extension).
        password: the digest password.
        auth_user: the digest username when it differs from ``user``.
    """

    user: str
    password: str = attrs.field(repr=False)
    auth_user: str | None = None

    @property
    def username(self) -> str:
        """The digest username."""
        return self.auth_user or self.user


@attrs.frozen
class RegistrationResult:
    """
    One REGISTER exchange (RFC 3261 §10.2): the first request, its 401 challenge,
    the authenticated request and its final response.

    Attributes:
        user: the account's user.
        ok: a 2xx ended it.
        status: the last final status (None when none came).
        cause: why it failed (None when ok).
        started: when the first REGISTER was sent.
        duration: first REGISTER to the last final response (or to the failure).
        auth_duration: authenticated REGISTER to its final response, when one was sent.
        statuses: every final status received, in order (``(401, 200)``).
        expires: the expiry the registrar granted our contact, when it said.
    """

    user: str
    ok: bool
    status: int | None
    cause: str | None
    started: float
    duration: float
    auth_duration: float | None
    statuses: tuple[int, ...]
    expires: int | None = None


@attrs.frozen
class CallResult:
    """
    One call placed by the agent: INVITE (407, authenticated INVITE), 180, 200,
    ACK, held, BYE.

    Attributes:
        caller: the calling account's user.
        callee: the number dialled.
        ok: answered, held and ended by our BYE with a 2xx.
        answered: a 2xx to the INVITE arrived.
        status: the final status of the (last) INVITE, None when none came.
        cause: why it failed (None when ok); a failed BYE gives ``"bye-<status>"``
            or ``"bye-timeout"``; a BYE from the far end gives ``"remote-bye"``.
        started: when the first INVITE was sent.
        setup_time: first INVITE to the 2xx (includes the 407 round trip).
        auth_setup_time: authenticated INVITE to the 2xx.
        post_dial_delay: first INVITE to the first 180/183.
        held: seconds between the ACK and the BYE.
        bye_time: BYE to its final response.
        statuses: every final status to INVITEs, in order (``(407, 200)``).
        media: RTP quality of both directions, for calls with RTP that were answered.
        bye_status: the final status of our BYE, when one came.
    """

    caller: str
    callee: str
    ok: bool
    answered: bool
    status: int | None
    cause: str | None
    started: float
    setup_time: float | None
    auth_setup_time: float | None
    post_dial_delay: float | None
    held: float | None
    bye_time: float | None
    statuses: tuple[int, ...]
    media: MediaResult | None = None
    bye_status: int | None = None
