"""
Robustness of a running Warden against hostile input (RFC 4475, RFC 5118, and
oversized TCP messages, RFC 3261 §18.3).

Every torture message is sent as is, over UDP and over TCP (one connection per
message). Whatever Warden answers, it must keep running, log no traceback, and
still register an extension afterwards. On TCP, an endless header block and a
10 MB body are cut off without the process growing by more than 20 MB.
"""

from __future__ import annotations

from pathlib import Path

from tests.corpus import conformance_dir
from tests.integration.clients import LOCALHOST, RawTcpClient, new_branch, pause, poll
from tests.integration.harness import (
    IntegrationTestCase,
    WardenProcess,
    provision,
)

USER_COUNT = 1
MAX_RSS_GROWTH_KIB = 20 * 1024
TCP_WAIT = 2.0
"""Seconds a torture connection may stay open waiting for an answer."""


def torture_files() -> list[Path]:
    """Every ``rfc4475/*.dat`` and ``rfc5118/*.dat`` file of the conformance corpus."""
    base = conformance_dir()
    return sorted(base.glob("rfc4475/*.dat")) + sorted(base.glob("rfc5118/*.dat"))


class TortureTests(IntegrationTestCase):
    """A real Warden survives the torture corpus and oversized TCP input."""

    async def start(self) -> tuple[WardenProcess, str, str]:
        """A running Warden with one extension; returns it, the number and password."""
        warden = await self.start_warden()
        users = await provision(warden.config_path, USER_COUNT)
        number = users.numbers[0]
        return warden, number, users.passwords[number]

    async def assert_still_serves(self, warden: WardenProcess, number: str, password: str) -> None:
        """Warden is alive, logged no traceback, and registers ``number``."""
        self.assertTrue(warden.running, "Warden exited")
        client = await self.sip_client(warden)
        contact = f"<sip:{number}@{LOCALHOST}:{client.local_port}>"
        response = await client.register(number, password, contact)
        self.assertEqual(response.status, 200, str(response.headers))
        self.assertTrue(warden.running, "Warden exited")
        log = warden.log_text()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("Unhandled", log)

    def corpus(self) -> list[Path]:
        """The torture files; fails when the corpus is missing or incomplete."""
        files = torture_files()
        self.assertGreaterEqual(
            len(files),
            61,
            f"expected the 49 RFC 4475 and 12 RFC 5118 messages in {conformance_dir()}"
            " (set WARDEN_CONFORMANCE_DIR)",
        )
        return files

    async def test_torture_messages_udp(self) -> None:
        """
        Each RFC 4475 and RFC 5118 message, sent as one UDP datagram, leaves
        Warden running, with no traceback logged, and still registering.
        """
        files = self.corpus()
        warden, number, password = await self.start()
        client = await self.sip_client(warden)
        for path in files:
            client.send_raw(path.read_bytes())
            await pause(0.01)
        # Datagrams from one socket are handled in order: once OPTIONS is
        # answered, every torture message has been processed.
        response = await client.options()
        self.assertEqual(response.status, 200)
        await self.assert_still_serves(warden, number, password)

    async def test_torture_messages_tcp(self) -> None:
        """
        Each RFC 4475 and RFC 5118 message, sent on its own TCP connection, gets
        an answer, a closed connection, or (when its Content-Length promises more
        bytes than it has) a wait that the client ends after two seconds; Warden
        keeps running, logs no traceback, and still registers.
        """
        files = self.corpus()
        warden, number, password = await self.start()
        clients: list[RawTcpClient] = []
        for path in files:
            client = await self.tcp_client(warden.address)
            client.write(path.read_bytes())
            clients.append(client)
        await poll(lambda: all(c.lost or c.has_response() for c in clients), TCP_WAIT)
        for client in clients:
            await client.close()
        await self.assert_still_serves(warden, number, password)

    async def test_endless_header_tcp(self) -> None:
        """
        A TCP client that keeps sending header lines (up to 2 MB, never the blank
        line) is disconnected; Warden's memory grows by less than 20 MB and it
        still registers.
        """
        warden, number, password = await self.start()
        await self.assert_still_serves(warden, number, password)
        rss_before = warden.rss_kib()
        client = await self.tcp_client(warden.address)
        client.write(f"REGISTER sip:{LOCALHOST} SIP/2.0\r\n".encode())
        line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        chunk = line * 16
        written = 0
        while written < 2_000_000 and not client.lost:
            client.write(chunk)
            written += len(chunk)
            await pause(0.001)
        self.assertTrue(
            await poll(lambda: client.lost, 5.0), f"still connected after {written} bytes"
        )
        growth = warden.rss_kib() - rss_before
        self.assertLess(growth, MAX_RSS_GROWTH_KIB, f"RSS grew by {growth} KiB")
        await self.assert_still_serves(warden, number, password)

    async def test_huge_body_tcp(self) -> None:
        """
        A TCP request announcing ``Content-Length: 10000000`` and sending that
        body gets 400 Bad Request and is disconnected; Warden's memory grows by
        less than 20 MB and it still registers.
        """
        warden, number, password = await self.start()
        await self.assert_still_serves(warden, number, password)
        rss_before = warden.rss_kib()
        client = await self.tcp_client(warden.address)
        head = (
            f"REGISTER sip:{LOCALHOST} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {LOCALHOST}:5060;branch={new_branch()}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{number}@{LOCALHOST}>;tag=huge\r\n"
            f"To: <sip:{number}@{LOCALHOST}>\r\n"
            f"Call-ID: huge-body@{LOCALHOST}\r\n"
            "CSeq: 1 REGISTER\r\n"
            "Content-Type: application/octet-stream\r\n"
            "Content-Length: 10000000\r\n\r\n"
        )
        client.write(head.encode())
        chunk = b"x" * 65536
        written = 0
        while written < 10_000_000 and not client.lost:
            client.write(chunk)
            written += len(chunk)
            await pause(0.001)
        self.assertTrue(
            await poll(lambda: client.lost, 5.0), f"still connected after {written} bytes"
        )
        self.assertTrue(
            client.received.startswith(b"SIP/2.0 400 "),
            f"expected 400 Bad Request, got {bytes(client.received[:200])!r}",
        )
        growth = warden.rss_kib() - rss_before
        self.assertLess(growth, MAX_RSS_GROWTH_KIB, f"RSS grew by {growth} KiB")
        await self.assert_still_serves(warden, number, password)
