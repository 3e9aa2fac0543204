"""
Tests for the built-in relay in a media process (L{warden.rtp.procrelay},
L{warden.rtp.mediaproc}, ADR 0033), with the process replaced by a loopback
fake (L{warden.testing.mediaproc}): the conformance suite, the in-process
relay's own tests run through the control channel, then what only the
out-of-process relay does (events, restarts, a broken channel).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.rtp import test_music, test_relay, test_srtp
from tests.rtp.conformance import CALLER, MediaRelayConformanceMixin
from warden.rtp import g711, metrics, procrelay
from warden.rtp.control import ControlError, FrameReader, frame, pack, unpack
from warden.rtp.errors import MediaError
from warden.rtp.mediaproc import MediaWorker
from warden.rtp.policy import MediaPolicy
from warden.rtp.ports import split_ports
from warden.rtp.procrelay import (
    ALLOCATE_TIMEOUT,
    FINAL_STATS_TIMEOUT,
    MediaProcessProtocol,
    ProcessRelay,
    ProcessSession,
)
from warden.testing.mediaproc import LoopbackSpawner
from warden.testing.rtpnet import FakeNetwork, dtmf, rtp, sdp_body

RELAY_IP = test_relay.RELAY_IP


def settings(**kw: Any) -> dict[str, Any]:
    """The process's settings, as the media plugin makes them."""
    base: dict[str, Any] = {
        "address": RELAY_IP, "port_min": 10000, "port_max": 10099, "interface": RELAY_IP,
        "timeout": 60.0, "latch": "signalling", "destinations": "same-class",
        "latch_packets": 3, "own_addresses": [RELAY_IP], "srtp": "optional",
        "hold_music": "",
    }  # fmt: skip
    base.update(kw)
    return base


def process_relay(
    clock: Clock, network: FakeNetwork, **kw: Any
) -> tuple[ProcessRelay, LoopbackSpawner]:
    """A ProcessRelay whose media process is a loopback worker on ``network``."""
    spawner = LoopbackSpawner(clock, network.listen_udp)
    config = settings(**kw)
    return ProcessRelay(clock, spawner, config, policy_of(config)), spawner


def policy_of(config: dict[str, Any]) -> MediaPolicy:
    """The media policy the process's settings carry."""
    keys = ("latch", "destinations", "latch_packets", "own_addresses", "srtp")
    return MediaPolicy(*(config[k] for k in keys))


class ProcessConformanceTests(MediaRelayConformanceMixin, TestCase):
    """ProcessRelay against the IMediaRelay/IMediaSession suite."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = FakeNetwork()

    def make_relay(self, port_range: tuple[int, int] = (10000, 10099)) -> ProcessRelay:
        relay, _ = process_relay(
            self.clock, self.network, port_min=port_range[0], port_max=port_range[1]
        )
        return relay


class ProcessRelayMixin:
    """The in-process relay's tests, with the relay in the (loopback) media process."""

    clock: Clock
    network: FakeNetwork

    def make_relay(self, **kw: Any) -> Any:
        port_range = kw.pop("port_range", (10000, 10099))
        kw.pop("choose_port", None)  # the process takes ports at random
        policy = kw.pop("policy", None)
        if policy is not None:
            kw.update(latch=policy.latch, destinations=policy.destinations,
                      latch_packets=policy.latch_packets, srtp=policy.srtp)  # fmt: skip
        music = kw.pop("hold_music", None)
        if music is not None:  # the process reads it from a WAV file
            path = Path(self.mktemp())  # type: ignore[attr-defined]
            path.write_bytes(g711.wav_bytes(music.pcm))
            kw["hold_music"] = str(path)
        if "address" in kw:
            kw.update(interface=kw["address"], own_addresses=[kw["address"]])
        relay, self.spawner = process_relay(
            self.clock, self.network, port_min=port_range[0], port_max=port_range[1], **kw
        )
        if not getattr(self.network, "turns_end", False):
            # A packet comes in a later reactor turn than the signalling before
            # it: what the relay holds back until the turn's end is sent first.
            deliver = self.network.deliver

            def in_a_later_turn(port: int, datagram: bytes, source: Any) -> None:
                self.clock.advance(0)
                deliver(port, datagram, source)

            self.network.deliver = in_a_later_turn  # type: ignore[method-assign]
            self.network.turns_end = True  # type: ignore[attr-defined]
        return relay

    def exported(self, metric: Any) -> float:
        self.relay.flush_metrics()  # type: ignore[attr-defined]
        return test_relay.value(metric)

    def allocate(self, relay: Any = None) -> Any:
        relay = relay or self.relay  # type: ignore[attr-defined]
        session = self.successResultOf(relay.allocate("call-1"))  # type: ignore[attr-defined]
        assert isinstance(session, ProcessSession)
        own_stats, own_idle = session.stats, session.idle_for

        # The process reports each interval; the in-process tests read at once.
        def stats() -> dict[str, dict[str, Any]]:
            relay.flush_metrics()
            return own_stats()

        def idle_for(now: float) -> float:
            relay.flush_metrics()
            return own_idle(now)

        # The music plays in the process: the tests look at the process's players.
        session.players = self.spawner.current.worker.sessions[session.number].players
        session.stats = stats  # type: ignore[method-assign]
        session.idle_for = idle_for  # type: ignore[method-assign]
        return session


