"""
Fuzz the SDP parser (RFC 4566 / RFC 8866) and what the call controller asks of
a description: the relayed stream, payload formats and codecs, telephone-events,
ptime, direction and hold, and the relay's rewrite. Only ``SdpError`` is
expected.
"""

from __future__ import annotations

import _harness
import atheris

with atheris.instrument_imports(include=["warden"]):
    from warden.sip.sdp import (
        SdpError,
        codecs,
        direction,
        is_hold,
        parse_sdp,
        payload_formats,
        ptime_ms,
        relayed_stream,
        rewrite,
        telephone_events,
    )


def check(data: bytes) -> None:
    """The fuzz target: parse one SDP body and read it as a call would."""
    try:
        sdp = parse_sdp(data)
        for media in sdp.media:
            payload_formats(media)
            codecs(media)
            telephone_events(media)
            ptime_ms(media)
            direction(media, sdp)
            is_hold(media, sdp)
        index = relayed_stream(sdp)
        ports = {} if index is None else {index: 40000}
        rewrite(sdp, "192.0.2.1", ports).to_bytes()
    except SdpError:
        return


def seeds() -> list[bytes]:
    """The SDP bodies of the torture corpus."""
    bodies = []
    for message in _harness.corpus_messages():
        _, body = _harness.split_message(message)
        start = body.find(b"v=0")
        if start >= 0:
            bodies.append(body[start:])
    return bodies


if __name__ == "__main__":
    _harness.run(check, seeds())
