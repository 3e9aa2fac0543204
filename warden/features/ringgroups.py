"""
Ring groups of the callfeatures plugin (ADR 0023): ``[[ringgroups]]`` parsed
and checked, and the L{RingPlan} a call to a group rings.

::

    [[ringgroups]]
    name = "sales"              # "ringgroup:sales" names it as a route target
    number = "600"              # dialled to reach the group
    members = ["1001", "1002"]  # extension numbers, in hunt order
    strategy = "simultaneous"   # or "hunt": one member after another
    ring_timeout = 20           # seconds: the whole group, or each member (hunt)
    timeout_to = "1003"         # where an unanswered call goes ("" = 480 to the caller)

and the pickup groups, ``[[pickupgroups]]``: a member dialling ``*8`` answers
a call ringing at another member of a group it is in::

    [[pickupgroups]]
    name = "office"
    members = ["1001", "1002", "1003"]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from warden.errors import ConfigError
from warden.sip.groups import RingPlan

__all__ = [
    "STRATEGIES",
    "PickupGroupsConfig",
    "RingGroup",
    "RingGroupsConfig",
    "parse_pickupgroups",
    "parse_ringgroups",
]

STRATEGIES = ("simultaneous", "hunt")
#: The longest ring of one call: the caller's INVITE transaction (Timer C,
#: 180 s by default) must outlast it.
MAX_TOTAL_RING = 170.0
MAX_MEMBERS = 32
_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_NUMBER = re.compile(r"[0-9]{1,32}")
_TARGET = re.compile(r"\+?[0-9]{1,32}|[a-z][a-z0-9-]{0,31}:[0-9A-Za-z*#._-]{1,64}")
_KEYS = ("name", "number", "members", "strategy", "ring_timeout", "timeout_to")


@attrs.frozen
class RingGroup:
    """
    One ring group.

    Attributes:
        name: its name (``ringgroup:<name>`` as a route target).
        number: the number phones dial to reach it.
        members: the extension numbers rung, in hunt order.
        strategy: ``simultaneous`` (every member at once) or ``hunt`` (one
            after another).
        ring_timeout: seconds the group (simultaneous) or each member (hunt)
            rings.
        timeout_to: where an unanswered call goes: a number, or a local
            application target (``voicemail:1001``); "" for 480 to the caller.
    """

    name: str
    number: str
    members: tuple[str, ...]
    strategy: str = "simultaneous"
    ring_timeout: float = 20.0
    timeout_to: str = ""

    def plan(self) -> RingPlan:
        """The steps a call to this group rings."""
        steps: tuple[tuple[str, ...], ...]
        if self.strategy == "hunt":
            steps = tuple((member,) for member in self.members)
        else:
            steps = (self.members,)
        return RingPlan(self.number, self.name, steps)


@attrs.frozen
class RingGroupsConfig:
    """``[[ringgroups]]``: the groups, with lookups by number and by name."""

    groups: tuple[RingGroup, ...] = ()

    def by_number(self, number: str) -> RingGroup | None:
        """The group dialled as ``number``."""
        return next((g for g in self.groups if g.number == number), None)

    def by_name(self, name: str) -> RingGroup | None:
        """The group named ``name``."""
        return next((g for g in self.groups if g.name == name), None)


def _want(path: str, ok: bool, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(path, f"expected {expected}, got {value!r}"[:200])


def _group(path: str, table: Mapping[str, Any]) -> RingGroup:
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"{path}.{key}", f"unknown key (known: {', '.join(_KEYS)})")
    for key in ("name", "number", "members"):
        if key not in table:
            raise ConfigError(f"{path}.{key}", "missing")
    name, number, members = table["name"], table["number"], table["members"]
    _want(f"{path}.name", isinstance(name, str) and bool(_NAME.fullmatch(name)),
          "a name: a-z then a-z, 0-9 or '-' (at most 32)", name)  # fmt: skip
    _want(f"{path}.number", isinstance(number, str) and bool(_NUMBER.fullmatch(number)),
          "a number of 1 to 32 digits, as a string", number)  # fmt: skip
    _want(f"{path}.members", isinstance(members, list) and 0 < len(members) <= MAX_MEMBERS
          and all(isinstance(m, str) and _NUMBER.fullmatch(m) for m in members)
          and len(set(members)) == len(members),
          f"1 to {MAX_MEMBERS} distinct extension numbers", members)  # fmt: skip
    strategy = table.get("strategy", "simultaneous")
    _want(f"{path}.strategy", strategy in STRATEGIES, " or ".join(STRATEGIES), strategy)
    timeout = table.get("ring_timeout", 20)
    _want(f"{path}.ring_timeout", isinstance(timeout, (int, float))
          and not isinstance(timeout, bool) and 1 <= timeout <= 120,
          "seconds from 1 to 120", timeout)  # fmt: skip
    steps = len(members) if strategy == "hunt" else 1
    if steps * float(timeout) > MAX_TOTAL_RING:
        raise ConfigError(
            f"{path}.ring_timeout",
            f"{len(members)} members hunted for {timeout} s each ring longer than"
            f" {MAX_TOTAL_RING:g} s (the caller's INVITE transaction would end first)",
        )
    timeout_to = table.get("timeout_to", "")
    _want(f"{path}.timeout_to", isinstance(timeout_to, str)
          and (timeout_to == "" or bool(_TARGET.fullmatch(timeout_to))),
          "a number or a target like voicemail:1001", timeout_to)  # fmt: skip
    return RingGroup(name, number, tuple(members), strategy, float(timeout), timeout_to)


def parse_ringgroups(value: object) -> RingGroupsConfig:
    """
    ``[[ringgroups]]`` (an array of tables) into L{RingGroupsConfig}.

    Raises:
        ConfigError: naming ``ringgroups[i].key`` and the problem.
    """
    if not isinstance(value, list):
        raise ConfigError("ringgroups", "must be an array of tables ([[ringgroups]])")
    groups = []
    for i, table in enumerate(value):
        if not isinstance(table, dict):
            raise ConfigError(f"ringgroups[{i}]", "must be a table")
        groups.append(_group(f"ringgroups[{i}]", table))
    for i, group in enumerate(groups):
        for key in ("name", "number"):
            if any(getattr(g, key) == getattr(group, key) for g in groups[:i]):
                raise ConfigError(
                    f"ringgroups[{i}].{key}", f"another group has {key} {getattr(group, key)!r}"
                )
    return RingGroupsConfig(tuple(groups))


@attrs.frozen
class PickupGroupsConfig:
    """``[[pickupgroups]]``: each group's name and member extensions."""

    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def peers_of(self, number: str) -> frozenset[str]:
        """The other members of every group ``number`` is in."""
        return frozenset(m for _, members in self.groups if number in members for m in members) - {
            number
        }