class ProcessRelayingTests(ProcessRelayMixin, test_relay.RelayingTests):
    """RelayingTests through the control channel."""

    def ipv6_relay(self) -> Any:
        """The process's settings name the IPv6 address (it cannot change later)."""
        return self.make_relay(port_range=(30000, 30099), address="2001:db8::1")


class ProcessLatchingTests(ProcessRelayMixin, test_relay.LatchingTests):
    """LatchingTests through the control channel."""


class ProcessCounterTests(ProcessRelayMixin, test_relay.CounterTests):
    """CounterTests through the control channel."""


class ProcessTimeoutTests(ProcessRelayMixin, test_relay.TimeoutTests):
    """
    TimeoutTests through the control channel. While sessions exist, three loops
    run instead of one: the relay's check and the process's report (in the
    process), Warden's gauges.
    """

    LOOPS = 3


class ProcessNegotiationTests(ProcessRelayMixin, test_srtp.NegotiationTests):
    """SRTP negotiation through the control channel."""


class ProcessSrtpRelayTests(ProcessRelayMixin, test_srtp.SrtpRelayTests):
    """SRTP relaying in the process, with the keys Warden's mirror gave the phones."""


class ProcessHoldMusicTests(ProcessRelayMixin, test_music.HoldMusicTests):
    """Hold music played by the process."""


class ProcessHoldEndsTests(ProcessRelayMixin, test_music.HoldEndsTests):
    """Hold music stopping, in the process."""


