"""
A TLS client relay for SIP tools without TLS: Debian's SIPp is built without
OpenSSL (``-t l1`` answers "you must compile SIPp with OpenSSL"), so SIPp talks
TCP (``-t t1``) to ``socat``, which opens one TLS connection to Warden for each
TCP connection it accepts and copies bytes both ways. Warden sees a TLS client
on a port of socat's, as it sees a phone behind a NAT.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial import unittest

from tests.integration.clients import LOCALHOST, RawTcpClient, pause
from tests.integration.harness import free_port, require_binary, spawn


class TlsRelay:
    """
    ``socat`` listening on TCP ``LOCALHOST:port`` and relaying over TLS to
    ``target``, presenting ``cert``/``key`` (verification of Warden's
    certificate is off: it is self-signed in tests).
    """

    def __init__(
        self, socat: str, target: tuple[str, int], cert: Path, key: Path, workdir: Path
    ) -> None:
        self.target = target
        self.port = free_port()
        self.command = [
            socat,
            f"TCP-LISTEN:{self.port},bind={LOCALHOST},reuseaddr,fork",
            f"OPENSSL:{target[0]}:{target[1]},verify=0,cert={cert},key={key}",
        ]
        self.workdir = workdir
        self._process: object = None

    @property
    def address(self) -> tuple[str, int]:
        """Where SIP clients connect (TCP)."""
        return (LOCALHOST, self.port)

    async def start(self) -> None:
        """Start socat and wait until it accepts connections."""
        self._child, self._process = spawn(self.command, self.workdir)

        async def accepting() -> bool:
            try:
                client = await RawTcpClient.connect(self.address)
            except Exception:  # not listening yet: ConnectionRefusedError and kin
                return False
            await client.close()
            return True

        for _ in range(50):
            if await accepting():
                return
            await pause(0.1)
        raise RuntimeError(f"socat did not listen on {self.address}: {self._child.output}")

    def stop(self) -> None:
        """Kill socat (and the relays it forked)."""
        if self._child.running:
            self._process.signalProcess("KILL")  # type: ignore[attr-defined]


async def start_relay(
    testcase: unittest.TestCase, target: tuple[str, int], cert: Path, key: Path, workdir: Path
) -> TlsRelay:
    """A started L{TlsRelay}, stopped when ``testcase`` ends (socat is required)."""
    socat = require_binary(testcase, "socat", "socat")
    relay = TlsRelay(socat, target, cert, key, workdir)
    await relay.start()
    testcase.addCleanup(relay.stop)
    return relay
