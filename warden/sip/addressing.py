"""
Which of our addresses a peer sees, and how to reach a registered phone.

``via_for(flow)`` gives the ``host:port`` Warden puts in Via and Contact towards a
peer: the configured interface when it is a specific address, otherwise the
source address the kernel would pick to reach that peer (found with an
unconnected UDP socket's ``connect``, which sends nothing; cached per peer).

``flow_for(binding)`` turns a binding into something to send on: a UDP phone
is reached at its Contact unless it is behind a NAT (L{behind_nat}), then at
the address its REGISTER came from (RFC 3581, RFC 5626 §4.2), as Kamailio's
``nat_uac_test`` and Asterisk's ``nat=auto`` do; TCP/TLS phones through their
registration's connection while it is open. ``reach(binding)`` adds the other
nodes of a cluster: a phone whose connection or NAT binding another live node
holds is reached through that node (L{warden.sip.hop}, which decides "behind a
NAT" with the same L{behind_nat}).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from warden.digits import parse_uint
from warden.errors import SipParseError
from warden.iplit import ip_address, ip_literal
from warden.model import Binding
from warden.sip.flow import Flow
from warden.sip.uri import parse_uri


def parse_flow_text(text: str) -> tuple[str, str, int] | None:
    """``udp:192.0.2.1:5060`` / ``tcp:[2001:db8::1]:5060`` -> (transport, host, port)."""
    transport, sep, rest = text.partition(":")
    host, colon, port_text = rest.rpartition(":")
    port = parse_uint(port_text, 65535)
    if not sep or not colon or port is None:
        return None
    return transport, host.strip("[]"), port


#: ``[sip] nat``: "auto" detects a NAT per binding, "always" treats every UDP
#: phone as behind one (send to the REGISTER's source), "never" as behind none
#: (send to the Contact).
NAT_MODES = ("auto", "always", "never")

_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return ip_literal(host.strip("[]"))


def _unroutable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Private (RFC 1918, RFC 4193), shared (RFC 6598), loopback or link-local."""
    return not ip.is_global


def contact_address(binding: Binding) -> tuple[str, int] | None:
    """
    The UDP address a binding's Contact names, when Warden can send there
    itself: a ``sip:`` URI whose host is an IP literal, over UDP. None for a
    host name (Warden does not resolve Contacts), ``sips:``, another
    transport, a Contact asking to be reached on its flow (``;ob``, RFC 5626
    §5.3), or an unreadable Contact.
    """
    try:
        uri = parse_uri(binding.contact)
    except SipParseError:
        return None
    transport = (uri.param("transport") or "udp").lower()
    ip = _ip(uri.host)
    outbound = any(name == "ob" for name, _ in uri.params)
    if uri.scheme != "sip" or transport != "udp" or ip is None or outbound:
        return None
    return str(ip), uri.port or 5060


def sent_by_text(transport: str, host: str, port: int | None) -> str:
    """A Via sent-by as a binding records it: ``host:port``, default port filled in."""
    port = port or _DEFAULT_PORTS.get(transport.lower(), 5060)
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def behind_nat(binding: Binding, mode: str = "auto") -> bool:
    """
    Whether requests for ``binding`` must go to the address its REGISTER came
    from rather than to its Contact: the phone is behind a NAT.

    ``mode`` is ``[sip] nat``. With "auto" a NAT is detected when
    (1) the REGISTER's source differs from its top Via sent-by (RFC 3581: the
        phone did not see its own public address), or
    (2) the Contact is a private or unroutable address and the source is not.
    A binding recorded without its Via (by an older Warden) is behind a NAT
    when its source differs from its Contact, the rule Warden used before. A
    Contact Warden cannot send to itself (L{contact_address}) is always
    reached at the source, whatever the mode.
    """
    parsed = parse_flow_text(binding.received)
    if parsed is None:
        return False
    _, host, port = parsed
    contact = contact_address(binding)
    if contact is None or mode == "always":
        return True
    if mode == "never":
        return False
    source_ip = _ip(host)
    if source_ip is None:
        return True
    source = (str(source_ip), port)
    if not binding.sent_by:
        return contact != source
    sent_by = parse_flow_text(f"udp:{binding.sent_by}")
    if sent_by is None or not_at_sent_by(host, port, sent_by[1], sent_by[2]):
        return True
    return _unroutable(ip_address(contact[0])) and not _unroutable(source_ip)