class ProcessEventTests(ProcessRelayMixin, test_relay.RelayTestMixin, SynchronousTestCase):
    """What the media process tells Warden: stats, digits, timeouts, tapped audio."""

    def worker_session(self, session: ProcessSession) -> Any:
        return self.spawner.current.worker.sessions[session.number]

    def test_stats_come_from_the_process(self) -> None:
        """stats() holds the process's counters after a check interval."""
        session = self.call()
        for seq in range(1, 6):
            self.from_caller(session, rtp(seq, 160 * seq))
        self.assertEqual(ProcessSession.stats(session)["a"]["packets_in"], 0)  # not yet told
        self.clock.advance(1.0)
        stats = ProcessSession.stats(session)
        self.assertEqual(stats["a"]["packets_in"], 5)
        self.assertEqual(stats["b"]["packets_out"], 5)
        self.assertEqual(stats["a"]["direction"], "sendrecv")
        self.assertEqual(stats, self.worker_session(session).stats())

    def test_reports_only_changes(self) -> None:
        """
        After a session's first report, one carries only the counters that
        changed, by side, and none for a session where nothing did; Warden's
        merged copy stays equal to the process's.
        """
        session = self.call()
        quiet = self.call()
        for seq in range(1, 6):
            self.from_caller(session, rtp(seq, 160 * seq))
        self.clock.advance(1.0)
        worker = self.spawner.current.worker
        reports: list[dict[str, Any]] = []
        send = worker.send
        worker.send = lambda message: (reports.append(message), send(message))
        self.clock.advance(1.0)
        quiet_reports = [r["sessions"] for r in reports if r["op"] == "stats"]
        self.assertTrue(quiet_reports)
        self.assertEqual(quiet_reports, [{}] * len(quiet_reports))
        self.clock.advance(0.5)
        self.from_callee(session, rtp(1, 160, ssrc=9))
        del reports[:]
        self.clock.advance(1.0)
        told = [r["sessions"] for r in reports if r["op"] == "stats" and r["sessions"]]
        self.assertEqual(len(told), 1)
        self.assertEqual(list(told[0]), [str(session.number)])
        changes = told[0][str(session.number)]
        self.assertEqual(
            sorted(changes["b"]),
            ["bytes_in", "last_packet_at_in", "latched", "packets_in"],
        )
        self.assertEqual(sorted(changes["a"]), ["bytes_out", "last_packet_at_out", "packets_out"])
        self.assertEqual(ProcessSession.stats(session), self.worker_session(session).stats())
        self.assertEqual(ProcessSession.stats(quiet), self.worker_session(quiet).stats())

    def test_report_sends_everything(self) -> None:
        """The report command (Warden's flush) carries every counter of every session."""
        session = self.call()
        self.clock.advance(1.0)
        worker = self.spawner.current.worker
        reports: list[dict[str, Any]] = []
        send = worker.send
        worker.send = lambda message: (reports.append(message), send(message))
        self.relay.flush_metrics()
        self.assertEqual(
            reports[-1]["sessions"], {str(session.number): self.worker_session(session).stats()}
        )

    def test_packet_metrics_forwarded_once(self) -> None:
        """The process's counter totals reach Warden's metrics as increments."""
        before = test_relay.value(metrics.PACKETS_RELAYED)
        dropped = test_relay.value(metrics.DROPPED["spoofed"])
        protocol = self.spawner.current.protocol
        for total in (3, 3, 5, "x", 4):
            protocol.outReceived(
                frame(
                    {
                        "op": "stats", "sessions": {},
                        "metrics": {
                            "warden_rtp_packets_relayed_total": total,
                            "warden_rtp_packets_dropped_total/spoofed": 2,
                        },
                    }
                )
            )  # fmt: skip
        self.assertEqual(test_relay.value(metrics.PACKETS_RELAYED) - before, 5)
        self.assertEqual(test_relay.value(metrics.DROPPED["spoofed"]) - dropped, 2)
        # A new process counts from zero again.
        self.spawner.current.signalProcess("KILL")
        self.clock.advance(1.0)
        self.spawner.current.protocol.outReceived(
            frame(
                {"op": "stats", "sessions": {}, "metrics": {"warden_rtp_packets_relayed_total": 2}}
            )
        )
        self.assertEqual(test_relay.value(metrics.PACKETS_RELAYED) - before, 7)

    def test_dtmf_reaches_on_dtmf(self) -> None:
        """An RFC 4733 event in the process calls the mirror's on_dtmf once."""
        session = self.call()
        digits: list[tuple[str, str]] = []
        session.on_dtmf = lambda side, digit: digits.append((side, digit))
        for seq in range(1, 4):
            self.from_caller(session, dtmf(seq, 1000, event=11))
        self.assertEqual(digits, [("a", "#")])

    def test_timeout_reaches_on_timeout(self) -> None:
        """The process's media timeout ends the call in Warden."""
        session = self.call()
        fired: list[bool] = []
        session.on_timeout = lambda: fired.append(True)
        self.clock.advance(61)
        self.assertEqual(fired, [True])
        self.assertTrue(session.timed_out)

    def test_tap_gets_the_audio(self) -> None:
        """A tap set on the mirror hears each relayed packet; removing it stops that."""
        session = self.call()
        heard: list[tuple[Any, ...]] = []
        closed: list[float] = []

        class Tap:
            def rtp(self, *args: Any) -> None:
                heard.append(args)

            def close(self, now: float) -> None:
                closed.append(now)

        session.tap = Tap()
        self.from_caller(session, rtp(1, 160, payload=b"\x01" * 160))
        self.assertEqual(len(heard), 1)
        side, ssrc, timestamp, pt, payload, _ = heard[0]
        self.assertEqual(
            (side, ssrc, timestamp, pt, payload), ("a", 0x11223344, 160, 0, b"\x01" * 160)
        )
        session.tap = None
        self.from_caller(session, rtp(2, 320))
        self.assertEqual(len(heard), 1)
        session.tap = Tap()
        session.release()
        self.assertEqual(len(closed), 1)

    def test_srtp_keys_agree(self) -> None:
        """The process's copy of the session negotiates with Warden's keys."""
        caller = (
            sdp_body(CALLER, 4000, user="caller").replace(b"RTP/AVP", b"RTP/SAVP")
            + b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
            + pack(bytes(range(30))).encode()
            + b"\r\n"
        )
        session = self.allocate()
        session.signalling_encrypted("a", True)
        session.signalling_encrypted("b", True)
        onward = session.offer_from("a", caller)
        self.assertIn(b"a=crypto:", onward)
        worker = self.worker_session(session)
        self.assertEqual(session.srtp_keys(), worker.srtp_keys())
        self.assertTrue(session.srtp_keys()["b"])

    def test_release_releases_in_the_process(self) -> None:
        """Releasing the mirror closes the process's sockets."""
        session = self.call()
        ports = {session.side_a.rtp_port, session.side_b.rtcp_port}
        session.release()
        self.assertFalse(ports & set(self.network.ports))
        self.assertEqual(self.spawner.current.worker.sessions, {})
        self.assertEqual(self.relay.ports_in_use(), 0)


