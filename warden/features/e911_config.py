"""
``[emergency]``, owned by the ``e911`` plugin (L{warden.features.e911}, ADR
0027): the emergency numbers, the trunks they go to, the site's default
location and the on-site notifications' settings.

The ``notify_*`` and ``smtp_*`` keys, the on-site notifications', are
checked by the notifier's parser (L{warden.features.e911_notify.parse_notify})
into L{EmergencyConfig.notify}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from warden.errors import ConfigError
from warden.features.e911_notify import NOTIFY_KEYS, NotifyConfig, parse_notify
from warden.model.emergency import CivicError, check_location_name

__all__ = ["EmergencyConfig", "parse_emergency"]

_NUMBER = re.compile(r"^[0-9]{1,15}$")
_PREFIX = re.compile(r"^[0-9]{0,4}$")
_TRUNK = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_MAX_LIST = 64
_DEFAULT_NUMBERS = ("911", "933")

_KEYS = (
    "numbers", "test_numbers", "trunks", "outside_prefix", "default_location",
    "reserve_calls", *NOTIFY_KEYS,
)  # fmt: skip


@attrs.frozen
class EmergencyConfig:
    """
    ``[emergency]``.

    Attributes:
        numbers: emergency numbers dialled with no prefix (``911``, ``933``).
        test_numbers: those of ``numbers`` that are test calls (``933``):
            routed the same way, marked as tests in records and notifications.
        trunks: the emergency trunks (``[[trunks]]`` names), tried in order;
            none: emergency calls are not intercepted.
        outside_prefix: the outside-line prefix also accepted before a number
            (``9`` makes ``9911`` an emergency call); "" for none.
        default_location: the location (``wardenctl location add``) sent for
            a device that has none; using it raises an alert.
        reserve_calls: calls of each emergency trunk's ``max_calls`` kept free
            for emergency calls.
        notify: the on-site notifications (SIP MESSAGE, webhook, email) and
            their retries: the ``notify_*`` and ``smtp_*`` keys.
    """

    numbers: tuple[str, ...] = _DEFAULT_NUMBERS
    test_numbers: tuple[str, ...] = ("933",)
    trunks: tuple[str, ...] = ()
    outside_prefix: str = ""
    default_location: str = ""
    reserve_calls: int = 0
    notify: NotifyConfig = attrs.field(factory=NotifyConfig)

    def emergency_number(self, dialled: str) -> str | None:
        """
        The emergency number ``dialled`` is (``911`` for ``911`` and, with
        ``outside_prefix = "9"``, ``9911``), or None.
        """
        if dialled in self.numbers:
            return dialled
        prefix = self.outside_prefix
        if prefix and dialled.startswith(prefix) and dialled[len(prefix) :] in self.numbers:
            return dialled[len(prefix) :]
        return None


def _want(path: str, ok: bool, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"emergency.{path}", f"must be {expected}, got {value!r}")


def _strings(
    values: dict[str, Any], key: str, pattern: re.Pattern[str], expected: str
) -> tuple[str, ...]:
    value = values.get(key, [])
    ok = isinstance(value, list) and len(value) <= _MAX_LIST
    _want(key, ok, f"a list of at most {_MAX_LIST} {expected}", value)
    for item in value:
        _want(key, isinstance(item, str) and bool(pattern.match(item)), f"a list of {expected}",
              item)  # fmt: skip
    if len(set(value)) != len(value):
        raise ConfigError(f"emergency.{key}", "lists an entry twice")
    return tuple(value)


def parse_emergency(table: Mapping[str, object]) -> EmergencyConfig:
    """
    ``[emergency]`` from its TOML table.

    Raises:
        ConfigError: an unknown key or a bad value, naming the key.
    """
    values: dict[str, Any] = dict(table)
    for key in values:
        if key not in _KEYS:
            raise ConfigError(f"emergency.{key}", f"unknown key (known: {', '.join(_KEYS)})")
    numbers = _strings(values, "numbers", _NUMBER, "numbers (1-15 ASCII digits)")
    if "numbers" in values and not numbers:
        raise ConfigError("emergency.numbers", "must name at least one number")
    numbers = numbers or _DEFAULT_NUMBERS
    tests = _strings(values, "test_numbers", _NUMBER, "numbers (1-15 ASCII digits)")
    tests = tests if "test_numbers" in values else tuple(n for n in ("933",) if n in numbers)
    for number in tests:
        if number not in numbers:
            raise ConfigError("emergency.test_numbers", f"{number!r} is not one of numbers")
    trunks = _strings(values, "trunks", _TRUNK, "trunk names")
    prefix = values.get("outside_prefix", "")
    _want("outside_prefix", isinstance(prefix, str) and bool(_PREFIX.match(prefix)),
          "0 to 4 ASCII digits", prefix)  # fmt: skip
    default = values.get("default_location", "")
    _want("default_location", isinstance(default, str), "a location name", default)
    if default:
        try:
            check_location_name(default)
        except CivicError as e:
            raise ConfigError("emergency.default_location", str(e)) from None
    reserve = values.get("reserve_calls", 0)
    _want("reserve_calls", type(reserve) is int and 0 <= reserve <= 1000,
          "an integer 0..1000", reserve)  # fmt: skip
    return EmergencyConfig(
        numbers=numbers, test_numbers=tests, trunks=trunks, outside_prefix=prefix,
        default_location=default, reserve_calls=reserve, notify=parse_notify(values),
    )  # fmt: skip
