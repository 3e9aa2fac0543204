"""Tests for the dialplan (warden.sip.dialplan) and its ``[dialplan]`` configuration."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.sip.test_b2bua import ALICE, BOB, CallTestCase, only
from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.interfaces import IRouter
from warden.model import Extension, Route
from warden.sip.dialplan import DialplanRouter, Rule, RuleError, pattern_regex
from warden.store.credentials import make_extension

CALLER = make_extension("1001", "Alice", "example.com", "secret-1")


@implementer(IRouter)
class RecordingRouter:
    """An extension router that remembers the numbers it was asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def route(self, dialled: str, caller: Extension) -> defer.Deferred[Route]:
        self.asked.append(dialled)
        return defer.succeed(Route(404, "Not Found"))


def rule(**table: Any) -> Rule:
    return Rule.from_table(table)


class PatternTests(SynchronousTestCase):
    """Asterisk-style patterns into regular expressions."""

    def matches(self, pattern: str, number: str) -> bool:
        return rule(pattern=pattern).apply(number) is not None

    def test_literal(self) -> None:
        """Without a leading _, the pattern is the number itself."""
        self.assertTrue(self.matches("0", "0"))
        self.assertFalse(self.matches("0", "00"))
        self.assertFalse(self.matches("1.1", "121"))

    def test_digit_classes(self) -> None:
        """X is 0-9, Z is 1-9, N is 2-9."""
        self.assertTrue(self.matches("_1XX", "100"))
        self.assertFalse(self.matches("_1XX", "1000"))
        self.assertTrue(self.matches("_Z", "1"))
        self.assertFalse(self.matches("_Z", "0"))
        self.assertTrue(self.matches("_N", "2"))
        self.assertFalse(self.matches("_N", "1"))

    def test_sets_and_wildcards(self) -> None:
        """[1-5] is a set, . one or more characters, ! zero or more."""
        self.assertTrue(self.matches("_[1-5]0", "30"))
        self.assertFalse(self.matches("_[1-5]0", "60"))
        self.assertTrue(self.matches("_9.", "9123"))
        self.assertFalse(self.matches("_9.", "9"))
        self.assertTrue(self.matches("_9!", "9"))

    def test_regex_characters_are_literal(self) -> None:
        """Characters that mean something to regular expressions match themselves."""
        self.assertEqual(pattern_regex("_*7X"), r"\*7[0-9]")
        self.assertTrue(self.matches("_*7X", "*71"))
        self.assertFalse(self.matches("_*7X", "771"))

    def test_bad_patterns(self) -> None:
        """Unclosed sets and empty patterns are refused, naming the key."""
        for bad in ("_[12", "_", "_[a-z]", "12 34"):
            error = self.assertRaises(RuleError, rule, pattern=bad)
            self.assertEqual(error.key, "pattern")


class RewriteTests(SynchronousTestCase):
    """strip / prefix / number."""

    def test_strip_and_prefix(self) -> None:
        """strip removes leading characters, then prefix is added."""
        self.assertEqual(rule(pattern="_8XXX", strip=1).apply("8102"), "102")
        self.assertEqual(rule(pattern="_XX", prefix="10").apply("02"), "1002")

    def test_number_replaces(self) -> None:
        """number replaces the whole number."""
        self.assertEqual(rule(pattern="0", number="100").apply("0"), "100")

    def test_regex_groups(self) -> None:
        """A regex's groups may be used in number."""
        r = rule(regex=r"9(\d+)", number=r"\1")
        self.assertEqual(r.apply("91002"), "1002")
        self.assertIsNone(r.apply("81002"))

    def test_regex_is_a_whole_match(self) -> None:
        """A regex must match the whole number, not a part of it."""
        self.assertIsNone(rule(regex=r"\d{3}").apply("1002"))


class RuleValidationTests(SynchronousTestCase):
    """Invalid rules name the key at fault."""

    def assertKey(self, key: str, **table: Any) -> None:
        error = self.assertRaises(RuleError, Rule.from_table, table)
        self.assertEqual(error.key, key, str(error))

    def test_errors(self) -> None:
        """Each mistake names its key."""
        self.assertKey("pattern")  # neither pattern nor regex
        self.assertKey("pattern", pattern="1", regex="1")
        self.assertKey("regex", regex="(")
        self.assertKey("to", pattern="1", to="voicemail")
        self.assertKey("strip", pattern="1", strip=-1)
        self.assertKey("strip", pattern="1", strip=True)
        self.assertKey("prefix", pattern="1", prefix="a b")
        self.assertKey("number", pattern="1", number="")
        self.assertKey("number", pattern="1", number="2", strip=1)
        self.assertKey("number", regex=r"9(\d+)", number=r"\2")
        self.assertKey("number", pattern="1", number=r"\1")
        self.assertKey("number", regex=r"9(\d+)", number="\\g<\u00b2>")
        self.assertKey("number", regex=r"9(\d+)", number="\\\u0661")
        self.assertKey("status", pattern="1", to="reject", status=200)
        self.assertKey("status", pattern="1", status=403)
        self.assertKey("reason", pattern="1", to="reject", reason="a\nb")
        self.assertKey("colour", pattern="1", colour="red")


