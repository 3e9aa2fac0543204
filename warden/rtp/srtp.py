"""
SRTP (RFC 3711) in the built-in relay: each call leg keyed on its own (ADR 0019).

Two pieces, both used by L{warden.rtp.session.MediaSession}:

- L{SrtpLeg}: one leg's cryptographic contexts through pylibsrtp (libsrtp 2).
  The phone's key (its ``a=crypto``) unprotects what it sends, SRTP and SRTCP;
  Warden's own key for that leg protects what the relay sends to it. A packet
  whose authentication tag does not verify is dropped as ``auth_failed``; one
  whose index the replay list has seen (RFC 3711 §3.3.2) as ``replayed``. So
  nothing forged or replayed is ever relayed, and the far leg (SRTP with other
  keys, or plain RTP) gets freshly protected packets.
- L{MediaCrypto}: the SDES offer/answer (RFC 4568) of one call, deciding per
  leg whether it is encrypted. The rules (``[media] srtp``):

  1. ``a=crypto`` is only accepted from and offered to a phone whose SIP comes
     over TLS (keys never travel in cleartext, RFC 4568 §8.3). An
     ``RTP/SAVP`` offer over UDP or TCP cannot be answered as such and is
     refused (488).
  2. An ``RTP/SAVP(F)`` offer with a usable ``a=crypto`` is answered with the
     same tag and suite and a key Warden generated for that leg. The other leg
     is offered SRTP, with another fresh key, when its phone is on TLS and
     either the offerer asked for SRTP or ``srtp = "required"``; otherwise
     it is offered plain RTP, and Warden decrypts and re-encrypts between the
     two. A leg keeps what it negotiated first in later offers (re-INVITEs).
  3. With ``srtp = "required"`` a plain RTP offer or answer, and a call whose
     other phone cannot be offered SRTP, are refused (488).

Warden's key for a leg stays the same through re-INVITEs (so no context is
reset mid-call) and is never used for another leg or call.
"""

from __future__ import annotations

import pylibsrtp

from warden.model.media import SIDES
from warden.rtp import sdes
from warden.rtp.policy import SRTP_MODES
from warden.sip import sdp as sdplib

_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
_REPLAYED = frozenset(["replay check failed (bad index)", "replay check failed (index too old)"])
#: SSRCs one leg's outbound context will protect: libsrtp keeps state per SSRC,
#: and a phone on the other leg must not make it grow without bound.
MAX_STREAMS = 16


class SrtpRefused(sdplib.SdpError):
    """An offer or answer the ``[media] srtp`` rules do not accept (488)."""


