"""
The IVR plugin (warden.features.ivr, ADR 0026) on the B2BUA test stack, on a
Clock: a menu key or a typed extension sends the caller on (the phone rings,
answers and is connected, warden.sip.handover), silence and wrong choices are
prompted again up to max_attempts and then go to timeout_to / invalid_to, a
DTMF flood is bounded, and the ``[[ivr]]`` configuration names the key of
each mistake.
"""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.trial.unittest import SynchronousTestCase

from tests.features.test_voicemail import Caller, frequency
from tests.sip.test_b2bua import ALICE, BOB, only
from warden.errors import ConfigError
from warden.features.callfeatures import CallFeaturesPlugin
from warden.features.ivr import MAX_VISITS, IvrPlugin, check_destinations
from warden.features.ivr_config import IvrConfig, IvrMenu, parse_ivr
from warden.features.ringgroups import parse_ringgroups
from warden.rtp import g711
from warden.sip.call import Call, CallState
from warden.sip.groups import RingPlan
from warden.sip.hooks import CallAttempt, CallHookBase, CallHooks
from warden.sip.local import RINGBACK
from warden.sip.message import Request, Response
from warden.store.credentials import make_extension
from warden.testing.callstack import CallStack, Phone
from warden.testing.features import MemoryCallFeatureStore
from warden.testing.rtpnet import dtmf
from warden.testing.sipstack import REALM

CAROL = ("192.0.2.14", 5066)
#: A short prompt: a 400 Hz tone of half a second.
PROMPT = g711.tone(400, 0.5)
MENU = IvrMenu(
    "main", number="500", prompt=PROMPT, timeout=3.0, digit_timeout=1.0, max_attempts=2,
    timeout_to="1002", invalid_to="hangup", digits={"2": "1002", "3": "ivr:main", "9": "1004"},
)  # fmt: skip


