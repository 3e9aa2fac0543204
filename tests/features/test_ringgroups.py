"""
Ring groups (warden.features.ringgroups, warden.sip.groups): ``[[ringgroups]]``
parsing, and calls to a group through the B2BUA: every member at once, one
after another, members that cannot ring skipped, the answering member as the
callee, the timeout destination, and a group named as ``ringgroup:<name>``.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_b2bua import ALICE, BOB
from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.features.callfeatures import CallFeaturesPlugin
from warden.features.ringgroups import RingGroupsConfig, parse_ringgroups
from warden.model import CallRecord
from warden.model.features import CallFeatures
from warden.plugin import discover
from warden.sip.hooks import CallAttempt, CallHookBase, CallHooks
from warden.sip.message import Request, Response
from warden.store.credentials import make_extension
from warden.testing.callstack import CallStack, Phone
from warden.testing.features import MemoryCallFeatureStore
from warden.testing.sipstack import REALM

CAROL = ("192.0.2.14", 5066)
DAVE = ("192.0.2.15", 5068)


def group(**kw: Any) -> dict[str, Any]:
    """A ``[[ringgroups]]`` table."""
    table: dict[str, Any] = {"name": "sales", "number": "600", "members": ["1002", "1003"]}
    table.update(kw)
    return table


class ConfigTests(SynchronousTestCase):
    """``[[ringgroups]]``."""

    def test_defaults_and_lookup(self) -> None:
        """A group parses with its defaults and is found by number and by name."""
        groups = parse_ringgroups([group(), group(name="support", number="601", members=["1004"],
                                                 strategy="hunt", ring_timeout=15,
                                                 timeout_to="voicemail:1004")])  # fmt: skip
        sales = groups.by_number("600")
        assert sales is not None
        self.assertEqual((sales.strategy, sales.ring_timeout, sales.timeout_to),
                         ("simultaneous", 20.0, ""))  # fmt: skip
        self.assertEqual(sales.plan().steps, (("1002", "1003"),))
        support = groups.by_name("support")
        assert support is not None
        self.assertEqual(support.plan().steps, (("1004",),))
        self.assertIsNone(groups.by_number("602"))

    def test_in_the_configuration_file(self) -> None:
        """``[[ringgroups]]`` is the callfeatures plugin's array-of-tables section."""
        config = parse_config_text(
            '[[ringgroups]]\nname = "sales"\nnumber = "600"\nmembers = ["1002"]\n',
            "warden.toml", discover(),
        )  # fmt: skip
        parsed = config.plugin_sections["ringgroups"]
        assert isinstance(parsed, RingGroupsConfig)
        self.assertEqual(parsed.groups[0].members, ("1002",))
        with self.assertRaises(ConfigError) as caught:
            parse_config_text('[ringgroups]\nname = "x"\n', "warden.toml", discover())
        self.assertIn("array of tables", str(caught.exception))

    def test_refused(self) -> None:
        """Each bad value is refused naming the group's key."""
        cases = [
            ([group(colour="red")], "ringgroups[0].colour"),
            ([{"name": "sales", "number": "600"}], "ringgroups[0].members"),
            ([group(name="Sales!")], "ringgroups[0].name"),
            ([group(number="6a")], "ringgroups[0].number"),
            ([group(number=600)], "ringgroups[0].number"),
            ([group(members=[])], "ringgroups[0].members"),
            ([group(members=["1002", "1002"])], "ringgroups[0].members"),
            ([group(members=["1" * 33])], "ringgroups[0].members"),
            ([group(strategy="random")], "ringgroups[0].strategy"),
            ([group(ring_timeout=0)], "ringgroups[0].ring_timeout"),
            ([group(ring_timeout=True)], "ringgroups[0].ring_timeout"),
            ([group(strategy="hunt", ring_timeout=60, members=["1", "2", "3"])],
             "ringgroups[0].ring_timeout"),
            ([group(timeout_to="x y")], "ringgroups[0].timeout_to"),
            ([group(), group(number="601")], "ringgroups[1].name"),
            ([group(), group(name="other")], "ringgroups[1].number"),
            (["nope"], "ringgroups[0]"),
        ]  # fmt: skip
        for value, path in cases:
            with self.assertRaises(ConfigError, msg=path) as caught:
                parse_ringgroups(value)
            self.assertEqual(caught.exception.path, path)


class Earlier(CallHookBase):
    """A hook listed before callfeatures that sends the call to ``ringgroup:sales``."""

    def before_routing(self, attempt: CallAttempt) -> None:
        """Redirect to the group by name."""
        if attempt.dialled == "700":
            attempt.dialled = "ringgroup:sales"


