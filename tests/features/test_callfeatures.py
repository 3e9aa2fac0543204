"""
The callfeatures plugin (warden.features.callfeatures) in the B2BUA's call
flow: feature codes, unconditional, busy and no-answer forwarding, and
do-not-disturb (with a later hook sending a DND call elsewhere).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.sip.test_b2bua import ALICE, BOB, only
from warden.features.callfeatures import CallFeaturesPlugin
from warden.interfaces import ICallHook, IWardenPlugin
from warden.model import Extension
from warden.model.features import CallFeatures
from warden.sip.flow import Flow
from warden.sip.hooks import CallAttempt, CallHookBase
from warden.sip.message import Request, Response
from warden.store.credentials import make_extension
from warden.testing.callstack import CallStack, Phone
from warden.testing.features import MemoryCallFeatureStore
from warden.testing.sipstack import REALM

CAROL = ("192.0.2.14", 5066)


class Voicemail(CallHookBase):
    """A later hook: records failures it is asked about and sends them to ``to``."""

    def __init__(self, to: str | None) -> None:
        self.to = to
        self.asked: list[tuple[str, int]] = []

    def routing_failed(
        self, attempt: CallAttempt, status: int, reason: str
    ) -> Deferred[str | None] | str | None:
        """Record; redirect."""
        self.asked.append((attempt.dialled, status))
        return defer.succeed(self.to)


class FeatureTestCase(SynchronousTestCase):
    """Alice (1001), Bob (1002), Carol (1003); 1004 is not registered."""

    def setUp(self) -> None:
        self.store = MemoryCallFeatureStore()
        self.plugin = CallFeaturesPlugin()
        self.plugin.use_store(self.store)
        self.later = Voicemail(None)

    def stack(self, ring_timeout: float = 30.0) -> CallStack:
        stack = CallStack(ring_timeout=ring_timeout, hooks=[self.plugin, self.later])
        stack.register("1002", BOB)
        stack.register("1003", CAROL)
        stack.successResultOf_(
            stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.alice = Phone(stack, "1001", ALICE)
        self.bob = Phone(stack, "1002", BOB)
        self.carol = Phone(stack, "1003", CAROL)
        return stack

    def set(self, number: str, **features: Any) -> None:
        self.successResultOf(self.store.set_features(CallFeatures(number, **features)))

    def features(self, number: str) -> CallFeatures:
        result: CallFeatures = self.successResultOf(self.store.get_features(number))
        return result

    def final(self, sent: list[tuple[Any, Any]], to: tuple[str, int]) -> Response:
        found = [m for m, a in sent if tuple(a) == to and isinstance(m, Response)
                 and m.status >= 200]  # fmt: skip
        self.assertEqual(len(found), 1, sent)
        return found[0]

    def invites_to(self, sent: list[tuple[Any, Any]], to: tuple[str, int]) -> list[Request]:
        return [m for m, a in sent
                if tuple(a) == to and isinstance(m, Request) and m.method == "INVITE"]  # fmt: skip


class PluginTests(SynchronousTestCase):
    """The plugin object."""

    def test_interfaces(self) -> None:
        """It is a Warden plugin and a call hook."""
        plugin = CallFeaturesPlugin()
        self.assertTrue(verifyObject(IWardenPlugin, plugin))
        self.assertTrue(verifyObject(ICallHook, plugin))


class FeatureCodeTests(FeatureTestCase):
    """``*72``/``*73``/``*78``/``*79`` set the caller's features; a final response answers."""

    def test_forward_on_and_off(self) -> None:
        """*72<number> forwards every call; *73 stops; each answered 480 naming the change."""
        self.stack()
        _, sent = self.alice.call("*721003")
        response = self.final(sent, ALICE)
        self.assertEqual((response.status, response.reason), (480, "Call Forwarding On 1003"))
        self.assertEqual(self.features("1001").forward_all, "1003")
        _, sent = self.alice.call("*73")
        self.assertEqual(self.final(sent, ALICE).reason, "Call Forwarding Off")
        self.assertEqual(self.features("1001"), CallFeatures("1001"))

    def test_forward_keeps_other_features(self) -> None:
        """Changing one feature keeps the others."""
        self.set("1001", forward_busy="1002", dnd=True)
        self.stack()
        self.alice.call("*72+15551230000")
        self.assertEqual(
            self.features("1001"),
            CallFeatures("1001", forward_all="+15551230000", forward_busy="1002", dnd=True),
        )

    def test_bad_forward_number(self) -> None:
        """*72 without a number, with other characters, or to oneself: 484, nothing stored."""
        self.stack()
        for dialled in ("*72", "*72abc", "*721001", "*72" + "1" * 33):
            _, sent = self.alice.call(dialled)
            self.assertEqual(self.final(sent, ALICE).status, 484, dialled)
        self.assertEqual(self.features("1001"), CallFeatures("1001"))

    def test_dnd_on_and_off(self) -> None:
        """*78 and *79 switch do-not-disturb."""
        self.stack()
        _, sent = self.alice.call("*78")
        self.assertEqual(self.final(sent, ALICE).reason, "Do Not Disturb On")
        self.assertTrue(self.features("1001").dnd)
        _, sent = self.alice.call("*79")
        self.assertEqual(self.final(sent, ALICE).reason, "Do Not Disturb Off")
        self.assertFalse(self.features("1001").dnd)

    def test_only_extensions_dial_codes(self) -> None:
        """A caller without a realm (one a trunk vouches for) dials no feature code."""
        self.stack()
        attempt = CallAttempt(
            Extension("15551230000", "", "", "", ""), "*78", self.alice.invite("*78"),
            Flow("udp", *ALICE),
        )  # fmt: skip
        self.successResultOf(self.plugin.before_routing(attempt))
        self.assertEqual(self.features("15551230000"), CallFeatures("15551230000"))
        self.assertEqual(attempt.dialled, "*78")

    def test_other_star_numbers_routed(self) -> None:
        """A star number that is no code of the plugin is routed as dialled (404 here)."""
        self.stack()
        _, sent = self.alice.call("*5")
        self.assertEqual(self.final(sent, ALICE).status, 404)


