"""
The dialplan: ordered rules from ``[[dialplan.rules]]`` that decide what a
dialled number means before the extension router looks it up.

A rule matches the dialled number with either an Asterisk-style ``pattern``
(``_`` then ``X`` = 0-9, ``Z`` = 1-9, ``N`` = 2-9, ``[1-5]`` a set, ``.`` one or
more of anything, ``!`` zero or more; without ``_`` the pattern is the literal
number) or a ``regex`` (Python syntax, matched against the whole number). The
first matching rule wins; a number no rule matches is dialled as an extension.

A matching rule can rewrite the number (``strip`` leading characters, then add a
``prefix``; or replace it with ``number``, which may use ``\\1`` groups of a
``regex``), then sends the call ``to``:

- ``extension``: ring the (rewritten) number's extension;
- ``reject``: answer the caller with ``status`` (403 by default) and ``reason``.

Trunks, voicemail and emergency routes will be further ``to`` values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet import defer
from zope.interface import implementer

from warden.digits import parse_uint
from warden.interfaces import IRouter
from warden.model import Extension, Route

__all__ = ["ACTIONS", "DialplanRouter", "Rule", "RuleError", "pattern_regex"]

ACTIONS = ("extension", "reject")
_KEYS = ("pattern", "regex", "strip", "prefix", "number", "to", "status", "reason")
_REASONS = {403: "Forbidden", 404: "Not Found", 480: "Temporarily Unavailable", 603: "Decline"}
_DIALLED = re.compile(r"^[0-9A-Za-z*#+._-]{1,64}$")


class RuleError(ValueError):
    """A rule is invalid; ``key`` names the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def pattern_regex(pattern: str) -> str:
    """
    The regular expression (for a full match) of an Asterisk-style pattern.

    Raises:
        RuleError: an unclosed ``[`` set or an empty pattern.
    """
    if not pattern.startswith("_"):
        if not _DIALLED.match(pattern):
            raise RuleError("pattern", f"not a dialable number: {pattern!r}")
        return re.escape(pattern)
    body = pattern[1:]
    if not body:
        raise RuleError("pattern", "empty pattern after '_'")
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c in "Xx":
            out.append("[0-9]")
        elif c in "Zz":
            out.append("[1-9]")
        elif c in "Nn":
            out.append("[2-9]")
        elif c == ".":
            out.append(".+")
        elif c == "!":
            out.append(".*")
        elif c == "[":
            end = body.find("]", i)
            if end < 0:
                raise RuleError("pattern", f"unclosed '[' in {pattern!r}")
            members = body[i + 1 : end]
            if not members or not re.fullmatch(r"[0-9*#+\-]+", members):
                raise RuleError("pattern", f"bad set [{members}] in {pattern!r}")
            out.append("[" + members.replace("*", r"\*").replace("+", r"\+") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@attrs.frozen
class Rule:
    """
    One dialplan rule (see the module docstring).

    Build rules with L{Rule.from_table}, which validates every key.
    """

    regex: re.Pattern[str]
    source: str
    to: str = "extension"
    strip: int = 0
    prefix: str = ""
    number: str | None = None
    status: int = 403
    reason: str = ""

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> Rule:
        """
        A rule from its TOML table.

        Raises:
            RuleError: naming the key that is unknown, missing or invalid.
        """
        for key in table:
            if key not in _KEYS:
                raise RuleError(key, f"unknown key (known: {', '.join(_KEYS)})")
        has_pattern, has_regex = "pattern" in table, "regex" in table
        if has_pattern == has_regex:
            raise RuleError("pattern", "give exactly one of pattern or regex")
        if has_pattern:
            source = table["pattern"]
            if not isinstance(source, str):
                raise RuleError("pattern", "must be a string")
            expression = pattern_regex(source)
        else:
            source = table["regex"]
            if not isinstance(source, str) or not source:
                raise RuleError("regex", "must be a non-empty string")
            expression = source
        try:
            compiled = re.compile(expression)
        except re.error as e:
            raise RuleError("regex" if has_regex else "pattern", f"invalid: {e}") from None
        to = table.get("to", "extension")
        if to not in ACTIONS:
            raise RuleError("to", f"must be one of {', '.join(ACTIONS)}, got {to!r}")
        strip = table.get("strip", 0)
        if not _int(strip) or not 0 <= strip <= 32:
            raise RuleError("strip", "must be an integer 0..32")
        prefix = table.get("prefix", "")
        if not isinstance(prefix, str) or (prefix and not _DIALLED.match(prefix)):
            raise RuleError("prefix", "must be a string of dialable characters")
        number = table.get("number")
        if number is not None:
            if not isinstance(number, str) or not number:
                raise RuleError("number", "must be a non-empty string")
            if strip or prefix:
                raise RuleError("number", "replaces the number: do not combine with strip/prefix")
            # Group references are checked now, not on the first call.
            _check_groups(number, compiled.groups if has_regex else 0)
        status = table.get("status", 403)
        if not _int(status) or not 400 <= status <= 699:
            raise RuleError("status", "must be a SIP final status 400..699")
        reason = table.get("reason", "")
        if not isinstance(reason, str) or any(ord(c) < 32 for c in reason):
            raise RuleError("reason", "must be a one-line string")
        if to != "reject" and ("status" in table or "reason" in table):
            raise RuleError("status", 'only a rule with to = "reject" answers with a status')
        return cls(compiled, source, to, strip, prefix, number, status, reason)

    def apply(self, dialled: str) -> str | None:
        """The rewritten number when this rule matches ``dialled``, else None."""
        match = self.regex.fullmatch(dialled)
        if match is None:
            return None
        if self.number is not None:
            return match.expand(self.number)
        return self.prefix + dialled[self.strip :]


def _check_groups(template: str, groups: int) -> None:
    """``template`` may only refer to groups 1..``groups`` (``\\1`` or ``\\g<1>``)."""
    for ref in re.findall(r"\\([0-9]+)|\\g<(\w+)>", template):
        name = ref[0] or ref[1]
        number = parse_uint(name, groups)
        if number is None or number < 1:
            raise RuleError("number", f"refers to group {name}; the match has {groups} groups")
    if re.search(r"\\(?![0-9g])", template):
        raise RuleError("number", "a backslash must start a group reference (\\1)")
    if not _DIALLED.match(re.sub(r"\\([0-9]+)|\\g<\w+>", "0", template)):
        raise RuleError("number", "must be dialable characters and group references")


@implementer(IRouter)
class DialplanRouter:
    """
    Applies the dialplan's rules, then hands extension numbers to ``extensions``.

    Args:
        rules: in order; the first match wins.
        extensions: routes extension numbers (L{warden.sip.routing.ExtensionRouter}).
    """

    def __init__(self, rules: tuple[Rule, ...], extensions: IRouter) -> None:
        self.rules = rules
        self._extensions = extensions

    def route(self, dialled: str, caller: Extension) -> defer.Deferred[Route]:
        """The first matching rule's decision; unmatched numbers are extensions."""
        for rule in self.rules:
            target = rule.apply(dialled)
            if target is None:
                continue
            if rule.to == "reject":
                reason = rule.reason or _REASONS.get(rule.status, "Rejected")
                return defer.succeed(Route(rule.status, reason))
            if not target:
                return defer.succeed(Route(404, "Not Found"))
            return self._extensions.route(target, caller)
        return self._extensions.route(dialled, caller)
