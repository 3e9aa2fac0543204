"""
Tests for how Warden reaches a registered phone (warden.sip.addressing):
NAT detection (``behind_nat``, shared with the cluster hop), the Contact or
the REGISTER's source for UDP, the connection for TCP.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_registrar import RegistrarTestCase
from warden.model import Binding
from warden.sip.addressing import Addressing, behind_nat, contact_address, sent_by_text
from warden.sip.flow import Flow

PUBLIC = "93.184.216.34"


def binding(received: str, contact: str, sent_by: str = "", node_id: str = "") -> Binding:
    """A binding of 1001 with the given source, Contact and Via sent-by."""
    return Binding(
        aor="1001", contact=contact, key="k", expires_at=2e9, received=received,
        sent_by=sent_by, node_id=node_id,
    )  # fmt: skip


class BehindNatTests(SynchronousTestCase):
    """``behind_nat``: the rule of ``[sip] nat``."""

    def test_registers_from_one_port_listens_on_another(self) -> None:
        """Source and Via agree, the Contact names another port: no NAT."""
        b = binding("udp:127.0.0.1:40000", "sip:1001@127.0.0.1:40002", "127.0.0.1:40000")
        self.assertFalse(behind_nat(b))

    def test_via_differs_from_source(self) -> None:
        """A phone that put its private address in Via is behind a NAT."""
        b = binding("udp:203.0.113.9:61000", "sip:1001@10.0.0.5:5060", "10.0.0.5:5060")
        self.assertTrue(behind_nat(b))

    def test_public_contact_but_nat_port(self) -> None:
        """A phone that learned its public address (STUN) but not the NAT's port."""
        b = binding(f"udp:{PUBLIC}:61000", f"sip:1001@{PUBLIC}:5060", f"{PUBLIC}:5060")
        self.assertTrue(behind_nat(b))

    def test_private_contact_public_source(self) -> None:
        """Via matching the source (an ALG rewrote it) but a private Contact: NAT."""
        b = binding(f"udp:{PUBLIC}:5060", "sip:1001@192.168.1.20:5060", f"{PUBLIC}:5060")
        self.assertTrue(behind_nat(b))

    def test_private_everywhere(self) -> None:
        """A phone on the same private network as Warden is not behind a NAT."""
        b = binding("udp:192.168.1.20:5060", "sip:1001@192.168.1.21:5070", "192.168.1.20:5060")
        self.assertFalse(behind_nat(b))

    def test_via_default_port(self) -> None:
        """A Via without a port means 5060 (RFC 3261 §18.2.2)."""
        self.assertEqual(sent_by_text("UDP", "192.0.2.5", None), "192.0.2.5:5060")
        self.assertEqual(sent_by_text("TLS", "2001:db8::1", None), "[2001:db8::1]:5061")
        b = binding(
            "udp:192.0.2.5:5060", "sip:1001@192.0.2.5:5080", sent_by_text("UDP", "192.0.2.5", None)
        )
        self.assertFalse(behind_nat(b))

    def test_older_binding(self) -> None:
        """A binding stored without its Via keeps the old rule: source vs Contact."""
        self.assertTrue(behind_nat(binding("udp:127.0.0.1:40000", "sip:1001@127.0.0.1:40002")))
        self.assertFalse(behind_nat(binding("udp:127.0.0.1:40000", "sip:1001@127.0.0.1:40000")))

    def test_modes(self) -> None:
        """'always' sends to the source, 'never' to the Contact, whatever the evidence."""
        plain = binding("udp:127.0.0.1:40000", "sip:1001@127.0.0.1:40002", "127.0.0.1:40000")
        natted = binding("udp:203.0.113.9:61000", "sip:1001@10.0.0.5:5060", "10.0.0.5:5060")
        self.assertTrue(behind_nat(plain, "always"))
        self.assertFalse(behind_nat(natted, "never"))

    def test_contact_warden_cannot_use(self) -> None:
        """A host name, sips:, a TCP Contact or an RFC 5626 ``;ob`` Contact is
        reached at the source in every mode."""
        for contact in (
            "sip:1001@phone.example.com:5060",
            "sips:1001@192.0.2.5:5061",
            "sip:1001@192.0.2.5:5080;transport=tcp",
            "sip:1001@192.0.2.5:5080;ob",
            "not a uri",
        ):
            b = binding("udp:192.0.2.5:5060", contact, "192.0.2.5:5060")
            self.assertIsNone(contact_address(b), contact)
            self.assertTrue(behind_nat(b, "never"), contact)


