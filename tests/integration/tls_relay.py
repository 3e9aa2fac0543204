"""
A TLS client relay for SIP tools without TLS: Debian's SIPp is built without
OpenSSL (``-t l1`` answers "you must compile SIPp with OpenSSL"), so SIPp talks
TCP (``-t t1``) to ``socat``, which opens one TLS connection to Warden for each
TCP connection it accepts and copies bytes both ways. Warden sees a TLS client
on a port of socat's, as it sees a phone behind a NAT.

L{TlsTerminator} is the other direction, for a SIPp server Warden reaches over
TLS (a TLS trunk's ITSP): socat accepts TLS with a given certificate and
relays each connection over TCP to SIPp (``-t t1``).
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from tests.integration.clients import LOCALHOST, RawTcpClient, pause
from tests.integration.harness import (
    free_media_port,
    free_port,
    require_binary,
    run_sipp,
    spawn,
    stop_spawned,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_stats

BENCH_SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"


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
        self.bind = LOCALHOST
        self._process: object = None

    @classmethod
    def terminating(
        cls,
        socat: str,
        target: tuple[str, int],
        cert: Path,
        key: Path,
        workdir: Path,
        bind: str = LOCALHOST,
    ) -> TlsRelay:
        """
        The other direction: socat listening for TLS on ``bind:port`` with
        ``cert``/``key`` (no client certificate asked for), relaying each
        connection over TCP to ``target``.
        """
        relay = cls(socat, target, cert, key, workdir)
        relay.bind = bind
        relay.command = [
            socat,
            f"OPENSSL-LISTEN:{relay.port},bind={bind},reuseaddr,fork,verify=0,"
            f"cert={cert},key={key}",
            f"TCP:{target[0]}:{target[1]}",
        ]
        return relay

    @property
    def address(self) -> tuple[str, int]:
        """Where SIP clients connect."""
        return (self.bind, self.port)

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
        raise RuntimeError(f"socat did not listen on {self.address}: {self._child.output()}")

    async def stop(self) -> None:
        """
        Kill socat and wait until its pipes are closed (the relays it forked
        hold them until their connections end).
        """
        await stop_spawned(self._child, self._process)


async def start_relay(
    testcase: unittest.TestCase,
    target: tuple[str, int],
    cert: Path,
    key: Path,
    workdir: Path,
    terminating_on: str = "",
) -> TlsRelay:
    """
    A started L{TlsRelay} (TCP in, TLS out; with ``terminating_on`` an
    address, TLS in on it, TCP out), stopped when ``testcase`` ends (socat is
    required).
    """
    socat = require_binary(testcase, "socat", "socat")
    if terminating_on:
        relay = TlsRelay.terminating(socat, target, cert, key, workdir, terminating_on)
    else:
        relay = TlsRelay(socat, target, cert, key, workdir)
    await relay.start()
    testcase.addCleanup(lambda: Deferred.fromCoroutine(relay.stop()))
    return relay


async def calls_through(
    testcase: unittest.TestCase,
    relay: TlsRelay,
    caller_csv: Path,
    run_dir: Path,
    calls: int,
    transport: str,
) -> None:
    """
    ``calls`` calls placed at once by SIPp (bench/scenarios/call_uac.xml, the
    callers of ``caller_csv``) through ``relay`` over ``transport`` ("t1": one
    TLS connection, "tn": one per call), each held 500 ms: all must succeed.
    """
    args = [
        f"{relay.address[0]}:{relay.address[1]}",
        "-sf", str(BENCH_SCENARIOS / "call_uac.xml"), "-inf", str(caller_csv),
        "-t", transport, "-max_socket", "100", "-i", LOCALHOST, "-p", str(free_port()),
        "-mp", str(free_media_port()), "-m", str(calls), "-l", str(calls), "-r", str(calls),
        "-d", "500", "-timeout", "60s", "-timeout_error", "-trace_stat", "-trace_err",
    ]  # fmt: skip
    result = await run_sipp(args, run_dir, timeout=90)
    stats = read_sipp_stats(run_dir)
    context = f"sipp exit {result.code}\n{result.stderr}\n{read_sipp_errors(run_dir)}"
    testcase.assertEqual(result.code, 0, context)
    testcase.assertEqual((stats.successful, stats.failed), (calls, 0), context)