class IvrTestCase(SynchronousTestCase):
    """Alice (1001) dials the menu's number 500; Bob (1002) is registered."""

    menu = MENU

    def setUp(self) -> None:
        self.plugin = IvrPlugin()
        self.stack = CallStack(hooks=CallHooks([self.plugin]), applications=(self.plugin,))
        self.plugin.use(IvrConfig((self.menu,)), self.stack.directory)
        self.stack.successResultOf_(
            self.stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.stack.register("1002", BOB)
        self.alice = Phone(self.stack, "1001", ALICE)
        self.bob = Phone(self.stack, "1002", BOB)

    def plugin_endpoint(self) -> object:
        assert self.stack.calls.applications is not None
        (endpoint,) = self.stack.calls.applications.endpoints.values()
        return endpoint

    def shuttle(self) -> None:
        self.stack.shuttle()

    def answered(self) -> tuple[Request, Response, Caller]:
        """Alice dials 500; Warden answers at once and the menu plays."""
        invite, sent = self.alice.call("500")
        ok = only(sent, ALICE, 200)
        assert isinstance(ok, Response)
        self.stack.deliver(self.alice.ack_for(invite, ok), ALICE)
        return invite, ok, Caller(self, ok)  # type: ignore[arg-type]

    def call(self) -> Call:
        (call,) = self.stack.calls.calls.values()
        return call

    def sent_to(self, address: tuple[str, int], kind: str | int, since: int) -> list[object]:
        return [
            m
            for m, a in self.stack.sent_since(since)
            if tuple(a) == address
            and kind in (getattr(m, "method", None), getattr(m, "status", None))
        ]

    def bob_rings(self, caller: Caller, since: int, limit: float = 20.0) -> Request:
        """Ticks until Warden INVITEs Bob; returns that INVITE."""
        caller.until(lambda: bool(self.sent_to(BOB, "INVITE", since)), limit=limit)
        (invite,) = self.sent_to(BOB, "INVITE", since)
        assert isinstance(invite, Request)
        return invite


class ChoiceTests(IvrTestCase):
    def test_menu_key_connects_the_extension(self) -> None:
        """2: Bob rings (Alice hears ringback), answers, is connected; no re-INVITE to Alice."""
        _, _, caller = self.answered()
        caller.wait(0.1)
        self.assertGreater(caller.heard, 0)  # the prompt plays
        before = self.stack.mark()
        caller.press("2")
        bob_invite = self.bob_rings(caller, before)
        self.assertEqual(self.call().state, CallState.RINGING)
        heard = caller.heard
        caller.wait(1.0)
        self.assertGreater(caller.heard - heard, 40)  # ringback while Bob rings
        mark = self.stack.mark()
        sent = self.stack.deliver(self.bob.answer(bob_invite, 200, body=self.bob.sdp()), BOB)
        only(sent, BOB, "ACK")
        call = self.call()
        self.assertEqual((call.state, call.callee.number), (CallState.ANSWERED, "1002"))
        self.assertIn("b", call.dialogs)
        self.assertEqual(self.sent_to(ALICE, "INVITE", mark), [])  # same codec: no re-INVITE
        assert self.stack.calls.applications is not None
        self.assertEqual(self.stack.calls.applications.endpoints, {})

    def test_direct_dial(self) -> None:
        """1002# typed: Bob rings at once ('#' ends the number)."""
        _, _, caller = self.answered()
        before = self.stack.mark()
        caller.press("1002#")
        self.bob_rings(caller, before, limit=0.5)

    def test_caller_hangs_up_while_ringing(self) -> None:
        """Alice's BYE while Bob rings: 200 to Alice, CANCEL to Bob, no BYE back to Alice."""
        invite, ok, caller = self.answered()
        before = self.stack.mark()
        caller.press("2")
        bob_invite = self.bob_rings(caller, before)
        self.stack.deliver(self.bob.answer(bob_invite, 180), BOB)
        mark = self.stack.mark()
        sent = self.stack.deliver(self.alice.in_dialog("BYE", invite, ok, uac=True), ALICE)
        only(sent, ALICE, 200)
        only(sent, BOB, "CANCEL")
        self.assertEqual(self.sent_to(ALICE, "BYE", mark), [])
        self.assertEqual(self.stack.calls.calls, {})

    def test_destination_busy_hangs_up(self) -> None:
        """Bob answers 486 (no hook redirects): Warden hangs up on Alice."""
        _, _, caller = self.answered()
        before = self.stack.mark()
        caller.press("2")
        bob_invite = self.bob_rings(caller, before)
        mark = self.stack.mark()
        self.stack.deliver(self.bob.answer(bob_invite, 486), BOB)
        self.assertEqual(len(self.sent_to(ALICE, "BYE", mark)), 1)
        self.assertEqual(self.stack.calls.calls, {})

    def test_unregistered_destination_hangs_up(self) -> None:
        """9 goes to 1004, which has no phone: Warden hangs up."""
        _, _, caller = self.answered()
        before = self.stack.mark()
        caller.press("9")
        caller.until(lambda: bool(self.sent_to(ALICE, "BYE", before)), limit=5)


class RetryTests(IvrTestCase):
    def test_timeout_goes_to_timeout_to(self) -> None:
        """Nothing pressed: the prompt twice (max_attempts), then timeout_to (Bob) rings."""
        _, _, caller = self.answered()
        before = self.stack.mark()
        caller.wait(0.5 + 3.0 - 0.1)  # first prompt and wait
        self.assertEqual(self.sent_to(BOB, "INVITE", before), [])
        caller.wait(0.5 + 3.0 - 0.2)  # second prompt, not quite its wait
        self.assertEqual(self.sent_to(BOB, "INVITE", before), [])
        self.bob_rings(caller, before, limit=1.0)

    def test_invalid_goes_to_invalid_to(self) -> None:
        """A key of no choice twice: 'invalid' in between, then invalid_to (hangup): BYE."""
        _, _, caller = self.answered()
        before = self.stack.mark()
        caller.press("7")
        caller.wait(1.5)  # the digit timeout, then "That is not a valid choice."
        self.assertEqual(self.sent_to(ALICE, "BYE", before), [])
        caller.press("7")
        caller.until(lambda: bool(self.sent_to(ALICE, "BYE", before)), limit=10)
        self.assertEqual(self.sent_to(BOB, "INVITE", before), [])

    def test_unknown_extension_is_invalid(self) -> None:
        """1999# is no extension: invalid; then 2 reaches Bob."""
        _, _, caller = self.answered()
        before = self.stack.mark()
        caller.press("1999#")
        caller.wait(0.5)
        self.assertEqual(self.sent_to(BOB, "INVITE", before), [])
        caller.wait(3.0)  # the invalid prompt and the menu again
        caller.press("2")
        self.bob_rings(caller, before)

    def test_dtmf_flood_is_bounded(self) -> None:
        """200 digits in a burst: at most 16 are read, the rest dropped; the call goes on."""
        _, _, caller = self.answered()
        before = self.stack.mark()
        for i in range(200):  # start and end packets of 200 events, in one burst
            for end in (False, True):
                packet = dtmf(caller.seq, caller.timestamp, event=i % 10, end=end)
                self.stack.network.deliver(caller.relay, packet, caller.source)
                caller.seq += 1
            caller.timestamp += 800
        caller.tick()
        endpoint = self.plugin_endpoint()
        self.assertGreater(endpoint.digits_dropped, 0)  # type: ignore[attr-defined]
        caller.until(lambda: bool(self.sent_to(ALICE, "BYE", before)), limit=30)

    def test_menus_sending_to_each_other_end(self) -> None:
        """3 sends to ivr:main again: after MAX_VISITS menus the call ends."""
        _, _, caller = self.answered()
        before = self.stack.mark()
        for _ in range(MAX_VISITS):
            caller.press("3")
            caller.wait(1.2)
        caller.until(lambda: bool(self.sent_to(ALICE, "BYE", before)), limit=10)


class RingbackTests(SynchronousTestCase):
    def test_ringback_cadence(self) -> None:
        """2 s of 440 + 480 Hz (their mean, 460 Hz, by zero crossings), then 4 s of silence."""
        on, off = RINGBACK[: 2 * 16000], RINGBACK[2 * 16000 :]
        self.assertLess(abs(frequency(on) - 460), 25)
        self.assertEqual((len(off), g711.level(off)), (4 * 16000, 0.0))


class ConfigTests(SynchronousTestCase):
    def check(self, path: str, table: dict[str, object], problem: str) -> None:
        e = self.assertRaises(ConfigError, parse_ivr, [{"name": "main", **table}])
        self.assertEqual(e.path, path)
        self.assertIn(problem, e.problem)

    def test_defaults(self) -> None:
        """A menu with only a name: shipped prompt, 5 s, 3 attempts, hang up."""
        (menu,) = parse_ivr([{"name": "main"}]).menus
        self.assertEqual(
            (menu.prompt, menu.timeout, menu.max_attempts, menu.timeout_to, menu.direct_dial),
            (None, 5.0, 3, "hangup", True),
        )

    def test_destinations(self) -> None:
        """Every destination form is accepted."""
        table = {"digits": {"1": "ringgroup:sales", "2": "voicemail:1001", "0": "+15551234567",
                            "*": "ivr:main"}, "timeout_to": "1000"}  # fmt: skip
        (menu,) = parse_ivr([{"name": "main", **table}]).menus
        self.assertEqual(menu.digits["1"], "ringgroup:sales")

    def test_mistakes(self) -> None:
        """Each mistake names its key."""
        self.check("ivr[0].timeout_to", {"timeout_to": "fax:1"}, "unknown destination kind")
        self.check("ivr[0].invalid_to", {"invalid_to": "nowhere"}, "unknown destination")
        self.check('ivr[0].digits."12"', {"digits": {"12": "1001"}}, "menu key")
        self.check('ivr[0].digits."#"', {"digits": {"#": "1001"}}, "menu key")
        self.check('ivr[0].digits."1"', {"digits": {"1": "voicemail:bob"}}, "mailbox")
        self.check('ivr[0].digits."1"', {"digits": {"1": "ivr:other"}}, "no menu is named")
        self.check("ivr[0].timeout", {"timeout": 0}, "seconds")
        self.check("ivr[0].max_attempts", {"max_attempts": True}, "integer")
        self.check("ivr[0].colour", {"colour": "red"}, "unknown key")
        self.check("ivr[0].prompt", {"prompt": "/nonexistent/x.wav"}, "/nonexistent/x.wav")

    def test_prompt_file(self) -> None:
        """A prompt file is read (8 kHz mono 16-bit); another format is refused."""
        good = Path(self.mktemp())
        good.write_bytes(g711.wav_bytes(PROMPT))
        (menu,) = parse_ivr([{"name": "main", "prompt": str(good)}]).menus
        self.assertEqual(menu.prompt, PROMPT)
        bad = Path(self.mktemp())
        bad.write_bytes(b"not a wav file")
        self.check("ivr[0].prompt", {"prompt": str(bad)}, str(bad))

    def test_duplicates(self) -> None:
        """Two menus may not share a name or a number."""
        e = self.assertRaises(ConfigError, parse_ivr, [{"name": "a"}, {"name": "a"}])
        self.assertEqual(e.path, "ivr[1].name")

    def test_destinations_checked_when_built(self) -> None:
        """voicemail: needs the plugin running; ringgroup: an existing group."""
        config = IvrConfig((attrs.evolve(MENU, digits={"1": "voicemail:1001"}),))
        e = self.assertRaises(ConfigError, check_destinations, config, lambda t: False, None)
        self.assertEqual(e.path, 'ivr[0].digits."1"')
        config = IvrConfig((attrs.evolve(MENU, digits={"1": "ringgroup:sales"}),))
        e = self.assertRaises(ConfigError, check_destinations, config, lambda t: True, None)
        self.assertIn("no ring group", e.problem)
        check_destinations(config, lambda t: True, lambda name: name == "sales")

    def test_inbound_routes_may_name_menus(self) -> None:
        """With the default plugins, [[routes.inbound]] to = "ivr:main" is a known target kind."""
        from warden.features.trunks import target_kinds
        from warden.plugin import DEFAULT_PLUGINS, discover

        available = discover()
        self.assertIn("ivr", target_kinds([available[n] for n in DEFAULT_PLUGINS]))


class TrunkCallerTests(IvrTestCase):
    """A caller a trunk brought in stays one when the IVR sends it on."""

    def setUp(self) -> None:
        super().setUp()
        self.seen: list[tuple[str, frozenset[str]]] = []
        seen = self.seen

        class Marks(CallHookBase):
            def before_routing(self, attempt: CallAttempt) -> None:
                if attempt.dialled == "500":
                    attempt.marks.update({"trunk-inbound", "trunk:itsp", "forwarded"})
                seen.append((attempt.dialled, frozenset(attempt.marks)))

        hooks = CallHooks([Marks(), self.plugin])
        self.stack.calls.hooks = hooks

    def test_trunk_marks_kept(self) -> None:
        """The re-routed attempt keeps trunk-inbound and trunk:itsp, not the other marks."""
        _, _, caller = self.answered()
        before = self.stack.mark()
        caller.press("2")
        self.bob_rings(caller, before)
        self.assertEqual(self.seen[-1], ("1002", frozenset({"trunk-inbound", "trunk:itsp"})))


class RingGroupTests(IvrTestCase):
    """Key 4 sends the caller to ringgroup:sales (Bob 1002 and Carol 1003, at once)."""

    menu = attrs.evolve(MENU, digits={"4": "ringgroup:sales"})

    def setUp(self) -> None:
        self.features = CallFeaturesPlugin()
        self.features.use_store(MemoryCallFeatureStore())
        self.features.groups = parse_ringgroups(
            [{"name": "sales", "number": "600", "members": ["1002", "1003"]}]
        )
        self.plugin = IvrPlugin()
        hooks = CallHooks([self.features, self.plugin])
        self.stack = CallStack(hooks=hooks, applications=(self.plugin,))
        self.plugin.use(IvrConfig((self.menu,)), self.stack.directory)
        self.stack.successResultOf_(
            self.stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.stack.register("1002", BOB)
        self.stack.register("1003", CAROL)
        self.alice = Phone(self.stack, "1001", ALICE)
        self.bob = Phone(self.stack, "1002", BOB)
        self.carol = Phone(self.stack, "1003", CAROL)

    def test_group_rings_and_a_member_answers(self) -> None:
        """Both members ring; Carol answers: she is the callee, Bob's phone is cancelled."""
        _, _, caller = self.answered()
        before = self.stack.mark()
        caller.press("4")
        self.bob_rings(caller, before)
        (carol_invite,) = self.sent_to(CAROL, "INVITE", before)
        assert isinstance(carol_invite, Request)
        bob_invite = self.sent_to(BOB, "INVITE", before)[0]
        assert isinstance(bob_invite, Request)
        self.stack.deliver(self.bob.answer(bob_invite, 180), BOB)
        sent = self.stack.deliver(
            self.carol.answer(carol_invite, 200, body=self.carol.sdp()), CAROL
        )
        only(sent, CAROL, "ACK")
        only(sent, BOB, "CANCEL")
        call = self.call()
        self.assertEqual((call.state, call.callee.number), (CallState.ANSWERED, "1003"))


class NumberTests(SynchronousTestCase):
    def test_menu_number(self) -> None:
        """The menu's number becomes ivr:main; a number a ring group took stays the group's."""
        plugin = IvrPlugin()
        plugin.use(IvrConfig((MENU,)), None)  # type: ignore[arg-type]
        attempt = CallAttempt(make_extension("1001", "A", REALM, "pw"), "500", None, None)  # type: ignore[arg-type]
        plugin.before_routing(attempt)
        self.assertEqual((attempt.dialled, attempt.marks), ("ivr:main", {"ivr"}))
        grouped = CallAttempt(make_extension("1001", "A", REALM, "pw"), "500", None, None)  # type: ignore[arg-type]
        grouped.plan = RingPlan("500", "sales", (("1002",),))
        plugin.before_routing(grouped)
        self.assertEqual(grouped.dialled, "500")