def not_at_sent_by(source_host: str, source_port: int, sent_host: str, sent_port: int) -> bool:
    """
    Whether a message from ``source_host:source_port`` names another address
    in its Via sent-by (RFC 3581): a NAT rewrote its source, or it names itself
    by something other than an IP literal. Rule (1) of L{behind_nat}.
    """
    source_ip, sent_ip = _ip(source_host), _ip(sent_host)
    if source_ip is None or sent_ip is None:
        return True
    return (sent_ip, sent_port) != (source_ip, source_port)


def binding_host(binding: Binding, flow: Flow) -> str:
    """
    The IP address a binding's phone sends its SIP from: the source of its
    REGISTER, also when ``flow`` (the way to reach it) runs through another node
    (ADR 0010); ``flow``'s host when the binding does not say.
    """
    parsed = parse_flow_text(binding.received)
    return parsed[1] if parsed is not None else flow.host


def binding_over_tls(binding: Binding) -> bool:
    """Whether the binding's REGISTER came over TLS (its keys may be sent to it)."""
    parsed = parse_flow_text(binding.received)
    return parsed is not None and parsed[0] == "tls"


class Addressing:
    """
    Args:
        interface: the configured SIP interface ("" for all).
        nat: ``[sip] nat`` (L{NAT_MODES}), for L{behind_nat}.
        port: a callable giving the SIP port actually bound.
        connections: a callable ``(host, port) -> connection | None`` for open
            stream connections (the transport hub's).
        hop: routing through other nodes (a L{warden.sip.hop.NodeHop}) in a
            cluster; None on a single node.
        tls_port: a callable giving the SIP-over-TLS port bound (None: no TLS).
    """

    def __init__(
        self,
        interface: str,
        port: Callable[[], int],
        connections: Callable[[str, int], Any] | None = None,
        nat: str = "auto",
        hop: Any = None,
        tls_port: Callable[[], int] | None = None,
    ) -> None:
        self.interface = interface
        self._tls_port = tls_port
        self.nat = nat
        self._port = port
        self._connections = connections
        self._routes: dict[str, str] = {}
        self.hop = hop

    def local_host_for(self, peer: str) -> str:
        """Our address as seen by ``peer``."""
        if self.interface and self.interface not in ("0.0.0.0", "::"):
            return self.interface
        cached = self._routes.get(peer)
        if cached is not None:
            return cached
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(peer).version == 6 else socket.AF_INET
        except ValueError:
            return "127.0.0.1"
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.connect((peer, 9))  # UDP connect: picks a route, sends nothing
            local = str(sock.getsockname()[0])
        except OSError:
            local = "127.0.0.1" if family == socket.AF_INET else "::1"
        finally:
            sock.close()
        self._routes[peer] = local
        return local

    def via_for(self, flow: Flow) -> str:
        """
        ``host:port`` for Via and Contact towards ``flow``'s peer: the TLS port on
        a TLS flow (RFC 3261 §18.2.1: the port Warden is reached at over it).
        """
        host = self.local_host_for(flow.host)
        if ":" in host:
            host = f"[{host}]"
        port = (
            self._port() if flow.transport != "tls" or self._tls_port is None else self._tls_port()
        )
        return f"{host}:{port}"

    def reach(self, binding: Binding, call_id: str) -> tuple[Flow, list[str]] | None:
        """
        Where to send the call ``call_id``'s request for ``binding`` and the Route
        values it needs:
        through the node holding the phone's flow when another live node holds
        it and the phone cannot be reached directly; otherwise directly (also a
        UDP phone whose node died). None when the phone cannot be reached.
        """
        hop = self.hop
        if hop is not None and hop.wanted(binding):
            routed = hop.route(binding, call_id)
            if routed is not None:
                flow, route = routed
                return flow, [route]
        flow = self.flow_for(binding)
        return None if flow is None else (flow, [])

    def flow_for(self, binding: Binding) -> Flow | None:
        """The flow to reach a binding's phone, or None when it is gone."""
        parsed = parse_flow_text(binding.received)
        if parsed is None:
            return None
        transport, host, port = parsed
        if transport == "udp":
            if not behind_nat(binding, self.nat):
                contact = contact_address(binding)
                if contact is not None:
                    return Flow("udp", *contact)
            return Flow("udp", host, port)
        connection = self._connections(host, port) if self._connections else None
        if connection is None:
            return None
        return Flow(transport, host, port, connection)
