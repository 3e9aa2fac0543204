"""
The relay leaks nothing: after many calls, clean or failing at every step we
can break, every port is back in the pool, no socket is open and no delayed call
is left on the clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.rtp.conformance import CALLEE, CALLER
from warden.rtp.errors import MediaError
from warden.rtp.relay import MediaRelay
from warden.rtp.session import MediaSession
from warden.sip.sdp import SdpError
from warden.testing.rtpnet import FakeNetwork, rtp, sdp_body

CYCLES = 1000


class LeakTests(SynchronousTestCase):
    """Allocate/release cycles leave the relay as it started."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = FakeNetwork()
        self.relay = MediaRelay(
            self.clock, self.network.listen_udp, "203.0.113.1", port_range=(10000, 10019)
        )

    def assertClean(self) -> None:
        """Every port free, no socket open, no session, nothing scheduled."""
        self.assertEqual(self.relay.pool.free, self.relay.pool.size)
        self.assertEqual(self.relay.ports_in_use(), 0)
        self.assertEqual(self.network.ports, {})
        self.assertEqual(self.relay.sessions(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def allocate(self) -> MediaSession:
        """A session (the allocation must succeed)."""
        session = self.successResultOf(self.relay.allocate("call"))
        assert isinstance(session, MediaSession)
        return session

    def test_clean_cycles(self) -> None:
        """1,000 calls with media, each released: nothing left behind."""
        for i in range(CYCLES):
            session = self.allocate()
            session.offer_from("a", sdp_body(CALLER, 4000))
            session.answer_from("b", sdp_body(CALLEE, 5000))
            self.network.deliver(session.side_a.rtp_port, rtp(i), (CALLER, 4000))
            self.clock.advance(0.5)
            session.release()
        self.assertClean()
        self.assertEqual(self.network.binds, 4 * CYCLES)

    def test_cycles_with_errors(self) -> None:
        """1,000 calls failing at a different step each time: nothing left behind."""
        steps = [
            self.refused_rtp,
            self.refused_rtcp,
            self.unforeseen_bind_error,
            self.bad_sdp,
            self.close_fails,
            self.timeout_callback_raises,
            self.released_by_timeout,
            self.exhausted,
            self.double_release,
        ]
        for i in range(CYCLES):
            steps[i % len(steps)](i)
            self.network.refused = set()
            self.network.fail_bind = None
            self.network.fail_close = False
            self.assertEqual(self.relay.pool.in_use, 0, steps[i % len(steps)].__name__)
        self.flushLoggedErrors(OSError, RuntimeError)
        self.assertClean()

    def refused_rtp(self, i: int) -> None:
        """An RTP port will not bind: skipped."""
        self.network.refused = {10000 + 2 * (i % 10)}
        self.allocate().release()

    def refused_rtcp(self, i: int) -> None:
        """An RTCP port will not bind: its RTP port is closed, the pair skipped."""
        self.network.refused = {10001 + 2 * (i % 10)}
        self.allocate().release()

    def unforeseen_bind_error(self, i: int) -> None:
        """The n-th bind raises something unexpected: the allocation fails cleanly."""
        calls = []

        def fail_at(port: int) -> None:
            calls.append(port)
            if len(calls) == 1 + i % 4:
                raise RuntimeError("unforeseen")

        self.network.fail_bind = fail_at
        self.failureResultOf(self.relay.allocate("call"), RuntimeError)

    def bad_sdp(self, i: int) -> None:
        """The caller's SDP is malformed: the controller answers 488 and releases."""
        session = self.allocate()
        with self.assertRaises(SdpError):
            session.offer_from("a", b"v=0\r\ngarbage")
        session.release()

    def close_fails(self, i: int) -> None:
        """Closing the sockets fails: the ports come back anyway."""
        session = self.allocate()
        self.network.fail_close = True
        session.release()

    def timeout_callback_raises(self, i: int) -> None:
        """on_timeout raises: logged; the controller releases later."""
        session = self.allocate()

        def boom() -> None:
            raise RuntimeError("controller bug")

        session.on_timeout = boom
        self.clock.advance(61)
        session.release()

    def released_by_timeout(self, i: int) -> None:
        """on_timeout releases the session, as the call controller does."""
        session = self.allocate()
        session.on_timeout = session.release
        self.clock.advance(61)

    def exhausted(self, i: int) -> None:
        """The range runs out: the extra allocation fails; the others release."""
        sessions = [self.allocate() for _ in range(5)]
        self.failureResultOf(self.relay.allocate("call"), MediaError)
        for session in sessions:
            session.release()

    def double_release(self, i: int) -> None:
        """Release twice, and via close()."""
        session = self.allocate()
        session.release()
        session.release()
        self.allocate()
        self.relay.close()
