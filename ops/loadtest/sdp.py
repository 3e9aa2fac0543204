"""
The SDP the load-test agent offers and answers (RFC 3264): one G.711 PCMU audio
stream (payload type 0, RFC 3551 §6) at 20 ms ptime, and reading where a peer
wants RTP sent.
"""

from __future__ import annotations

import secrets

from warden.sip.sdp import SdpError, parse_sdp, relayed_stream


def offer(address: str, port: int) -> bytes:
    """An offer (or answer) of PCMU at ``address``:``port``, 20 ms packets."""
    session = secrets.randbelow(2**31)
    return (
        "v=0\r\n"
        f"o=warden-loadtest {session} {session} IN IP4 {address}\r\n"
        "s=warden-loadtest\r\n"
        f"c=IN IP4 {address}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    ).encode()


def rtp_target(body: bytes) -> tuple[str, int] | None:
    """
    Where the peer's SDP asks for RTP: the connection address and port of its
    first enabled RTP audio stream; None when there is none or the SDP is bad.
    """
    if not body:
        return None
    try:
        sdp = parse_sdp(body)
    except SdpError:
        return None
    index = relayed_stream(sdp)
    if index is None:
        return None
    connection = sdp.connection_for(index)
    if connection is None or connection.unspecified:
        return None
    return (connection.address, sdp.media[index].port)