class SrtpDrop(Exception):
    """
    A packet that must not be relayed.

    Args:
        reason: the drop reason counted (L{warden.rtp.metrics.DROP_REASONS}).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _reason(error: pylibsrtp.Error) -> str:
    text = str(error)
    if text == "authentication failure":
        return "auth_failed"
    if text in _REPLAYED:
        return "replayed"
    return "malformed"


def _session(crypto: sdes.Crypto, ssrc_type: int) -> pylibsrtp.Session:
    """A libsrtp session for any inbound or any outbound SSRC, keyed by ``crypto``."""
    return pylibsrtp.Session(pylibsrtp.Policy(crypto.key, ssrc_type, 0, _PROFILES[crypto.suite]))


class SrtpLeg:
    """
    The SRTP contexts of one leg.

    Args:
        receive: the phone's ``a=crypto`` (what it encrypts with).
        send: Warden's ``a=crypto`` for this leg (what the relay encrypts with).
    """

    def __init__(self, receive: sdes.Crypto, send: sdes.Crypto) -> None:
        self.receive = receive
        self.send = send
        self._in = _session(receive, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self._out = _session(send, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self._out_ssrcs: set[bytes] = set()

    def unprotect(self, data: bytes, rtcp: bool) -> bytes:
        """
        The RTP or RTCP packet inside SRTP/SRTCP ``data`` from the phone.

        Raises:
            SrtpDrop: ``auth_failed``, ``replayed`` or ``malformed``.
        """
        try:
            if rtcp:
                return self._in.unprotect_rtcp(data)
            return self._in.unprotect(data)
        except pylibsrtp.Error as e:
            raise SrtpDrop(_reason(e)) from None
        except ValueError:
            raise SrtpDrop("malformed") from None  # longer than any MTU

    def protect(self, data: bytes, rtcp: bool) -> bytes:
        """
        ``data`` (RTP or RTCP) protected for the phone.

        Raises:
            SrtpDrop: ``replayed`` (the same packet index again), ``protect_failed``
                (too many SSRCs, too long, or another libsrtp refusal).
        """
        ssrc = data[4:8] if rtcp else data[8:12]
        if ssrc not in self._out_ssrcs:
            if len(self._out_ssrcs) >= MAX_STREAMS:
                raise SrtpDrop("protect_failed")
            self._out_ssrcs.add(ssrc)
        try:
            if rtcp:
                return self._out.protect_rtcp(data)
            return self._out.protect(data)
        except pylibsrtp.Error as e:
            reason = _reason(e)
            raise SrtpDrop("replayed" if reason == "replayed" else "protect_failed") from None
        except ValueError:
            raise SrtpDrop("protect_failed") from None


class _LegState:
    """What the negotiation knows about one leg."""

    def __init__(self) -> None:
        self.secure_signalling = False
        # Warden's key per suite for this leg: the same through re-INVITEs.
        self.keys: dict[str, bytes] = {}
        # Whether the leg's media is encrypted, once first negotiated.
        self.encrypted: bool | None = None
        # The phone's offer Warden answers: (its line, Warden's answer line), and
        # the transport profile to answer with.
        self.to_answer: tuple[sdes.Crypto, sdes.Crypto] | None = None
        self.answer_proto: str | None = None
        # What Warden offered to this phone, awaiting its answer.
        self.offered: sdes.Crypto | None = None
        self.leg: SrtpLeg | None = None

    def key_for(self, suite: str) -> bytes:
        key = self.keys.get(suite)
        if key is None:
            key = self.keys[suite] = sdes.new_key()
        return key

    def activate(self, receive: sdes.Crypto, send: sdes.Crypto) -> None:
        leg = self.leg
        if leg is None or leg.receive != receive or leg.send != send:
            self.leg = SrtpLeg(receive, send)
        self.encrypted = True

    def deactivate(self) -> None:
        self.leg = None
        self.encrypted = False


class MediaCrypto:
    """
    The SDES negotiation of one call's two legs (``"a"``, ``"b"``).

    Args:
        mode: ``"optional"`` or ``"required"`` (``[media] srtp``).
    """

    def __init__(self, mode: str = "optional") -> None:
        if mode not in SRTP_MODES:
            raise ValueError(f"srtp mode must be one of {SRTP_MODES}, not {mode!r}")
        self.mode = mode
        self._legs = {side: _LegState() for side in SIDES}

    def signalling_encrypted(self, side: str, encrypted: bool) -> None:
        """Whether the SIP of ``side``'s phone travels over TLS (rule 1)."""
        self._legs[side].secure_signalling = encrypted

    def is_signalling_encrypted(self, side: str) -> bool:
        """What L{signalling_encrypted} last said of ``side`` (False before)."""
        return self._legs[side].secure_signalling

    def keys(self, side: str) -> dict[str, bytes]:
        """Warden's master keys for ``side``'s leg so far, by suite."""
        return dict(self._legs[side].keys)

    def use_keys(self, side: str, keys: dict[str, bytes]) -> None:
        """
        Take ``keys`` as Warden's keys for ``side``'s leg (a copy of another
        negotiation of the same call: the media process, ADR 0033).
        """
        self._legs[side].keys.update(keys)

    def leg(self, side: str) -> SrtpLeg | None:
        """``side``'s SRTP contexts; None while its media is plain RTP."""
        return self._legs[side].leg

    def encrypted(self, side: str) -> bool:
        """Whether ``side``'s media is SRTP."""
        return self._legs[side].leg is not None

    def offer(
        self, side: str, sdp: sdplib.SessionDescription, index: int
    ) -> sdplib.SessionDescription:
        """
        An offer from ``side``'s phone (stream ``index`` relayed): remember what
        to answer it, and return the offer for the other phone.

        Raises:
            SrtpRefused: rules 1 and 3.
        """
        state, other = self._legs[side], self._legs[_other(side)]
        media = sdp.media[index]
        wants = sdes.is_secure(media.proto)
        if wants:
            if not state.secure_signalling:
                raise SrtpRefused("RTP/SAVP offered without TLS: its keys were sent in the clear")
            chosen = sdes.choose(sdes.offered_cryptos(media))
            if chosen is None:
                raise SrtpRefused("RTP/SAVP offer without a usable a=crypto")
            answer = sdes.Crypto(chosen.tag, chosen.suite, state.key_for(chosen.suite))
            state.to_answer = (chosen, answer)
        elif self.mode == "required":
            raise SrtpRefused('plain RTP offered ([media] srtp = "required")')
        else:
            state.to_answer = None
        state.answer_proto = media.proto
        encrypt = other.encrypted if other.encrypted is not None else wants
        if other.secure_signalling and (encrypt or self.mode == "required"):
            suite = state.to_answer[0].suite if state.to_answer else sdes.SUITES[0]
            other.offered = sdes.Crypto(1, suite, other.key_for(suite))
            return sdes.with_crypto(sdp, index, sdes.secure_profile(media.proto), [other.offered])
        if self.mode == "required":
            raise SrtpRefused("the called phone cannot be offered SRTP: its SIP is not on TLS")
        other.offered = None
        return sdes.with_crypto(sdp, index, sdes.plain_profile(media.proto), [])

    def answer(
        self, side: str, sdp: sdplib.SessionDescription, index: int
    ) -> sdplib.SessionDescription:
        """
        An answer from ``side``'s phone to what Warden offered it: key its leg,
        then the other leg, and return the answer for the other phone.

        Raises:
            SrtpRefused: the answer does not match the offer, or is plain under
                ``required``.
        """
        state, other = self._legs[side], self._legs[_other(side)]
        media = sdp.media[index]
        offered = state.offered
        if sdes.is_secure(media.proto):
            if offered is None or not state.secure_signalling:
                raise SrtpRefused("RTP/SAVP answer to a plain RTP offer")
            accepted = [
                c
                for c in sdes.offered_cryptos(media)
                if c.tag == offered.tag and c.suite == offered.suite
            ]
            if not accepted:
                raise SrtpRefused("RTP/SAVP answer without a=crypto for the offered tag")
            state.activate(accepted[0], offered)
        elif self.mode == "required":
            raise SrtpRefused('plain RTP answered ([media] srtp = "required")')
        else:
            state.deactivate()
        proto = other.answer_proto or media.proto
        if other.to_answer is not None:
            theirs, ours = other.to_answer
            other.activate(theirs, ours)
            return sdes.with_crypto(sdp, index, sdes.secure_profile(proto), [ours])
        other.deactivate()
        return sdes.with_crypto(sdp, index, sdes.plain_profile(proto), [])


def _other(side: str) -> str:
    return "b" if side == "a" else "a"