class FlowForTests(SynchronousTestCase):
    """``Addressing.flow_for``: where requests for a binding go."""

    def addressing(self, nat: str = "auto") -> Addressing:
        """Addressing on 127.0.0.1:5060 with one open TCP connection."""
        connections = {("127.0.0.1", 45000): object()}
        return Addressing("127.0.0.1", lambda: 5060, lambda h, p: connections.get((h, p)), nat)

    def test_contact_when_no_nat(self) -> None:
        """A phone registered from port 40000 listening on 40002 is called on 40002."""
        b = binding("udp:127.0.0.1:40000", "sip:1001@127.0.0.1:40002", "127.0.0.1:40000")
        self.assertEqual(self.addressing().flow_for(b), Flow("udp", "127.0.0.1", 40002))
        self.assertEqual(self.addressing("always").flow_for(b), Flow("udp", "127.0.0.1", 40000))

    def test_source_behind_nat(self) -> None:
        """A NATed phone is called at its NAT mapping."""
        b = binding("udp:203.0.113.9:61000", "sip:1001@10.0.0.5:5060", "10.0.0.5:5060")
        self.assertEqual(self.addressing().flow_for(b), Flow("udp", "203.0.113.9", 61000))
        self.assertEqual(self.addressing("never").flow_for(b), Flow("udp", "10.0.0.5", 5060))

    def test_tcp_keeps_its_connection(self) -> None:
        """TCP phones are reached on their connection, never at the Contact."""
        b = binding(
            "tcp:127.0.0.1:45000", "sip:1001@127.0.0.1:5070;transport=tcp", "127.0.0.1:5070"
        )
        flow = self.addressing("never").flow_for(b)
        assert flow is not None
        self.assertEqual((flow.transport, flow.port), ("tcp", 45000))
        self.assertIsNotNone(flow.connection)


class RegistrarRecordsViaTests(RegistrarTestCase):
    """The registrar keeps the REGISTER's top Via sent-by with each binding."""

    def test_sent_by_recorded(self) -> None:
        """A binding remembers ``host:port`` of the REGISTER's top Via."""
        self.assertEqual(self.authed().status, 200)
        (stored,) = self.successResultOf(self.location.bindings_for("1001", self.clock.seconds()))
        self.assertEqual(stored.sent_by, "192.0.2.10:5062")


class HopAgreesTests(SynchronousTestCase):
    """The cluster hop decides "behind a NAT" with the same function and mode."""

    def test_hop_follows_behind_nat(self) -> None:
        """Another node's UDP phone that registers from one port and listens on
        another is dialled directly (not through its node); behind a NAT, or with
        nat = "always", it goes through the node that holds its flow."""
        from tests.sip.test_hop import Wire, make_hop

        hop = make_hop(Wire(), "b")
        plain = binding("udp:127.0.0.1:40000", "sip:1001@127.0.0.1:40002", "127.0.0.1:40000", "a")
        natted = binding("udp:203.0.113.9:61000", "sip:1001@10.0.0.5:5060", "10.0.0.5:5060", "a")
        self.assertFalse(hop.wanted(plain))
        self.assertTrue(hop.wanted(natted))
        hop.nat = "always"
        self.assertTrue(hop.wanted(plain))
