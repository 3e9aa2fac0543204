"""
Large requests between Warden nodes go over TCP (RFC 3261 §18.1.1).

A request within 200 bytes of the path MTU, or larger than 1300 bytes when the
MTU is unknown, must travel on a congestion-controlled transport: a UDP
datagram that size is fragmented, and a lost fragment loses the whole request
(an INVITE with many codecs, a PIDF-LO location or an ``Identity`` header is
easily that large). Warden applies the rule to traffic between the nodes of a
cluster, which all listen on TCP: when the transport hub is about to send such
a request over UDP to another live node, L{NodeStreams} changes the top Via to
TCP (as §18.1.1 requires) and sends it on a TCP connection to that node,
reusing an open one or opening one from this node's cluster address (the
other nodes recognise it by that address, L{warden.sip.hop}). Responses come
back on that connection (§18.2.2). Messages written while the connection is
being opened wait for it (a bounded number); if it cannot be opened they are
lost like a lost datagram, and the client transaction's timers report it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTCP
from twisted.logger import Logger

from warden.sip import metrics
from warden.sip.flow import Flow
from warden.sip.message import Message, Request
from warden.sip.stream_opener import MAX_WAITING, StreamOpener
from warden.sip.transport import TransportHub, replace_top_via

#: RFC 3261 §18.1.1: the limit when the path MTU is unknown, and the margin below it.
UNKNOWN_MTU_LIMIT = 1300
MTU_MARGIN = 200

__all__ = ["MAX_WAITING", "NodeStreams", "udp_limit"]

_UDP_VIA = re.compile(r"^\s*SIP\s*/\s*2\.0\s*/\s*UDP(?=\s)", re.IGNORECASE)


def udp_limit(path_mtu: int) -> int:
    """The largest request sent over UDP for a path MTU (0: unknown)."""
    return UNKNOWN_MTU_LIMIT if path_mtu == 0 else path_mtu - MTU_MARGIN


class NodeStreams:
    """
    The transport hub's choice of TCP for large requests to other nodes.

    Args:
        connector: opens TCP connections (the reactor).
        hub: the transport hub; its connections carry the streams both ways.
        is_node: ``(host, port) -> bool``, whether that is another live node's
            SIP address (L{warden.sip.hop.NodeHop.is_node}).
        limit: the largest request sent to a node over UDP, in bytes.
        local_host: the address to open connections from ("" lets the system
            choose): this node's cluster address, by which the others know it.
    """

    log = Logger()

    def __init__(
        self,
        connector: IReactorTCP,
        hub: TransportHub,
        is_node: Callable[[str, int], bool],
        limit: int,
        local_host: str = "",
    ) -> None:
        self._is_node = is_node
        self.limit = limit
        self.local_host = local_host
        self._opener = StreamOpener(connector, hub, local_host, "node")

    def choose(self, message: Message, flow: Flow, data: bytes) -> tuple[Flow, bytes]:
        """
        The flow and bytes to send ``message`` (serialised as ``data``) with,
        for the UDP ``flow``. A request to another node goes over TCP when it
        is over the limit (its top Via is changed to TCP), or when its top Via
        no longer names UDP: the CANCEL, the ACK of a failure and retransmissions
        of a request moved earlier go the way it went (RFC 3261 §9.1,
        §17.1.1.3). Anything else is sent as it is.
        """
        if not isinstance(message, Request) or not self._is_node(flow.host, flow.port):
            return flow, data
        top = message.get_all("Via")[0]
        if _UDP_VIA.match(top) is not None:
            if len(data) <= self.limit:
                return flow, data
            replace_top_via(message, _UDP_VIA.sub("SIP/2.0/TCP", top, count=1))
            data = message.to_bytes()
            metrics.NODE_STREAM_REQUESTS.inc()
        connection = self._opener.connection(flow.host, flow.port)
        return Flow("tcp", flow.host, flow.port, connection), data
