"""
Where a SIP message came from or goes to: transport, address, and for streams the
connection it travels on (RFC 3261 §18, RFC 3581, RFC 5626 "flow").
"""

from __future__ import annotations

from typing import Any

import attrs

RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss"})


@attrs.frozen
class Flow:
    """
    A transport flow.

    Attributes:
        transport: lower-case transport name: "udp", "tcp" (later "tls").
        host: the peer's IP address (IPv6 without brackets).
        port: the peer's port.
        connection: for stream transports, the connection object that sends on
            this flow (an object with ``send_message(bytes)``); None for UDP.
    """

    transport: str
    host: str
    port: int
    connection: Any = attrs.field(default=None, eq=False, repr=False)

    @property
    def reliable(self) -> bool:
        """True for stream transports (no retransmissions, RFC 3261 §17)."""
        return self.transport in RELIABLE_TRANSPORTS

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"
