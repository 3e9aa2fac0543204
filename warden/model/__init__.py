"""
Warden's domain model: plain value objects that the stores keep and the
interfaces speak of (extensions, bindings, routes, call records, live calls; admin
accounts in L{warden.model.admin}, media state in L{warden.model.media}).

The bottom layer: it imports nothing of Warden, so L{warden.interfaces} and
every layer above can use it (ADR 0014).
"""

from __future__ import annotations

import json
from typing import Any

import attrs


@attrs.frozen
class Extension:
    """
    One extension of the directory.

    Attributes:
        number: the extension number, also the SIP user name and AOR user part.
        name: display name ("Front Desk").
        realm: the digest realm the HA1 values were computed with.
        ha1_md5: hex MD5(number:realm:password).
        ha1_sha256: hex SHA-256(number:realm:password) (RFC 8760).
        algorithms: digest algorithms offered to this extension, in order; empty
            means the registrar's configured default.
        enabled: a disabled extension cannot register.
        qualify: Warden sends OPTIONS to this extension's bindings periodically and
            skips the ones that stop answering when a call rings it.
        ring_timeout: seconds a call rings this extension before it counts as
            unanswered (voicemail, forward on no answer); 0: the default
            (``[voicemail] ring_timeout``, else ``[calls] ring_timeout``). At
            most ``[calls] ring_timeout`` is used.
    """

    number: str
    name: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    algorithms: tuple[str, ...] = ()
    enabled: bool = True
    qualify: bool = False
    ring_timeout: float = attrs.field(default=0.0, converter=float)


#: The ring timeouts an extension may have, in seconds (0: the default).
MIN_RING_TIMEOUT = 1.0
MAX_RING_TIMEOUT = 600.0