class FinalCountersTests(ProcessRelayMixin, test_relay.RelayTestMixin, SynchronousTestCase):
    """A released session's final counters, for the call record."""

    def released_after_packets(self, stuck: bool = False) -> ProcessSession:
        """A call with 5 packets reported, then 3 more, then released (to a ``stuck`` process)."""
        session = self.call()
        for seq in range(1, 6):
            self.from_caller(session, rtp(seq, 160 * seq))
        self.clock.advance(1.0)
        for seq in range(6, 9):
            self.from_caller(session, rtp(seq, 160 * seq))
        self.assertEqual(ProcessSession.stats(session)["a"]["packets_in"], 5)
        self.spawner.current.stuck = stuck
        session.release()
        return session

    def test_release_answer_carries_final_counters(self) -> None:
        """The process's answer to the release counts every packet."""
        before = test_relay.value(metrics.STALE_RECORDS)
        session = self.released_after_packets()
        final = self.successResultOf(session.final_stats())
        self.assertEqual((final["a"]["packets_in"], final["b"]["packets_out"]), (8, 8))
        self.assertNotIn("counters_stale", final["a"])
        self.assertEqual(final["a"]["direction"], "sendrecv")
        self.assertEqual(test_relay.value(metrics.STALE_RECORDS), before)

    def test_final_counters_wait_for_the_answer(self) -> None:
        """
        No answer from a stuck process: after FINAL_STATS_TIMEOUT (not before)
        the last report, each side marked stale, and the metric counts it.
        """
        before = test_relay.value(metrics.STALE_RECORDS)
        session = self.released_after_packets(stuck=True)
        final = session.final_stats()
        self.clock.advance(FINAL_STATS_TIMEOUT - 0.01)
        self.assertNoResult(final)
        self.clock.advance(0.01)
        stats = self.successResultOf(final)
        self.assertEqual(stats["a"]["packets_in"], 5)
        self.assertTrue(stats["a"]["counters_stale"] and stats["b"]["counters_stale"])
        self.assertEqual(test_relay.value(metrics.STALE_RECORDS), before + 1)
        # A late answer changes nothing.
        self.spawner.current.stuck = False
        self.spawner.current.worker.handle(self.spawner.current.commands[-1])
        self.assertEqual(self.successResultOf(session.final_stats()), stats)

    def test_final_counters_when_the_process_dies(self) -> None:
        """The process dying before its answer: the last report, marked stale, at once."""
        session = self.released_after_packets(stuck=True)
        final = session.final_stats()
        self.assertNoResult(final)
        self.spawner.current.signalProcess("KILL")
        stats = self.successResultOf(final)
        self.assertEqual(stats["a"]["packets_in"], 5)
        self.assertTrue(stats["a"]["counters_stale"])
        # Released while the process is down: at once too.
        self.clock.advance(1.0)
        other = self.call()
        self.spawner.current.signalProcess("KILL")
        other.release()
        self.assertTrue(self.successResultOf(other.final_stats())["b"]["counters_stale"])

    def test_bad_answer_is_stale(self) -> None:
        """An answer to the release that is not counters per side: the last report."""
        session = self.released_after_packets(stuck=True)
        self.spawner.current.protocol.outReceived(
            frame({"op": "released", "id": session.number, "stats": {"a": 1}})
        )
        self.flushLoggedErrors()
        self.assertTrue(self.successResultOf(session.final_stats())["a"]["counters_stale"])

    def test_close_gets_final_counters(self) -> None:
        """Sessions released by close() (at shutdown) still get their final counters."""
        session = self.call()
        for seq in range(1, 4):
            self.from_caller(session, rtp(seq, 160 * seq))
        self.relay.close()
        final = self.successResultOf(session.final_stats())
        self.assertEqual(final["a"]["packets_in"], 3)
        self.assertNotIn("counters_stale", final["a"])


