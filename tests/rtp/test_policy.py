"""
Tests for the relay's media rules (warden.rtp.policy, ADR 0013) and how a
session applies them: allowed sources, consecutive packets before a (re)latch,
and refused SDP destinations, each way the ``[media]`` keys can be set.
"""

from __future__ import annotations

import ipaddress

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests.rtp.test_relay import RelayTestMixin
from warden.rtp import metrics
from warden.rtp.policy import MediaPolicy, address_class
from warden.rtp.session import MediaSession
from warden.testing.rtpnet import rtp, sdp_body

PHONE = "192.0.2.10"
NAT = ("203.0.113.50", 31000)
STRANGER = ("198.51.100.66", 4000)


class AddressClassTests(SynchronousTestCase):
    """address_class sorts addresses into the classes the destination rule compares."""

    def test_classes(self) -> None:
        """Each special range has its class; everything else is public."""
        cases = {
            "0.0.0.0": "unspecified",
            "0.1.2.3": "unspecified",
            "::": "unspecified",
            "224.0.0.1": "multicast",
            "ff02::1": "multicast",
            "255.255.255.255": "broadcast",
            "127.0.0.3": "loopback",
            "::1": "loopback",
            "::ffff:127.0.0.1": "loopback",
            "169.254.169.254": "link-local",
            "fe80::1": "link-local",
            "10.1.2.3": "private",
            "172.31.0.1": "private",
            "192.168.1.10": "private",
            "100.64.0.1": "private",
            "fd00::2": "private",
            "240.0.0.1": "reserved",
            "192.0.2.10": "public",
            "8.8.8.8": "public",
            "2001:db8::1": "public",
        }
        for text, kind in cases.items():
            ip = ipaddress.ip_address(text)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            self.assertEqual((text, address_class(ip)), (text, kind))


class DestinationRuleTests(SynchronousTestCase):
    """MediaPolicy.destination_allowed with "same-class" (default) and "any"."""

    def test_public_phone(self) -> None:
        """A phone signalling from a public address may only name public addresses."""
        policy = MediaPolicy(own_addresses=["192.0.2.1"])
        for host in ("198.51.100.20", "2001:db8::5"):
            self.assertTrue(policy.destination_allowed(host, PHONE), host)
        for host in ("127.0.0.1", "::1", "169.254.169.254", "10.0.0.5", "192.168.1.10",
                     "224.0.0.1", "255.255.255.255", "0.0.0.0", "240.0.0.1", "192.0.2.1",
                     "pbx.example.com"):  # fmt: skip
            self.assertFalse(policy.destination_allowed(host, PHONE), host)

    def test_same_class(self) -> None:
        """Loopback, link-local and private destinations for phones of that class."""
        policy = MediaPolicy()
        self.assertTrue(policy.destination_allowed("127.0.0.1", "127.0.0.2"))
        self.assertTrue(policy.destination_allowed("::ffff:127.0.0.1", "127.0.0.1"))
        self.assertTrue(policy.destination_allowed("192.168.1.10", "10.0.0.7"))
        self.assertTrue(policy.destination_allowed("fe80::2", "fe80::1"))
        self.assertTrue(policy.destination_allowed("198.51.100.20", "10.0.0.7"))
        self.assertFalse(policy.destination_allowed("127.0.0.1", "10.0.0.7"))
        self.assertFalse(policy.destination_allowed("10.0.0.7", []))
        # Forked phones ringing: allowed when any of them is of the class.
        self.assertTrue(policy.destination_allowed("10.0.0.7", ["192.0.2.10", "10.0.0.9"]))
        self.assertFalse(policy.destination_allowed("224.0.0.1", "224.0.0.1"))

    def test_own_addresses(self) -> None:
        """The relay host's addresses only for a phone signalling from exactly there."""
        policy = MediaPolicy(own_addresses=["10.0.0.5", "127.0.0.1", "0.0.0.0", "bad"])
        self.assertFalse(policy.destination_allowed("10.0.0.5", "10.0.0.7"))
        self.assertFalse(policy.destination_allowed("127.0.0.1", "127.0.0.2"))
        self.assertTrue(policy.destination_allowed("10.0.0.5", "10.0.0.5"))
        self.assertTrue(policy.destination_allowed("127.0.0.1", "127.0.0.1"))

    def test_any(self) -> None:
        """destinations = "any" accepts every address, as before the rule."""
        policy = MediaPolicy(destinations="any", own_addresses=["192.0.2.1"])
        for host in ("127.0.0.1", "10.0.0.5", "192.0.2.1", "169.254.169.254"):
            self.assertTrue(policy.destination_allowed(host, PHONE), host)

    def test_latch_hosts(self) -> None:
        """The signalling source and the declared addresses, canonical; None for "any"."""
        policy = MediaPolicy()
        self.assertEqual(
            policy.latch_hosts(["::ffff:192.0.2.10"], ["2001:DB8::1", "192.0.2.10"]),
            frozenset({"192.0.2.10", "2001:db8::1"}),
        )
        self.assertEqual(policy.latch_hosts([], []), frozenset())
        self.assertIsNone(MediaPolicy(latch="any").latch_hosts([PHONE], []))

    def test_bad_values(self) -> None:
        """Unknown modes and a packet count below 1 are refused."""
        self.assertRaises(ValueError, MediaPolicy, latch="first")
        self.assertRaises(ValueError, MediaPolicy, destinations="public")
        self.assertRaises(ValueError, MediaPolicy, latch_packets=0)


