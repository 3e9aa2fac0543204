"""Errors of the media layer (RTP parsing and the media relay)."""

from __future__ import annotations

from warden.errors import WardenError


class RtpParseError(WardenError):
    """Bytes that are not a usable RTP or RTCP packet (too short, not version 2, ...)."""


class MediaError(WardenError):
    """
    The media relay cannot do what was asked: no free ports in the configured
    range, or a session that was already released.
    """