class ForwardTests(FeatureTestCase):
    """Unconditional, busy and no-answer forwarding."""

    def test_unconditional(self) -> None:
        """A call to an extension forwarding everything rings the target instead."""
        self.set("1002", forward_all="1003")
        stack = self.stack()
        _, sent = self.alice.call("1002")
        self.assertEqual(self.invites_to(sent, BOB), [])
        self.assertEqual(len(self.invites_to(sent, CAROL)), 1)
        self.assertEqual(stack.calls.calls.popitem()[1].attempt.marks, {"forwarded"})

    def test_chain_and_loop(self) -> None:
        """Forwards are followed one after another; a loop stops where it closes."""
        self.set("1002", forward_all="1004")
        self.set("1004", forward_all="1003")
        self.set("1003", forward_all="1002")
        self.stack()
        _, sent = self.alice.call("1002")
        self.assertEqual(len(self.invites_to(sent, CAROL)), 1)

    def test_not_back_to_the_caller(self) -> None:
        """A forward to the caller itself is not followed: the dialled extension rings."""
        self.set("1002", forward_all="1001")
        self.stack()
        _, sent = self.alice.call("1002")
        self.assertEqual(len(self.invites_to(sent, BOB)), 1)

    def test_busy(self) -> None:
        """The callee answers 486: the call rings the busy forward."""
        self.set("1002", forward_busy="1003", forward_no_answer="1004")
        stack = self.stack()
        _, sent = self.alice.call("1002")
        invite = self.invites_to(sent, BOB)[0]
        sent = stack.deliver(self.bob.answer(invite, 486), BOB)
        self.assertEqual(len(self.invites_to(sent, CAROL)), 1)
        self.assertEqual(self.later.asked, [])

    def test_no_answer(self) -> None:
        """Nobody answers before the ring timeout: the no-answer forward rings."""
        self.set("1002", forward_no_answer="1003")
        stack = self.stack(ring_timeout=10.0)
        _, sent = self.alice.call("1002")
        invite = self.invites_to(sent, BOB)[0]
        stack.deliver(self.bob.answer(invite, 180), BOB)
        before = stack.mark()
        stack.clock.advance(9.9)
        self.assertEqual(self.invites_to(stack.sent_since(before), CAROL), [])
        stack.clock.advance(0.2)
        self.assertEqual(len(self.invites_to(stack.sent_since(before), CAROL)), 1)

    def test_unregistered(self) -> None:
        """An extension with no phone registered (480) goes to the no-answer forward."""
        self.set("1004", forward_no_answer="1003")
        self.stack()
        _, sent = self.alice.call("1004")
        self.assertEqual(len(self.invites_to(sent, CAROL)), 1)

    def test_without_forward_fails_as_before(self) -> None:
        """No forward set: the caller gets the callee's busy."""
        stack = self.stack()
        _, sent = self.alice.call("1002")
        invite = self.invites_to(sent, BOB)[0]
        sent = stack.deliver(self.bob.answer(invite, 486), BOB)
        self.assertEqual(self.final(sent, ALICE).status, 486)


