"""
Where a call's media may come from and go to (ADR 0013, ``[media]`` config).

Two questions, asked per phone, never per packet:

- **Destination** (UDP SSRF): may the relay send to the address a phone's SDP
  names (``c=``, ``m=`` port, ``a=rtcp``, RFC 4566 §5.7, RFC 3605)? With
  ``destinations = "same-class"`` (the default) a public address is fine;
  loopback, link-local, private (RFC 1918, RFC 6598, RFC 4193) addresses only
  when the phone's SIP comes from an address of the same class; multicast,
  broadcast, unspecified and reserved addresses never; the relay host's own
  addresses only when the phone signals from exactly that address. ``"any"``
  accepts every address of the relay's family.
- **Source** (symmetric RTP latching): from which IP addresses may the phone's
  media arrive? With ``latch = "signalling"`` (the default) from the address its
  SIP comes from or one its SDP names (and that passed the destination check);
  with ``"any"`` from anywhere. Either way a new source needs ``latch_packets``
  consecutive packets of one consistent RTP stream before the relay follows it
  (see L{warden.rtp.session}).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

import attrs

from warden.iplit import ip_literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LATCH_MODES = ("signalling", "any")
DESTINATION_MODES = ("same-class", "any")
SRTP_MODES = ("optional", "required")

_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",  # RFC 1918
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # RFC 6598 carrier-grade NAT
        "fc00::/7",  # RFC 4193 unique local
        "fec0::/10",  # deprecated site-local (RFC 3879)
    )
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # RFC 1122 §3.2.1.3
_BROADCAST = ipaddress.ip_address("255.255.255.255")


def ip_of(host: str) -> IPAddress | None:
    """``host`` as an address (IPv4-mapped IPv6 as IPv4); None when it is no IP literal."""
    ip = ip_literal(host)
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


# Both are asked of the same few addresses for every description and packet
# source; bounded caches, as warden.iplit's for the literals themselves.
@functools.lru_cache(maxsize=4096)
def normal_host(host: str) -> str:
    """The canonical text of an IP literal (as sockets report sources); else ``host``."""
    ip = ip_of(host)
    return host if ip is None else str(ip)


@functools.lru_cache(maxsize=4096)
def address_class(ip: IPAddress) -> str:
    """
    One of ``unspecified``, ``multicast``, ``broadcast``, ``loopback``,
    ``link-local``, ``private``, ``reserved``, ``public``.
    """
    if ip.is_unspecified or (ip.version == 4 and ip in _THIS_NETWORK):
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip == _BROADCAST:
        return "broadcast"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if any(ip in network for network in _PRIVATE if network.version == ip.version):
        return "private"
    if ip.is_reserved:
        return "reserved"
    return "public"


def _own(value: Iterable[str]) -> frozenset[IPAddress]:
    addresses = (ip_of(host) for host in value)
    return frozenset(ip for ip in addresses if ip is not None and not ip.is_unspecified)


@attrs.frozen
class MediaPolicy:
    """
    The ``[media]`` rules for media sources and destinations.

    Attributes:
        latch: ``"signalling"`` or ``"any"`` (see the module docstring).
        destinations: ``"same-class"`` or ``"any"``.
        latch_packets: consecutive packets of one stream before a new source is
            followed (1 follows at once).
        own_addresses: the relay host's addresses (never a destination unless the
            phone signals from exactly there).
        srtp: ``"optional"`` or ``"required"`` (L{warden.rtp.srtp}, ADR 0019).
    """

    latch: str = attrs.field(default="signalling", validator=attrs.validators.in_(LATCH_MODES))
    destinations: str = attrs.field(
        default="same-class", validator=attrs.validators.in_(DESTINATION_MODES)
    )
    latch_packets: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    own_addresses: frozenset[IPAddress] = attrs.field(default=frozenset(), converter=_own)
    srtp: str = attrs.field(default="optional", validator=attrs.validators.in_(SRTP_MODES))

    def destination_allowed(self, host: str, sources: str | Iterable[str]) -> bool:
        """
        Whether media may be sent to ``host``, named in the SDP of a phone whose
        SIP comes from ``sources`` (one address, or several while forked phones
        ring; none when not known).
        """
        if self.destinations == "any":
            return True
        if isinstance(sources, str):
            sources = (sources,)
        ip = ip_of(host)
        if ip is None:
            return False
        known = [s for s in map(ip_of, sources) if s is not None]
        if ip in self.own_addresses:
            return ip in known
        kind = address_class(ip)
        if kind == "public":
            return True
        return kind in _SAME_CLASS_OK and any(address_class(s) == kind for s in known)

    def latch_hosts(
        self, sources: Iterable[str], declared: Iterable[str]
    ) -> frozenset[str] | None:
        """
        The source IPs a phone's media may come from (None: any), given where its
        SIP comes from and the SDP addresses that passed L{destination_allowed}.
        """
        if self.latch == "any":
            return None
        return frozenset(normal_host(h) for h in (*sources, *declared))


# Classes a phone may point media at when its own SIP comes from the same class.
_SAME_CLASS_OK = frozenset(["loopback", "link-local", "private"])