class ProcessLifeTests(SynchronousTestCase):
    """The media process dying, restarting, hanging or talking nonsense."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = FakeNetwork()
        self.relay, self.spawner = process_relay(self.clock, self.network)

    def test_death_hangs_up_and_restarts(self) -> None:
        """Calls' media is lost (on_timeout), the process restarts, new calls work."""
        session = self.successResultOf(self.relay.allocate("call-1"))
        fired: list[bool] = []
        session.on_timeout = lambda: fired.append(True)
        self.spawner.current.stuck = True
        waiting = self.relay.allocate("call-2")
        self.spawner.current.signalProcess("KILL")
        self.assertEqual(fired, [True])
        self.failureResultOf(waiting, MediaError)
        self.failureResultOf(self.relay.allocate("call-3"), MediaError)  # down: 503
        self.assertEqual(len(self.spawner.processes), 1)
        self.clock.advance(1.0)
        self.assertEqual(len(self.spawner.processes), 2)
        self.assertEqual(self.spawner.current.commands[0]["op"], "configure")
        session.release()  # the dead call's release is harmless
        fresh = self.successResultOf(self.relay.allocate("call-4"))
        self.assertIsInstance(fresh, ProcessSession)
        self.assertEqual(self.relay.sessions(), [fresh])
        self.assertEqual(self.relay.restarts, 1)

    def test_restart_backs_off(self) -> None:
        """A process that keeps dying at once is restarted less and less often."""
        self.spawner.current.signalProcess("KILL")
        self.clock.advance(1.0)
        self.spawner.current.signalProcess("KILL")
        self.clock.advance(1.0)
        self.assertEqual(len(self.spawner.processes), 2)
        self.clock.advance(1.0)
        self.assertEqual(len(self.spawner.processes), 3)
        self.clock.advance(30)  # lived long enough: the next restart is quick again
        self.spawner.current.signalProcess("KILL")
        self.clock.advance(1.0)
        self.assertEqual(len(self.spawner.processes), 4)

    def test_spawn_failure_retried(self) -> None:
        """A process that cannot be started is tried again later."""
        relay, spawner = self.relay, self.spawner
        spawner.fail = OSError("no python")
        spawner.current.signalProcess("KILL")
        self.clock.advance(1.0)
        self.assertEqual(len(spawner.processes), 1)
        self.failureResultOf(relay.allocate("c"), MediaError)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.clock.advance(2.0)
        self.assertEqual(len(spawner.processes), 2)
        self.successResultOf(relay.allocate("c"))

    def test_allocation_timeout(self) -> None:
        """A process that does not answer fails the allocation; a late answer is released."""
        self.spawner.current.stuck = True
        d = self.relay.allocate("call-1")
        self.clock.advance(ALLOCATE_TIMEOUT)
        self.failureResultOf(d, MediaError)
        self.assertEqual(self.spawner.current.commands[-1], {"op": "release", "id": 1})

    def test_exhausted_range_is_media_error(self) -> None:
        """The process's own MediaError (no port pair) fails the allocation."""
        self.network.refused.update(range(10000, 10100))
        self.failureResultOf(self.relay.allocate("call-1"), MediaError)

    def test_garbage_kills_the_process(self) -> None:
        """A frame that is not a message stops the process (restarted later)."""
        process = self.spawner.current
        process.protocol.outReceived(b"\x00\x00\x00\x02{}")
        self.assertTrue(process.ended)
        self.clock.advance(1.0)
        self.assertEqual(len(self.spawner.processes), 2)

    def test_bad_events_ignored(self) -> None:
        """Malformed events are logged and dropped; the relay goes on."""
        process = self.spawner.current
        for message in (
            {"op": "allocated", "id": "x"},
            {"op": "stats", "sessions": []},
            {"op": "dtmf", "id": 99},
        ):
            process.protocol.outReceived(frame(message))
        self.flushLoggedErrors()
        self.assertFalse(process.ended)
        self.successResultOf(self.relay.allocate("call-1"))

    def test_bad_allocated_answer(self) -> None:
        """An answer naming impossible ports fails the allocation and releases it."""
        process = self.spawner.current
        process.stuck = True
        d = self.relay.allocate("call-1")
        process.protocol.outReceived(
            frame({"op": "allocated", "id": 1, "a": ["x", 0, 1], "b": ["x", 2, 3]})
        )
        self.failureResultOf(d, MediaError)
        self.assertEqual(process.commands[-1], {"op": "release", "id": 1})

    def test_bad_command_reports_lost(self) -> None:
        """A command the process cannot apply ends that call in Warden."""
        session = self.successResultOf(self.relay.allocate("call-1"))
        fired: list[bool] = []
        session.on_timeout = lambda: fired.append(True)
        self.spawner.current.worker.handle({"op": "sdp", "id": session.number, "side": "c"})
        self.flushLoggedErrors()
        self.assertEqual(fired, [True])

    def test_close_stops_the_process(self) -> None:
        """close() releases the calls and closes the process's input; no restart."""
        session = self.successResultOf(self.relay.allocate("call-1"))
        self.relay.close()
        self.assertTrue(session.released)
        self.assertTrue(self.spawner.current.ended)
        self.clock.advance(120)
        self.assertEqual(len(self.spawner.processes), 1)
        self.failureResultOf(self.relay.allocate("call-2"), MediaError)


