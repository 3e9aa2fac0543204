"""
Fuzz the URI and header parsers one header line at a time: ``Name: value`` is
split as the message parser splits it, then the value goes through every parser
a header value can meet (SIP URI with §19.1.4 comparison key, name-addr,
Via, CSeq, parameters, host:port, digest credentials, comma lists). Only
``SipParseError`` is expected.
"""

from __future__ import annotations

import _harness
import atheris

with atheris.instrument_imports(include=["warden"]):
    from warden.errors import SipParseError
    from warden.sip.headers import (
        canonical_name,
        parse_address,
        parse_auth_params,
        parse_cseq,
        parse_params,
        parse_via,
        split_commas,
        unquote_string,
    )
    from warden.sip.uri import contact_key, parse_uri, split_host_port


def _each(value: str) -> None:
    uri = parse_uri(value)
    contact_key(uri)
    str(uri)


def _address(value: str) -> None:
    address = parse_address(value)
    contact_key(address.uri)
    str(address)


def check(data: bytes) -> None:
    """The fuzz target: one header line through every value parser."""
    line = data.decode("utf-8", "surrogateescape")
    name, _, value = line.partition(":")
    value = value.strip()
    parsers = [
        lambda: canonical_name(name.strip()),
        lambda: _each(value),
        lambda: _address(value),
        lambda: parse_cseq(value),
        lambda: parse_params(value),
        lambda: split_host_port(value),
        lambda: parse_auth_params(value),
        lambda: unquote_string(value),
        lambda: [parse_via(item) for item in split_commas(value)],
    ]
    for parse in parsers:
        try:
            parse()
        except SipParseError:
            pass


def seeds() -> list[bytes]:
    """Each header line and Request-URI of the torture corpus."""
    found: set[bytes] = set()
    for message in _harness.corpus_messages():
        lines, _ = _harness.split_message(message)
        start = lines[0].split(b" ")
        if len(start) == 3 and not start[0].startswith(b"SIP/"):
            found.add(b"Request-URI: " + start[1])
        found.update(line for line in lines[1:] if line)
    return sorted(found)


if __name__ == "__main__":
    _harness.run(check, seeds())
