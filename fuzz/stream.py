"""
Fuzz the TCP stream framer (RFC 3261 §18.3): the input is cut into chunks (the
first byte chooses their size) and fed to a ``StreamFramer`` with a small size
limit, as ``SipStreamProtocol`` does. Only ``SipParseError`` is expected, after
which the stream is dropped (the connection would be closed).
"""

from __future__ import annotations

import _harness
import atheris

with atheris.instrument_imports(include=["warden"]):
    from warden.errors import SipParseError
    from warden.sip.parser import StreamFramer

MAX_MESSAGE_BYTES = 4096


def check(data: bytes) -> None:
    """The fuzz target: frame ``data[1:]`` fed in chunks of ``data[0] + 1`` bytes."""
    if not data:
        return
    size, stream = data[0] + 1, data[1:]
    framer = StreamFramer(MAX_MESSAGE_BYTES)
    try:
        for start in range(0, len(stream), size):
            for message in framer.feed(stream[start : start + size]):
                message.to_bytes()
    except SipParseError:
        return
    if framer.pending_bytes > len(stream):
        raise AssertionError("the framer holds more bytes than it was given")


def seeds() -> list[bytes]:
    """Corpus messages, two at a time on one stream, in chunks of various sizes."""
    messages = _harness.corpus_messages()
    pairs = zip(messages, messages[1:] + messages[:1], strict=True)
    return [bytes([n % 256]) + a + b for n, (a, b) in enumerate(pairs)]


if __name__ == "__main__":
    _harness.run(check, seeds())