class BatchedWritesTests(SynchronousTestCase):
    """Signalling notices ride with the next description: fewer writes, same order."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = FakeNetwork()
        self.relay, self.spawner = process_relay(self.clock, self.network)
        self.writes: list[bytes] = []
        process = self.spawner.current
        write = process.write

        def counted(data: bytes) -> None:
            self.writes.append(data)
            write(data)

        process.write = counted  # type: ignore[method-assign]

    def ops(self) -> list[list[str]]:
        return [[m["op"] for m in FrameReader().feed(data)] for data in self.writes]

    def test_signalling_goes_with_the_description(self) -> None:
        """signalling and encrypted are held and written with the SDP, in order."""
        session = self.successResultOf(self.relay.allocate("call-1"))
        session.signalling_from("a", CALLER)
        session.signalling_encrypted("a", True)
        self.assertEqual(self.ops(), [["allocate"]])
        session.offer_from("a", sdp_body(CALLER, 4000))
        self.assertEqual(self.ops(), [["allocate"], ["signalling", "encrypted", "sdp"]])

    def test_nothing_new_is_not_sent(self) -> None:
        """
        A notice that changes nothing in the mirror (so nothing in the process's
        copy, which started the same) is not sent: the same addresses again,
        unencrypted signalling before anything else was said.
        """
        session = self.successResultOf(self.relay.allocate("call-1"))
        session.signalling_encrypted("a", False)
        session.signalling_from("a", CALLER)
        session.offer_from("a", sdp_body(CALLER, 4000))
        session.signalling_from("a", CALLER)
        session.signalling_encrypted("a", False)
        session.answer_from("b", sdp_body("198.51.100.20", 5000))
        self.assertEqual(self.ops(), [["allocate"], ["signalling", "sdp"], ["sdp"]])
        session.signalling_encrypted("a", True)
        session.signalling_from("a", CALLER, "192.0.2.77")
        self.clock.advance(0)
        self.assertEqual(self.ops()[-1], ["encrypted", "signalling"])
        worker_session = self.spawner.current.worker.sessions[session.number]
        self.assertEqual(worker_session._peers["a"].signalling, session._peers["a"].signalling)

    def test_held_until_the_turn_ends(self) -> None:
        """With nothing sent after them, held notices go when the reactor's turn ends."""
        session = self.successResultOf(self.relay.allocate("call-1"))
        session.signalling_from("b", "198.51.100.20")
        self.assertEqual(self.ops(), [["allocate"]])
        self.clock.advance(0)
        self.assertEqual(self.ops(), [["allocate"], ["signalling"]])
        self.clock.advance(0)
        self.assertEqual(len(self.writes), 2)

    def test_dropped_when_the_process_ends(self) -> None:
        """A process that ends with notices held gets none of them; nothing raises."""
        session = self.successResultOf(self.relay.allocate("call-1"))
        session.signalling_from("b", "198.51.100.20")
        self.spawner.current.signalProcess("KILL")
        self.clock.advance(0)
        self.assertEqual(self.ops(), [["allocate"]])


class _PipeWriter:
    """The parts of Twisted's process writer the protocol uses, on a real pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataBuffer: list[bytes] = []
        self.do_writes = 0

    def fileno(self) -> int:
        return self.fd

    def doWrite(self) -> None:  # noqa: N802 (Twisted's name)
        self.do_writes += 1


class _PipeTransport:
    def __init__(self, writer: _PipeWriter) -> None:
        self.pipes = {0: writer}
        self.buffered: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.pipes[0]._tempDataBuffer.append(data)
        self.buffered.append(data)


class DirectPipeWriteTests(SynchronousTestCase):
    """Frames go straight to the pipe while Twisted's writer holds nothing."""

    def setUp(self) -> None:
        self.read_end, write_end = os.pipe()
        fcntl.fcntl(
            write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK
        )
        fcntl.fcntl(
            self.read_end, fcntl.F_SETFL, fcntl.fcntl(self.read_end, fcntl.F_GETFL) | os.O_NONBLOCK
        )
        self.addCleanup(os.close, self.read_end)
        self.addCleanup(os.close, write_end)
        self.writer = _PipeWriter(write_end)
        self.transport = _PipeTransport(self.writer)
        relay, _ = process_relay(Clock(), FakeNetwork())
        self.protocol = MediaProcessProtocol(relay)
        self.protocol.transport = self.transport  # type: ignore[assignment]

    def read_all(self) -> bytes:
        out = b""
        while True:
            try:
                chunk = os.read(self.read_end, 65536)
            except BlockingIOError:
                return out
            out += chunk

    def test_straight_to_the_pipe(self) -> None:
        """A frame is written by the protocol itself: Twisted's writer is not involved."""
        self.protocol.send({"op": "report"})
        self.assertEqual(self.read_all(), frame({"op": "report"}))
        self.assertEqual((self.transport.buffered, self.writer.do_writes), ([], 0))

    def test_full_pipe_left_to_twisted(self) -> None:
        """What the pipe cannot take goes to Twisted's writer, which is told to write."""
        filler = b"x" * 65536
        while True:
            try:
                os.write(self.writer.fd, filler)
            except BlockingIOError:
                break
        self.protocol.send({"op": "report"})
        self.assertEqual(self.transport.buffered, [frame({"op": "report"})])
        self.assertEqual(self.writer.do_writes, 1)

    def test_order_kept_behind_a_buffer(self) -> None:
        """While Twisted's writer holds data, new frames queue behind it, not past it."""
        self.writer._tempDataBuffer.append(b"earlier")
        self.protocol.send({"op": "report"})
        self.assertEqual(self.read_all(), b"")
        self.assertEqual(self.transport.buffered, [frame({"op": "report"})])


