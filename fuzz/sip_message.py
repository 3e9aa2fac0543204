"""
Fuzz the SIP datagram parser (RFC 3261 §7, §18.3) and everything the request
path reads from a parsed message: the lazily parsed Via, From, To, Contact,
CSeq, Request-URI and numeric headers, transaction matching (§17.2.3), the
``received``/``rport`` stamp (RFC 3581 §4), a stateless 400 for a partial
message, and serialising a response. Only ``SipParseError`` is expected.
"""

from __future__ import annotations

import _harness
import atheris

with atheris.instrument_imports(include=["warden"]):
    from warden.errors import SipParseError
    from warden.sip.dispatch import build_stateless_error
    from warden.sip.message import Message, Request, make_response
    from warden.sip.parser import parse_datagram
    from warden.sip.transaction import server_key
    from warden.sip.transport import stamp_via

#: Headers the core, registrar and call controller read as numbers.
NUMERIC = ("Max-Forwards", "Expires", "Min-Expires", "Content-Length", "RSeq", "Min-SE")


def _read(message: Message) -> None:
    """Read every parsed view of ``message``, as the request path does."""
    readers = [
        lambda: message.vias,
        lambda: message.to,
        lambda: message.from_,
        lambda: message.contacts,
        lambda: message.cseq,
        lambda: message.call_id,
        *[lambda name=name: message.int_header(name) for name in NUMERIC],
    ]
    if isinstance(message, Request):
        readers += [
            lambda: message.uri,
            lambda: server_key(message, message.method),
            lambda: make_response(message, 400, "Bad Request", "tag1").to_bytes(),
            lambda: stamp_via(message, "udp", "192.0.2.1", 5060),
        ]
    for read in readers:
        try:
            read()
        except SipParseError:
            pass
    message.to_bytes()


def check(data: bytes) -> None:
    """The fuzz target: parse one datagram and read it as Warden would."""
    try:
        message = parse_datagram(data)
    except SipParseError as e:
        if isinstance(e.partial, Request):
            build_stateless_error(e.partial, 400, "Bad Request")
        return
    _read(message)


def seeds() -> list[bytes]:
    """The torture corpus messages."""
    return _harness.corpus_messages()


if __name__ == "__main__":
    _harness.run(check, seeds())