def parse_pickupgroups(value: object) -> PickupGroupsConfig:
    """
    ``[[pickupgroups]]`` (an array of tables: ``name``, ``members``).

    Raises:
        ConfigError: naming ``pickupgroups[i].key`` and the problem.
    """
    if not isinstance(value, list):
        raise ConfigError("pickupgroups", "must be an array of tables ([[pickupgroups]])")
    groups: list[tuple[str, tuple[str, ...]]] = []
    for i, table in enumerate(value):
        path = f"pickupgroups[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(path, "must be a table")
        for key in table:
            if key not in ("name", "members"):
                raise ConfigError(f"{path}.{key}", "unknown key (known: name, members)")
        name, members = table.get("name"), table.get("members")
        _want(f"{path}.name", isinstance(name, str) and bool(_NAME.fullmatch(name))
              and all(name != g for g, _ in groups),
              "a distinct name: a-z then a-z, 0-9 or '-' (at most 32)", name)  # fmt: skip
        _want(f"{path}.members", isinstance(members, list) and 1 < len(members) <= 256
              and all(isinstance(m, str) and _NUMBER.fullmatch(m) for m in members)
              and len(set(members)) == len(members),
              "2 to 256 distinct extension numbers", members)  # fmt: skip
        assert isinstance(name, str) and isinstance(members, list)
        groups.append((name, tuple(members)))
    return PickupGroupsConfig(tuple(groups))