class FramingTests(SynchronousTestCase):
    """The control channel's frames."""

    def test_round_trip_in_pieces(self) -> None:
        """Messages split anywhere come out whole, in order."""
        data = frame({"op": "a", "n": 1}) + frame({"op": "b", "sdp": pack(b"\x00\xff")})
        reader = FrameReader()
        out = [m for i in range(len(data)) for m in reader.feed(data[i : i + 1])]
        self.assertEqual([m["op"] for m in out], ["a", "b"])
        self.assertEqual(unpack(out[1]["sdp"]), b"\x00\xff")

    def test_too_long(self) -> None:
        """A length over the limit breaks the channel before the body arrives."""
        with self.assertRaises(ControlError):
            list(FrameReader(max_frame=10).feed(b"\x00\x00\x00\x0b"))

    def test_not_a_message(self) -> None:
        """Not JSON, not an object, no op: ControlError."""
        for body in (b"\xff", b"[1]", b'{"x":1}', b'{"op":1}', b"nan"):
            with self.assertRaises(ControlError):
                list(FrameReader().feed(len(body).to_bytes(4, "big") + body))

    def test_bad_base64(self) -> None:
        """unpack refuses what is not base64 text."""
        for value in ("@@", 5, "é"):
            with self.assertRaises(ControlError):
                unpack(value)


class ConfigureTests(SynchronousTestCase):
    """The media process once configured."""

    def test_collector_calmed_once_configured(self) -> None:
        """What the configured process holds is frozen out of the collector's scans."""
        calmed: list[bool] = []
        worker = MediaWorker(
            Clock(), FakeNetwork().listen_udp, lambda m: None, lambda: calmed.append(True)
        )
        self.assertEqual(calmed, [])
        worker.handle({"op": "configure", "settings": settings()})
        self.assertEqual(calmed, [True])


def process_relays(
    clock: Clock, network: FakeNetwork, processes: int = 2, **kw: Any
) -> tuple[procrelay.ProcessRelays, LoopbackSpawner]:
    """``processes`` loopback media processes, as ``[media] relay_processes`` makes them."""
    spawner = LoopbackSpawner(clock, network.listen_udp)
    config = settings(**kw)
    relays = procrelay.process_relay(clock, spawner, config, policy_of(config), processes)
    assert isinstance(relays, procrelay.ProcessRelays)
    return relays, spawner


class SplitPortsTests(SynchronousTestCase):
    """L{warden.rtp.ports.split_ports}: each media process's slice of the range."""

    def test_even_slices(self) -> None:
        """Slices start on even ports; the last takes what is left."""
        self.assertEqual(split_ports(10000, 20000, 2), [(10000, 14999), (15000, 20000)])
        self.assertEqual(
            split_ports(10000, 10099, 3),
            [(10000, 10031), (10032, 10063), (10064, 10099)],
        )
        self.assertEqual(split_ports(10000, 10099, 1), [(10000, 10099)])

    def test_odd_start(self) -> None:
        """An odd port_min is skipped: RTP ports are even."""
        self.assertEqual(split_ports(10001, 10100, 2), [(10002, 10051), (10052, 10100)])

    def test_too_small(self) -> None:
        """Fewer than four ports for a process, or no process, is a ValueError."""
        for port_min, port_max, count in ((10000, 10006, 2), (10001, 10008, 2), (10000, 10099, 0)):
            self.assertRaises(ValueError, split_ports, port_min, port_max, count)
        self.assertEqual(split_ports(10000, 10007, 2), [(10000, 10003), (10004, 10007)])