class DoNotDisturbTests(FeatureTestCase):
    """Do-not-disturb refuses calls as busy, unless a later hook redirects them."""

    def test_busy(self) -> None:
        """
        Callers of a DND extension get 486; its phone never rings; its busy
        forward is not used; later hooks are asked.
        """
        self.set("1002", dnd=True, forward_busy="1003")
        self.stack()
        _, sent = self.alice.call("1002")
        self.assertEqual(self.invites_to(sent, BOB), [])
        self.assertEqual(self.invites_to(sent, CAROL), [])
        self.assertEqual(self.final(sent, ALICE).status, 486)
        self.assertEqual(self.later.asked, [("1002", 486)])

    def test_later_hook_redirects(self) -> None:
        """A hook listed after callfeatures (voicemail) may take the DND call."""
        self.later.to = "1003"
        self.set("1002", dnd=True)
        self.stack()
        _, sent = self.alice.call("1002")
        self.assertEqual(self.invites_to(sent, BOB), [])
        self.assertEqual(len(self.invites_to(sent, CAROL)), 1)

    def test_forward_target_in_dnd(self) -> None:
        """An unconditional forward to a DND extension is refused as busy too."""
        self.set("1002", forward_all="1003")
        self.set("1003", dnd=True)
        self.stack()
        _, sent = self.alice.call("1002")
        self.assertEqual(self.final(sent, ALICE).status, 486)

    def test_own_calls_unaffected(self) -> None:
        """A DND extension still calls out."""
        self.set("1001", dnd=True)
        self.stack()
        _, sent = self.alice.call("1002")
        only(sent, BOB, "INVITE")


class ConfirmationToneTests(SynchronousTestCase):
    """With local applications, a feature code offering media is answered with a tone."""

    def setUp(self) -> None:
        self.store = MemoryCallFeatureStore()
        self.plugin = CallFeaturesPlugin()
        self.plugin.use_store(self.store)
        self.plugin.confirm_tones = True
        self.stack = CallStack(hooks=[self.plugin], applications=(self.plugin,))
        self.stack.successResultOf_(
            self.stack.directory.update_extension(make_extension("1001", "Alice", REALM, "pw1001"))
        )
        self.alice = Phone(self.stack, "1001", ALICE)

    def test_tone_then_bye(self) -> None:
        """
        *78 with SDP: DND is set, Warden answers 200, plays the rising tone
        (0.65 s of RTP towards Alice through the relay) and hangs up.
        """
        invite, sent = self.alice.call("*78")
        ok = only(sent, ALICE, 200)
        assert isinstance(ok, Response)
        self.assertTrue(self.successResultOf(self.store.get_features("1001")).dnd)
        self.stack.deliver(self.alice.ack_for(invite, ok), ALICE)
        before = self.stack.mark()
        (endpoint_port,) = self.stack.endpoint_ports
        packets = 0
        for _ in range(40):
            if endpoint_port in self.stack.network.ports:
                packets += len(self.stack.network.sent_from(endpoint_port))
            self.stack.clock.advance(0.02)
        only(self.stack.sent_since(before), ALICE, "BYE")
        self.assertGreaterEqual(packets, 30)  # 0.65 s of 20 ms frames
        record = list(self.stack.records._records.values())[-1]
        self.assertEqual((record.callee, record.disposition), ("feature:on", "ANSWERED"))

    def test_without_media_still_480(self) -> None:
        """An INVITE without SDP cannot hear a tone: 480 naming the change."""
        _, sent = self.alice.call("*79", body=b"")
        response = only(sent, ALICE, 480)
        assert isinstance(response, Response)
        self.assertEqual(response.reason, "Do Not Disturb Off")