def ring_timeout_value(value: object) -> float:
    """
    ``value`` (a number from JSON or the command line) as an extension's ring
    timeout: 0 for the default, else seconds within the bounds; -1 when it is
    no such number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return -1.0
    if value == 0:
        return 0.0
    if isinstance(value, int) and not MIN_RING_TIMEOUT <= value <= MAX_RING_TIMEOUT:
        return -1.0  # also keeps huge integers away from float()
    number = float(value)
    return number if MIN_RING_TIMEOUT <= number <= MAX_RING_TIMEOUT else -1.0


@attrs.frozen
class Binding:
    """
    One registered contact of an AOR (RFC 3261 §10.3).

    Attributes:
        aor: extension number.
        contact: the Contact URI exactly as the phone sent it (without the header
            parameters).
        key: comparison key of ``contact`` (``warden.sip.uri.contact_key``).
        expires_at: absolute expiry, seconds since the epoch (clock time).
        q: preference 0.0-1.0.
        call_id: Call-ID of the REGISTER that created or refreshed it.
        cseq: CSeq number of that REGISTER.
        received: where the REGISTER came from, ``transport:host:port``.
        user_agent: the User-Agent header, or "".
        node_id: the Warden node that accepted it.
        sent_by: the REGISTER's top Via sent-by, ``host:port`` ("" when not
            recorded), for NAT detection (L{warden.sip.addressing.behind_nat}).
    """

    aor: str
    contact: str
    key: str
    expires_at: float
    q: float = 1.0
    call_id: str = ""
    cseq: int = 0
    received: str = ""
    user_agent: str = ""
    node_id: str = ""
    sent_by: str = ""


DISPOSITIONS = frozenset(["ANSWERED", "BUSY", "NO ANSWER", "FAILED", "CANCELLED"])
HANGUP_SIDES = frozenset(["caller", "callee", "system"])
LIVE_STATES = frozenset(["ringing", "answered", "on hold"])


def _json_object(value: Any) -> dict[str, Any]:
    """
    ``value`` as it comes back from JSON: tuples become lists, keys strings.

    Raises:
        TypeError: ``value`` is not a dict, or holds something JSON cannot encode.
        ValueError: it holds NaN or an infinity (not JSON).
    """
    if not isinstance(value, dict):
        raise TypeError(f"media must be a dict, got {type(value).__name__}")
    decoded: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    return decoded


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)


_text = attrs.validators.instance_of(str)


@attrs.frozen
class CallRecord:
    """
    The record of one finished call (a CDR).

    Attributes:
        call_id: Warden's id for the call; unique, and what makes writing a record
            twice harmless.
        caller: the calling extension number, or the external number.
        caller_name: the caller's display name ("" if none).
        callee: the extension actually reached; "" when none was.
        dialled: the number the caller dialled.
        started_at: when the INVITE arrived, seconds since the epoch (clock time).
        answered_at: when the call was answered; None if it never was.
        ended_at: when the call ended.
        disposition: one of L{DISPOSITIONS}: "ANSWERED", "BUSY", "NO ANSWER",
            "FAILED", "CANCELLED".
        hangup_cause: the SIP status or reason that ended it ("BYE", "486", "408",
            "media timeout", "shutdown").
        hangup_side: one of L{HANGUP_SIDES}: "caller", "callee", "system".
        codec: the negotiated codec ("PCMU"), "" if none.
        media: per-leg media statistics, kept as JSON: it is normalised to what a
            JSON round trip gives (tuples become lists, keys strings); values JSON
            cannot hold (objects, NaN) are refused with TypeError or ValueError.
        node_id: the Warden node that handled the call.
        recording: the call's recording, a WAV file relative to the recordings
            directory (``2026/12/05/<call_id>.wav``); "" when the call was not
            recorded or the recording was deleted (retention).
        recording_info: about that recording, as JSON (normalised like
            ``media``): ``started_at`` (clock time), ``trigger`` (``always`` or
            ``on_demand``), ``by`` (the extension that asked for it on demand);
            once deleted, ``deleted_at`` and the ``file`` it was.
        stir_attest: the STIR/SHAKEN attestation the call was signed with
            (outbound) or its verified PASSporT carried (inbound); "" for none.
        stir_verstat: the STIR/SHAKEN verification result of an inbound call
            (``TN-Validation-Passed``, ``TN-Validation-Failed``,
            ``No-TN-Validation``); "" when not verified.
        emergency: an emergency call (``911``, or the ``933`` test number:
            ``dialled`` tells them apart), routed by the e911 plugin.
    """

    call_id: str = attrs.field(validator=_text)
    caller: str = attrs.field(validator=_text)
    caller_name: str = attrs.field(validator=_text)
    callee: str = attrs.field(validator=_text)
    dialled: str = attrs.field(validator=_text)
    started_at: float = attrs.field(converter=float)
    answered_at: float | None = attrs.field(converter=_optional_float)
    ended_at: float = attrs.field(converter=float)
    disposition: str = attrs.field(validator=attrs.validators.in_(DISPOSITIONS))
    hangup_cause: str = attrs.field(validator=_text)
    hangup_side: str = attrs.field(validator=attrs.validators.in_(HANGUP_SIDES))
    codec: str = attrs.field(default="", validator=_text)
    media: dict[str, Any] = attrs.field(factory=dict, converter=_json_object, hash=False)
    node_id: str = attrs.field(default="", validator=_text)
    recording: str = attrs.field(default="", validator=_text)
    recording_info: dict[str, Any] = attrs.field(factory=dict, converter=_json_object, hash=False)
    stir_attest: str = attrs.field(default="", validator=_text)
    stir_verstat: str = attrs.field(default="", validator=_text)
    emergency: bool = attrs.field(default=False, converter=bool)

    @property
    def duration(self) -> float:
        """Seconds from start to end (never negative, should the clock step back)."""
        return max(0.0, self.ended_at - self.started_at)

    @property
    def billsec(self) -> float:
        """Seconds from answer to end; 0 for a call never answered."""
        if self.answered_at is None:
            return 0.0
        return max(0.0, self.ended_at - self.answered_at)

    def to_json_dict(self) -> dict[str, Any]:
        """
        Every field, as a JSON object (what the CDR spool writes per line). The
        two objects in it (``media``, ``recording_info``) are the record's own,
        already JSON-shaped: not copied again for each record written.
        """
        return attrs.asdict(self, recurse=False)

    @classmethod
    def from_json_dict(cls, data: Any) -> CallRecord:
        """
        The inverse of L{to_json_dict}.

        Raises:
            TypeError: ``data`` is not an object, misses a field or has an unknown
                one, or a field has the wrong type.
            ValueError: a field has a value outside its set.
        """
        if not isinstance(data, dict):
            raise TypeError(f"a call record must be a JSON object, got {type(data).__name__}")
        return cls(**data)


def expired_recording(record: CallRecord, at: float) -> CallRecord:
    """``record`` once retention deleted its recording at ``at`` (see L{CallRecord})."""
    info = {**record.recording_info, "deleted_at": at, "file": record.recording}
    return attrs.evolve(record, recording="", recording_info=info)


@attrs.frozen
class LiveCall:
    """
    A summary of one call in progress, for operators (``wardenctl calls``).

    Attributes:
        call_id: Warden's id for the call.
        caller: the calling extension or external number.
        callee: the extension reached so far ("" while nobody answered).
        dialled: the number dialled.
        state: one of L{LIVE_STATES}: "ringing", "answered", "on hold".
        started_at: when the INVITE arrived (clock time).
        answered_at: when it was answered, or None.
        codec: the negotiated codec, "" if none yet.
        packets: RTP packets relayed so far, both directions.
        node_id: the node handling the call.
        updated_at: when this summary was published (clock time).
        caller_media, callee_media: per leg, "srtp" when its media is encrypted,
            "rtp" when it is plain, "" when not known (ADR 0019).
        caller_signalling, callee_signalling: per leg, the transport its SIP
            travels on: "udp", "tcp" or "tls" (encrypted); "" before it has a
            dialog (ADR 0018).
        recording: the call is being recorded (always, or started on demand
            with ``*1``; ADR 0024).
    """

    call_id: str
    caller: str
    callee: str
    dialled: str
    state: str = attrs.field(validator=attrs.validators.in_(LIVE_STATES))
    started_at: float = attrs.field(converter=float)
    answered_at: float | None = attrs.field(default=None, converter=_optional_float)
    codec: str = ""
    packets: int = 0
    node_id: str = ""
    updated_at: float = attrs.field(default=0.0, converter=float)
    caller_media: str = ""
    callee_media: str = ""
    caller_signalling: str = ""
    callee_signalling: str = ""
    recording: bool = attrs.field(default=False, converter=bool)


@attrs.frozen
class Route:
    """
    Where a call goes.

    Attributes:
        status: 0 when ``bindings`` should be rung; otherwise the SIP status to
            answer the caller with (404 unknown number, 480 not registered).
        reason: the reason phrase for ``status``.
        extension: the extension reached, when the number is one.
        bindings: the contacts to fork to, best first.
    """

    status: int
    reason: str = ""
    extension: Extension | None = None
    bindings: tuple[Binding, ...] = ()