class ProcessRelaysConformanceTests(MediaRelayConformanceMixin, TestCase):
    """ProcessRelays (two media processes) against the IMediaRelay/IMediaSession suite."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = FakeNetwork()

    def make_relay(self, port_range: tuple[int, int] = (10000, 10099)) -> procrelay.ProcessRelays:
        low, high = port_range
        if high - low + 1 >= 8:
            relays, _ = process_relays(self.clock, self.network, port_min=low, port_max=high)
            return relays
        # Too few ports to split (the exhaustion test): the second process's
        # slice is taken by another program, so every call falls back to the first.
        relays, _ = process_relays(self.clock, self.network, port_min=low, port_max=high + 4)
        self.network.refused.update(range(high + 1, high + 5))
        return relays


class ProcessRelaysTests(SynchronousTestCase):
    """Calls spread over several media processes; each lives and dies on its own."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = FakeNetwork()
        self.relays, self.spawner = process_relays(self.clock, self.network)

    def allocate(self, call_id: str) -> ProcessSession:
        session = self.successResultOf(self.relays.allocate(call_id))
        assert isinstance(session, ProcessSession)
        return session

    def test_one_process_each_with_its_ports(self) -> None:
        """Each process is configured with its own slice of the range."""
        self.assertEqual(len(self.spawner.processes), 2)
        configured = [p.commands[0]["settings"] for p in self.spawner.processes]
        self.assertEqual(
            [(c["port_min"], c["port_max"]) for c in configured], [(10000, 10049), (10050, 10099)]
        )

    def test_calls_go_to_the_least_busy(self) -> None:
        """New calls alternate while the processes are even, then fill the emptier one."""
        first, second = self.relays.relays
        calls = [self.allocate(f"call-{i}") for i in range(4)]
        self.assertEqual((first.load, second.load), (2, 2))
        for session in calls:
            port = session.side_a.rtp_port
            self.assertTrue(10000 <= port <= 10099)
        self.assertEqual(
            sorted(s.side_a.rtp_port < 10050 for s in calls), [False, False, True, True]
        )
        for session in first.sessions():
            session.release()
        self.allocate("call-4")
        self.allocate("call-5")
        self.assertEqual((first.load, second.load), (2, 2))
        self.assertEqual(len(self.relays.sessions()), 4)
        self.assertEqual(self.relays.ports_in_use(), 16)

    def test_full_process_falls_back(self) -> None:
        """A process that cannot bind (its ports taken) hands the call to the next."""
        self.network.refused.update(range(10000, 10050))
        sessions = [self.allocate(f"call-{i}") for i in range(3)]
        self.assertTrue(all(s.side_a.rtp_port >= 10050 for s in sessions))

    def test_failure_counted_once_per_call(self) -> None:
        """A process that does not answer passes the call on, uncounted; the last try counts."""
        before = test_relay.value(metrics.ALLOCATION_FAILURES)
        self.spawner.processes[0].stuck = True
        d = self.relays.allocate("call-1")
        self.clock.advance(ALLOCATE_TIMEOUT)
        session = self.successResultOf(d)
        self.assertIn(session, self.relays.relays[1].sessions())
        self.assertEqual(test_relay.value(metrics.ALLOCATION_FAILURES), before)
        self.spawner.processes[1].stuck = True
        d = self.relays.allocate("call-2")
        self.clock.advance(ALLOCATE_TIMEOUT)
        self.assertNoResult(d)
        self.clock.advance(ALLOCATE_TIMEOUT)
        self.failureResultOf(d, MediaError)
        self.assertEqual(test_relay.value(metrics.ALLOCATION_FAILURES), before + 1)

    def test_every_process_full_is_media_error(self) -> None:
        """With no port anywhere, the call fails with MediaError (503)."""
        self.network.refused.update(range(10000, 10100))
        self.failureResultOf(self.relays.allocate("call-1"), MediaError)

    def test_dead_process_hangs_up_only_its_calls(self) -> None:
        """A dead process's calls end; the other's go on; it is passed over until restarted."""
        first, second = self.relays.relays
        a, b = self.allocate("call-a"), self.allocate("call-b")
        ended: list[str] = []
        a.on_timeout = lambda: (ended.append("a"), a.release())  # the call hangs up
        b.on_timeout = lambda: (ended.append("b"), b.release())
        dying = self.spawner.processes[0]
        dying.signalProcess("KILL")
        self.assertEqual(ended, ["a"])
        self.assertFalse(first.running)
        calls = [self.allocate(f"call-{i}") for i in range(3)]
        self.assertEqual(second.load, 4)
        self.assertEqual(self.relays.sessions(), [b, *calls])
        self.clock.advance(1.0)
        self.assertEqual((len(self.spawner.processes), self.relays.restarts), (3, 1))
        self.assertTrue(first.running)
        self.allocate("call-new")
        self.assertEqual(first.load, 1)

    def test_none_running_is_media_error(self) -> None:
        """With every process down, allocation fails at once with MediaError."""
        for process in list(self.spawner.processes):
            process.signalProcess("KILL")
        self.failureResultOf(self.relays.allocate("call-1"), MediaError)

    def test_gauges_count_every_process(self) -> None:
        """The sessions and ports gauges show the total of all the processes."""
        sessions = [self.allocate(f"call-{i}") for i in range(3)]
        self.assertEqual(test_relay.value(metrics.SESSIONS), 3)
        self.assertEqual(test_relay.value(metrics.PORTS_IN_USE), 12)
        for process in self.spawner.processes:
            process.stuck = True  # its own relay's gauges (this process's here) stay as they are
        sessions[0].release()
        self.assertEqual(test_relay.value(metrics.SESSIONS), 2)
        self.assertEqual(test_relay.value(metrics.PORTS_IN_USE), 8)

    def test_flush_and_close_reach_every_process(self) -> None:
        """flush_metrics asks every process; close stops them all and hangs up."""
        self.allocate("call-1")
        self.allocate("call-2")
        self.relays.flush_metrics()
        for process in self.spawner.processes:
            self.assertIn("report", [c["op"] for c in process.commands])
        self.relays.close()
        self.assertEqual(self.relays.sessions(), [])
        self.assertTrue(all(p.ended for p in self.spawner.processes))
        self.failureResultOf(self.relays.allocate("call-3"), MediaError)

    def test_one_process_is_a_plain_process_relay(self) -> None:
        """relay_processes = 1 (the default) is the one ProcessRelay, with the whole range."""
        spawner = LoopbackSpawner(self.clock, self.network.listen_udp)
        relay = procrelay.process_relay(self.clock, spawner, settings(), MediaPolicy())
        self.assertIsInstance(relay, ProcessRelay)
        self.assertEqual(spawner.current.commands[0]["settings"]["port_max"], 10099)