class RouterTests(SynchronousTestCase):
    """DialplanRouter decisions."""

    def setUp(self) -> None:
        self.extensions = RecordingRouter()

    def route(self, rules: tuple[Rule, ...], dialled: str) -> Route:
        router = DialplanRouter(rules, self.extensions)
        verifyObject(IRouter, router)
        result: Route = self.successResultOf(router.route(dialled, CALLER))
        return result

    def test_unmatched_numbers_are_extensions(self) -> None:
        """Without a matching rule the number goes to the extension router as dialled."""
        self.route((rule(pattern="0", number="100"),), "1002")
        self.assertEqual(self.extensions.asked, ["1002"])

    def test_first_match_wins(self) -> None:
        """Rules are tried in order."""
        rules = (rule(pattern="_1XXX", prefix="5"), rule(pattern="_1XXX", prefix="6"))
        self.route(rules, "1002")
        self.assertEqual(self.extensions.asked, ["51002"])

    def test_reject(self) -> None:
        """A reject rule answers with its status and reason, or the status's usual reason."""
        route = self.route((rule(pattern="_1900.", to="reject", reason="Barred"),), "19001")
        self.assertEqual((route.status, route.reason), (403, "Barred"))
        route = self.route((rule(pattern="666", to="reject", status=603),), "666")
        self.assertEqual((route.status, route.reason), (603, "Decline"))
        self.assertEqual(self.extensions.asked, [])

    def test_rewritten_to_nothing(self) -> None:
        """A rule that strips everything leaves nothing to ring: 404."""
        route = self.route((rule(pattern="9", strip=1),), "9")
        self.assertEqual(route.status, 404)


class ConfigTests(SynchronousTestCase):
    """``[[dialplan.rules]]`` in the configuration file."""

    def test_rules_parsed_in_order(self) -> None:
        """Rules keep their order and validate like Rule.from_table."""
        config = parse_config_text(
            '[[dialplan.rules]]\npattern = "0"\nnumber = "100"\n'
            '[[dialplan.rules]]\nregex = "^9(\\\\d+)$"\nnumber = "\\\\1"\n'
        )
        rules = config.dialplan.rules
        self.assertEqual([r.source for r in rules], ["0", r"^9(\d+)$"])
        self.assertEqual(rules[1].apply("91002"), "1002")

    def test_error_names_rule_and_key(self) -> None:
        """A bad rule names the file, the rule's index and the key."""
        error = self.assertRaises(
            ConfigError,
            parse_config_text,
            '[[dialplan.rules]]\npattern = "0"\n[[dialplan.rules]]\npattern = "_[1"\n',
            "warden.toml",
        )
        self.assertEqual(error.path, "dialplan.rules[1].pattern")
        self.assertIn("warden.toml: dialplan.rules[1].pattern: unclosed '['", str(error))

    def test_rules_must_be_tables(self) -> None:
        """rules = ["0"] is not a list of tables."""
        error = self.assertRaises(ConfigError, parse_config_text, '[dialplan]\nrules = ["0"]')
        self.assertEqual(error.path, "dialplan.rules[0]")


class DialplanCallTests(CallTestCase):
    """Calls placed through a dialplan: 0 reaches 1002, 9 + number is stripped, 19xx barred."""

    dialplan = (
        rule(pattern="0", number="1002"),
        rule(pattern="_9XXXX", strip=1),
        rule(pattern="_19XX", to="reject", reason="Barred"),
    )

    def test_short_code_rings_extension(self) -> None:
        """Dialling 0 rings Bob (1002); the record keeps the dialled number."""
        _, sent = self.alice.call("0")
        only(sent, ALICE, 100)
        bob_invite = only(sent, BOB, "INVITE")
        self.assertEqual(bob_invite.uri.user, "1002")  # type: ignore[attr-defined]
        self.stack.deliver(self.bob.answer(bob_invite, 486), BOB)  # type: ignore[arg-type]
        record = self.records()[0]
        self.assertEqual((record.dialled, record.disposition), ("0", "BUSY"))

    def test_prefix_stripped(self) -> None:
        """91002 rings 1002."""
        _, sent = self.alice.call("91002")
        only(sent, BOB, "INVITE")

    def test_barred(self) -> None:
        """1900 is refused with 403 Barred before anything rings."""
        _, sent = self.alice.call("1900")
        response = only(sent, ALICE, 403)
        self.assertEqual(response.reason, "Barred")  # type: ignore[attr-defined]
        self.assertEqual(self.stack.media.ports_in_use(), 0)
