"""
Which of our addresses a peer sees, and how to reach a registered phone.

``via_for(flow)`` gives the ``host:port`` Warden puts in Via and Contact towards a
peer: the configured interface when it is a specific address, otherwise the
source address the kernel would pick to reach that peer (found with an
unconnected UDP socket's ``connect``, which sends nothing; cached per peer).

``flow_for(binding)`` turns a binding's recorded flow into something to send on:
UDP phones are reached at the address their REGISTER came from (NAT-friendly,
as RFC 5626 §4.2 suggests); TCP phones through their registration's connection
while it is open. ``reach(binding)`` adds the other nodes of a cluster: a phone
whose connection or NAT binding another live node holds is reached through that
node (L{warden.sip.hop}).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from warden.digits import parse_uint
from warden.sip.flow import Flow
from warden.store.model import Binding


def parse_flow_text(text: str) -> tuple[str, str, int] | None:
    """``udp:192.0.2.1:5060`` / ``tcp:[2001:db8::1]:5060`` -> (transport, host, port)."""
    transport, sep, rest = text.partition(":")
    host, colon, port_text = rest.rpartition(":")
    port = parse_uint(port_text, 65535)
    if not sep or not colon or port is None:
        return None
    return transport, host.strip("[]"), port


class Addressing:
    """
    Args:
        interface: the configured SIP interface ("" for all).
        port: a callable giving the SIP port actually bound.
        connections: a callable ``(host, port) -> connection | None`` for open
            stream connections (the transport hub's).
    """

    def __init__(
        self,
        interface: str,
        port: Callable[[], int],
        connections: Callable[[str, int], Any] | None = None,
    ) -> None:
        self.interface = interface
        self._port = port
        self._connections = connections
        self._routes: dict[str, str] = {}
        #: Routing through other nodes (a L{warden.sip.hop.NodeHop}), in a cluster.
        self.hop: Any = None

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
        """``host:port`` for Via and Contact towards ``flow``'s peer."""
        host = self.local_host_for(flow.host)
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self._port()}"

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
            return Flow("udp", host, port)
        connection = self._connections(host, port) if self._connections else None
        if connection is None:
            return None
        return Flow(transport, host, port, connection)
