"""RTP streams: 20 ms PCMU packets with a send-time probe, and what receivers make of them."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import SynchronousTestCase

from warden.ops.loadtest.media import PAYLOAD_BYTES, MediaEngine, RtpStream
from warden.ops.loadtest.sdp import offer, rtp_target
from warden.rtp.packet import parse_rtp


class _Port:
    """A listening port as far as streams use one."""

    def __init__(self, port: int) -> None:
        self.port = port

    def getHost(self) -> Any:
        return self

    def stopListening(self) -> None:
        pass


class _Reactor:
    """listenUDP that wires streams to fake transports."""

    def __init__(self) -> None:
        self.next_port = 40000

    def listenUDP(self, port: int, protocol: Any, interface: str = "", size: int = 0) -> _Port:
        protocol.makeConnection(FakeDatagramTransport())
        self.next_port += 2
        return _Port(self.next_port)


class StreamTests(SynchronousTestCase):
    """Two streams of one call, the network played by hand."""

    def setUp(self) -> None:
        """An engine on a Clock, a caller and a callee stream sending to each other."""
        self.clock = Clock()
        self.engine = MediaEngine(self.clock, _Reactor(), "127.0.0.1")  # type: ignore[arg-type]
        self.caller = self.engine.open()
        self.callee = self.engine.open()
        self.engine.start_sending(self.caller, ("127.0.0.1", self.callee.local_port))
        self.engine.start_sending(self.callee, ("127.0.0.1", self.caller.local_port))

    def sent(self, stream: RtpStream) -> list[bytes]:
        """Datagrams ``stream`` wrote."""
        transport: Any = stream.transport
        return [data for data, _ in transport.written]

    def test_packets_every_20_ms(self) -> None:
        """One PCMU packet per 20 ms, consecutive sequence numbers, +160 timestamps."""
        for _ in range(5):
            self.clock.advance(0.020)
        packets = [parse_rtp(p) for p in self.sent(self.caller)]
        self.assertEqual(len(packets), 5)
        self.assertEqual({p.payload_type for p in packets}, {0})
        self.assertEqual({p.payload_length for p in packets}, {PAYLOAD_BYTES})
        for a, b in pairwise(packets):
            self.assertEqual((b.sequence - a.sequence) % 65536, 1)
            self.assertEqual((b.timestamp - a.timestamp) % 2**32, 160)

    def test_latency_loss_and_pairing(self) -> None:
        """Delivered 30 ms late with one packet dropped: latency 30 ms, loss 1, paired by token."""
        for _ in range(10):
            self.clock.advance(0.020)
        self.caller.sending = self.callee.sending = False
        to_callee = self.sent(self.caller)
        to_caller = self.sent(self.callee)
        self.clock.advance(0.030)
        for data in to_callee:
            self.callee.datagramReceived(data, ("127.0.0.1", 1))
        for data in to_caller[:4] + to_caller[5:]:
            self.caller.datagramReceived(data, ("127.0.0.1", 1))
        result = self.engine.result(self.caller)
        self.assertGreaterEqual(len(to_callee), 9)
        self.assertEqual((result.to_callee.sent, result.to_callee.lost), (len(to_callee), 0))
        self.assertEqual((result.to_caller.sent, result.to_caller.lost), (len(to_caller), 1))
        # The first packet left at 20 ms; all arrive 30 ms after the last tick.
        assert result.to_callee.latency_ms_max is not None
        expected = (self.clock.seconds() - 0.020) * 1000.0
        self.assertAlmostEqual(result.to_callee.latency_ms_max, expected, places=3)
        self.assertAlmostEqual(result.to_caller.loss_ratio, 1 / len(to_caller))

    def test_nothing_came_back(self) -> None:
        """A caller that heard nothing reports everything lost both ways."""
        for _ in range(3):
            self.clock.advance(0.020)
        result = self.engine.result(self.caller)
        self.assertEqual((result.to_caller.lost, result.to_callee.lost), (3, 3))

    def test_junk_is_ignored(self) -> None:
        """Non-RTP datagrams change nothing."""
        self.caller.datagramReceived(b"\x00junk", ("127.0.0.1", 1))
        self.assertEqual(self.caller.stats.packets, 0)

    def test_close_stops_the_timer(self) -> None:
        """Closing every stream stops the 20 ms timer."""
        self.successResultOf(self.engine.close(self.caller))
        self.successResultOf(self.engine.close(self.callee))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SdpTests(SynchronousTestCase):
    """The offer and reading a peer's address."""

    def test_round_trip(self) -> None:
        """Our own offer names our address and port."""
        self.assertEqual(rtp_target(offer("192.0.2.7", 40002)), ("192.0.2.7", 40002))

    def test_unusable(self) -> None:
        """No body, bad SDP, hold address: None."""
        self.assertIsNone(rtp_target(b""))
        self.assertIsNone(rtp_target(b"garbage"))
        self.assertIsNone(rtp_target(offer("0.0.0.0", 4000)))