class GroupCallTests(SynchronousTestCase):
    """Alice (1001) calls group 600; Bob (1002), Carol (1003), Dave (1004) are members."""

    def start(self, **kw: Any) -> CallStack:
        self.plugin = CallFeaturesPlugin()
        self.store = MemoryCallFeatureStore()
        self.plugin.use_store(self.store)
        members = kw.pop("members", ["1002", "1003", "1004"])
        self.plugin.groups = parse_ringgroups([group(members=members, **kw)])
        stack = CallStack(hooks=CallHooks([Earlier(), self.plugin]))
        stack.successResultOf_(
            stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.alice = Phone(stack, "1001", ALICE)
        self.phones = {}
        for number, address in (("1002", BOB), ("1003", CAROL), ("1004", DAVE)):
            stack.register(number, address)
            self.phones[address] = Phone(stack, number, address)
        self.stack = stack
        return stack

    def invites(self, sent: list[tuple[Any, Any]]) -> dict[tuple[str, int], Request]:
        return {tuple(a): m for m, a in sent
                if isinstance(m, Request) and m.method == "INVITE"}  # fmt: skip

    def cancels(self, sent: list[tuple[Any, Any]]) -> set[tuple[str, int]]:
        return {tuple(a) for m, a in sent if isinstance(m, Request) and m.method == "CANCEL"}

    def answer(self, address: tuple[str, int], invite: Request) -> list[tuple[Any, Any]]:
        phone = self.phones[address]
        self.stack.deliver(phone.answer(invite, 180), address)
        return self.stack.deliver(phone.answer(invite, 200, body=phone.sdp()), address)

    def hang_up(self, invite: Request, sent: list[tuple[Any, Any]]) -> CallRecord:
        ok = next(m for m, a in sent if isinstance(m, Response) and m.status == 200
                  and tuple(a) == ALICE)  # fmt: skip
        self.stack.deliver(self.alice.ack_for(invite, ok), ALICE)
        self.stack.deliver(self.alice.in_dialog("BYE", invite, ok, uac=True), ALICE)
        records = self.successResultOf(self.stack.records.list())
        self.assertEqual(len(records), 1)
        record: CallRecord = records[0]
        return record

    def test_simultaneous(self) -> None:
        """Every member rings at once; the one answering is the callee; the rest are cancelled."""
        self.start()
        invite, sent = self.alice.call("600")
        forks = self.invites(sent)
        self.assertEqual(set(forks), {BOB, CAROL, DAVE})
        for address in (BOB, DAVE):
            self.stack.deliver(self.phones[address].answer(forks[address], 180), address)
        sent = self.answer(CAROL, forks[CAROL])
        self.assertEqual(self.cancels(sent), {BOB, DAVE})
        call = next(iter(self.stack.calls.calls.values()))
        self.assertEqual(call.callee.number, "1003")
        record = self.hang_up(invite, sent)
        self.assertEqual((record.callee, record.dialled, record.disposition),
                         ("1003", "600", "ANSWERED"))  # fmt: skip

    def test_hunt(self) -> None:
        """
        One member after another: the first rings out (ring timeout), the
        second is busy, the third answers.
        """
        self.start(strategy="hunt", ring_timeout=10)
        invite, sent = self.alice.call("600")
        self.assertEqual(set(self.invites(sent)), {BOB})
        self.stack.deliver(self.phones[BOB].answer(self.invites(sent)[BOB], 180), BOB)
        before = self.stack.mark()
        self.stack.clock.advance(9.9)
        self.assertEqual(self.invites(self.stack.sent_since(before)), {})
        self.stack.clock.advance(0.2)
        sent = self.stack.sent_since(before)
        self.assertEqual(self.cancels(sent), {BOB})
        self.assertEqual(set(self.invites(sent)), {CAROL})
        sent = self.stack.deliver(self.phones[CAROL].answer(self.invites(sent)[CAROL], 486), CAROL)
        self.assertEqual(set(self.invites(sent)), {DAVE})
        sent = self.answer(DAVE, self.invites(sent)[DAVE])
        self.assertEqual(self.hang_up(invite, sent).callee, "1004")

    def test_hunt_skips_who_cannot_ring(self) -> None:
        """The caller and unregistered or unknown members are left out of the hunt."""
        self.start(strategy="hunt", members=["1001", "1009", "1003"])
        _, sent = self.alice.call("600")
        self.assertEqual(set(self.invites(sent)), {CAROL})

    def test_members_in_dnd_skipped(self) -> None:
        """A member in do-not-disturb is not rung; the others are."""
        self.start()
        self.successResultOf(self.store.set_features(CallFeatures("1003", dnd=True)))
        _, sent = self.alice.call("600")
        self.assertEqual(set(self.invites(sent)), {BOB, DAVE})

    def test_timeout_destination(self) -> None:
        """Nobody answers in the group's ring time: the call rings its timeout destination."""
        self.start(members=["1002", "1003"], ring_timeout=5, timeout_to="1004")
        _, sent = self.alice.call("600")
        forks = self.invites(sent)
        self.assertEqual(set(forks), {BOB, CAROL})
        for address, invite in forks.items():
            self.stack.deliver(self.phones[address].answer(invite, 180), address)
        before = self.stack.mark()
        self.stack.clock.advance(5.1)
        sent = self.stack.sent_since(before)
        self.assertEqual(self.cancels(sent), {BOB, CAROL})
        self.assertEqual(set(self.invites(sent)), {DAVE})

    def test_everyone_busy_without_destination(self) -> None:
        """Every member busy and no timeout destination: the caller gets the failure."""
        self.start(members=["1002", "1003"], strategy="hunt")
        _, sent = self.alice.call("600")
        sent = self.stack.deliver(self.phones[BOB].answer(self.invites(sent)[BOB], 486), BOB)
        sent = self.stack.deliver(self.phones[CAROL].answer(self.invites(sent)[CAROL], 486), CAROL)
        finals = [m.status for m, a in sent if isinstance(m, Response) and tuple(a) == ALICE]
        self.assertEqual(finals, [486])

    def test_nobody_registered(self) -> None:
        """No member can ring: 480 at once (or the timeout destination)."""
        self.start(members=["1009"])
        _, sent = self.alice.call("600")
        finals = [m.status for m, a in sent if isinstance(m, Response) and tuple(a) == ALICE
                  and m.status >= 200]  # fmt: skip
        self.assertEqual(finals, [480])

    def test_by_name(self) -> None:
        """A hook before callfeatures may send the call to ``ringgroup:sales``."""
        self.start(members=["1002"])
        _, sent = self.alice.call("700")
        self.assertEqual(set(self.invites(sent)), {BOB})