class SessionRuleTests(RelayTestMixin, SynchronousTestCase):
    """How a session applies the rules to packets."""

    def nat_call(self, policy: MediaPolicy | None = None) -> MediaSession:
        """A call whose caller signals from NAT's address and names a private one."""
        if policy is not None:
            self.relay = self.make_relay(policy=policy)
        session = self.allocate()
        session.signalling_from("a", NAT[0])
        session.offer_from("a", sdp_body("192.168.1.10", 4000, user="caller"))
        session.answer_from("b", sdp_body("198.51.100.20", 5000, user="callee"))
        return session

    def test_run_must_be_consistent(self) -> None:
        """
        A change of SSRC, a sequence number that does not advance by 1-16, or a
        packet from the latched source in between restarts the count.
        """
        session = self.nat_call()
        self.from_caller(session, rtp(1), source=NAT)
        self.from_caller(session, rtp(2, ssrc=9), source=NAT)  # other SSRC
        self.from_caller(session, rtp(3, ssrc=9), source=NAT)
        self.from_caller(session, rtp(40, ssrc=9), source=NAT)  # jumped
        self.from_caller(session, rtp(41, ssrc=9), source=NAT)
        self.from_caller(session, rtp(41, ssrc=9), source=NAT)  # repeated
        self.assertIsNone(session.stats()["a"]["latched"])
        self.assertEqual(session.stats()["a"]["dropped_pending"], 6)
        self.from_caller(session, rtp(42, ssrc=9), source=NAT)
        self.from_caller(session, rtp(58, ssrc=9), source=NAT)  # a gap of 16 is fine
        self.assertEqual(session.stats()["a"]["latched"], "203.0.113.50:31000")
        # Latched: another port of the NAT only takes over once the latched
        # source stops; its packets in between break the other's run.
        other = (NAT[0], 31002)
        self.stream(session, "a", 100, 2, other, ssrc=7)
        self.from_caller(session, rtp(59, ssrc=9), source=NAT)
        self.stream(session, "a", 102, 2, other, ssrc=7)
        self.assertEqual(session.stats()["a"]["latched"], "203.0.113.50:31000")
        self.stream(session, "a", 104, 1, other, ssrc=7)
        self.assertEqual(session.stats()["a"]["latched"], "203.0.113.50:31002")
        self.assertEqual(session.stats()["a"]["packets_in"], 3)

    def test_stranger_never_latches(self) -> None:
        """With latch = "signalling", any number of packets from elsewhere are spoofed."""
        session = self.nat_call()
        before = self.exported(metrics.DROPPED["spoofed"])
        self.stream(session, "a", 1, 20, STRANGER)
        self.from_callee(session, rtp(1, ssrc=2))
        self.assertEqual(self.to_caller(session) + self.to_callee(session), [])
        self.assertEqual(session.stats()["a"]["dropped_spoofed"], 20)
        self.assertEqual(self.exported(metrics.DROPPED["spoofed"]), before + 20)

    def test_latch_any(self) -> None:
        """With latch = "any" a stranger may latch, but only after a consistent run."""
        session = self.nat_call(MediaPolicy(latch="any"))
        self.stream(session, "a", 1, 2, STRANGER)
        self.assertIsNone(session.stats()["a"]["latched"])
        self.stream(session, "a", 3, 1, STRANGER)
        self.assertEqual(session.stats()["a"]["latched"], "198.51.100.66:4000")

    def test_latch_packets_one(self) -> None:
        """latch_packets = 1 follows an allowed source at its first packet."""
        session = self.nat_call(MediaPolicy(latch_packets=1))
        self.from_caller(session, rtp(1), source=NAT)
        self.assertEqual(session.stats()["a"]["latched"], "203.0.113.50:31000")

    def test_new_sdp_remembers_source(self) -> None:
        """
        After a re-INVITE (new o= version) the NAT source is still where media
        goes (the SDP names no usable address) and relatches at its first packet.
        """
        session = self.nat_call()
        self.stream(session, "a", 1, 3, NAT)
        session.offer_from("a", sdp_body("192.168.1.10", 4000, version=2, user="caller"))
        self.assertIsNone(session.stats()["a"]["latched"])
        self.from_callee(session, rtp(1, ssrc=2))
        self.assertEqual(self.to_caller(session), [(rtp(1, ssrc=2), NAT)])
        self.from_caller(session, rtp(4, 640), source=NAT)
        self.assertEqual(session.stats()["a"]["latched"], "203.0.113.50:31000")

    def test_new_signalling_source_unlatches(self) -> None:
        """Another phone taking the side (transfer) drops a latch it no longer allows."""
        session = self.nat_call()
        self.stream(session, "a", 1, 3, NAT)
        session.signalling_from("a", "198.51.100.99")
        self.assertIsNone(session.stats()["a"]["latched"])
        self.from_caller(session, rtp(4, 640), source=NAT)
        self.assertEqual(session.stats()["a"]["dropped_spoofed"], 1)

    def test_destinations_any(self) -> None:
        """With destinations = "any" the private SDP address is used until latched."""
        session = self.nat_call(MediaPolicy(destinations="any"))
        self.from_callee(session, rtp(1, ssrc=2))
        self.assertEqual(self.to_caller(session), [(rtp(1, ssrc=2), ("192.168.1.10", 4000))])

    def test_refused_destination_counted(self) -> None:
        """A refused SDP address is counted and logged (with the call, address and source)."""
        events: list[dict[str, object]] = []
        self.patch(MediaSession, "log", Logger(observer=events.append))
        before = value_of(metrics.REFUSED_DESTINATIONS)
        session = self.nat_call()
        self.assertEqual(value_of(metrics.REFUSED_DESTINATIONS), before + 2)  # RTP and RTCP
        self.assertEqual(
            [(e["call_id"], e["address"], e["source"]) for e in events],
            [("call-1", "192.168.1.10", NAT[0])],
        )
        self.from_callee(session, rtp(1, ssrc=2))
        self.assertEqual(session.stats()["a"]["dropped_no_destination"], 1)

    def test_bad_side(self) -> None:
        """signalling_from refuses a side other than a or b."""
        session = self.allocate()
        self.assertRaises(ValueError, session.signalling_from, "c", PHONE)


def value_of(metric: object) -> float:
    """A prometheus counter's current value."""
    return float(metric._value.get())  # type: ignore[attr-defined]
