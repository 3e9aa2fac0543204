"""
Call pickup (warden.sip.pickup, ``*8`` of the callfeatures plugin): a member
of a pickup group answers a call ringing at another member; the ringing
phone is cancelled, both sides get their 200, the picker is the callee, and
the call runs and ends as any other. ``[[pickupgroups]]`` parsing.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_b2bua import ALICE, BOB
from warden.errors import ConfigError
from warden.features.callfeatures import CallFeaturesPlugin
from warden.features.ringgroups import parse_pickupgroups
from warden.sip.hooks import CallHooks
from warden.sip.message import Request, Response
from warden.store.credentials import make_extension
from warden.testing.callstack import CallStack, Phone
from warden.testing.features import MemoryCallFeatureStore
from warden.testing.sipstack import REALM

CAROL = ("192.0.2.14", 5066)
DAVE = ("192.0.2.15", 5068)


class PickupGroupConfigTests(SynchronousTestCase):
    """``[[pickupgroups]]``."""

    def test_peers(self) -> None:
        """A member's peers are the other members of every group it is in."""
        groups = parse_pickupgroups([
            {"name": "office", "members": ["1001", "1002"]},
            {"name": "desk", "members": ["1002", "1003"]},
        ])  # fmt: skip
        self.assertEqual(groups.peers_of("1002"), {"1001", "1003"})
        self.assertEqual(groups.peers_of("1004"), frozenset())

    def test_refused(self) -> None:
        """Bad values are refused naming the key."""
        cases = [
            ([{"name": "x", "members": ["1001"]}], "pickupgroups[0].members"),
            ([{"name": "x", "members": ["1001", "1001"]}], "pickupgroups[0].members"),
            ([{"name": "X!", "members": ["1001", "1002"]}], "pickupgroups[0].name"),
            ([{"name": "x", "members": ["1", "2"], "colour": 1}], "pickupgroups[0].colour"),
            ([{"name": "x", "members": ["1", "2"]}, {"name": "x", "members": ["3", "4"]}],
             "pickupgroups[1].name"),
        ]  # fmt: skip
        for value, path in cases:
            with self.assertRaises(ConfigError) as caught:
                parse_pickupgroups(value)
            self.assertEqual(caught.exception.path, path)


class PickupTests(SynchronousTestCase):
    """Bob (1002) and Carol (1003) share a pickup group; Alice (1001) calls Bob."""

    def setUp(self) -> None:
        self.plugin = CallFeaturesPlugin()
        self.plugin.use_store(MemoryCallFeatureStore())
        self.plugin.pickup_groups = parse_pickupgroups(
            [{"name": "office", "members": ["1002", "1003"]}]
        )
        stack = CallStack(hooks=CallHooks([self.plugin]))
        self.plugin.calls = lambda: stack.calls.calls
        stack.register("1002", BOB)
        stack.register("1003", CAROL)
        stack.register("1004", DAVE)
        stack.successResultOf_(
            stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.stack = stack
        self.alice = Phone(stack, "1001", ALICE)
        self.bob = Phone(stack, "1002", BOB)
        self.carol = Phone(stack, "1003", CAROL)
        self.dave = Phone(stack, "1004", DAVE)

    def ringing(self) -> Request:
        """Alice's call rings Bob's phone (180)."""
        invite, sent = self.alice.call("1002")
        bob_invite = next(m for m, a in sent if tuple(a) == BOB and isinstance(m, Request))
        self.stack.deliver(self.bob.answer(bob_invite, 180), BOB)
        return invite

    def final(self, sent: list[tuple[Any, Any]], to: tuple[str, int]) -> Response:
        found = [m for m, a in sent if tuple(a) == to and isinstance(m, Response)
                 and m.status >= 200]  # fmt: skip
        self.assertEqual(len(found), 1, sent)
        return found[0]

    def test_pick_up(self) -> None:
        """
        Carol's *8 cancels Bob's phone, answers Carol with the caller's offer
        through the relay and Alice with Carol's; Carol is the callee; a BYE
        from Alice reaches Carol.
        """
        invite = self.ringing()
        pick, sent = self.carol.call("*8")
        self.assertIn("CANCEL", [m.method for m, a in sent if tuple(a) == BOB
                                 and isinstance(m, Request)])  # fmt: skip
        carol_ok = self.final(sent, CAROL)
        alice_ok = self.final(sent, ALICE)
        self.assertEqual((carol_ok.status, alice_ok.status), (200, 200))
        self.assertIn(b"m=audio", carol_ok.body)
        self.assertIn(b"m=audio", alice_ok.body)
        for ok in (carol_ok, alice_ok):  # media through the relay
            self.assertIn(b"c=IN IP4 192.0.2.1\r\n", ok.body)
        self.stack.deliver(self.carol.ack_for(pick, carol_ok), CAROL)
        self.stack.deliver(self.alice.ack_for(invite, alice_ok), ALICE)
        call = next(iter(self.stack.calls.calls.values()))
        self.assertEqual((call.callee.number, call.pending), ("1003", {}))
        sent = self.stack.deliver(self.alice.in_dialog("BYE", invite, alice_ok, uac=True), ALICE)
        bye = next(m for m, a in sent if tuple(a) == CAROL and isinstance(m, Request))
        self.assertEqual((bye.method, bye.call_id), ("BYE", pick.call_id))
        records = self.successResultOf(self.stack.records.list())
        self.assertEqual((records[0].callee, records[0].disposition), ("1003", "ANSWERED"))

    def test_nothing_ringing(self) -> None:
        """*8 with no call ringing in the group: 480 No Call To Pick Up."""
        _, sent = self.carol.call("*8")
        response = self.final(sent, CAROL)
        self.assertEqual((response.status, response.reason), (480, "No Call To Pick Up"))

    def test_not_in_the_group(self) -> None:
        """Dave, in no group with Bob, cannot pick up Bob's call."""
        self.ringing()
        _, sent = self.dave.call("*8")
        self.assertEqual(self.final(sent, DAVE).status, 480)
        self.assertNotIn(ALICE, [tuple(a) for m, a in sent])

    def test_own_call_not_picked(self) -> None:
        """A member cannot pick up the call it placed itself."""
        _, sent = self.bob.call("1003")
        carol_invite = next(m for m, a in sent if tuple(a) == CAROL and isinstance(m, Request))
        self.stack.deliver(self.carol.answer(carol_invite, 180), CAROL)
        self.bob.call_id = "second@bob"
        _, sent = self.bob.call("*8")
        self.assertEqual(self.final(sent, BOB).status, 480)
