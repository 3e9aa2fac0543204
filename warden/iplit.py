"""
IP address literals, parsed once.

A call's signalling and media name the same few addresses over and over: the
phones', the PBX's own, the trunks'. ``ipaddress.ip_address`` builds a new
object from the text each time (about 15 µs for IPv4, several calls per SIP
message and per SDP). L{ip_literal} keeps the last L{CACHED} answers, misses
included, in a bounded least-recently-used cache: hostile text cannot grow it,
and the address objects it hands out are immutable, so sharing them is safe.
"""

from __future__ import annotations

import functools
import ipaddress

__all__ = ["CACHED", "IPAddress", "ip_address", "ip_literal"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Texts remembered (addresses and non-addresses alike).
CACHED = 4096


@functools.lru_cache(maxsize=CACHED)
def ip_literal(text: str) -> IPAddress | None:
    """``text`` as an IPv4 or IPv6 address; None when it is not an IP literal."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def ip_address(text: str) -> IPAddress:
    """L{ip_literal}, raising ValueError (as ``ipaddress.ip_address``) for a non-literal."""
    ip = ip_literal(text)
    if ip is None:
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 address")
    return ip
