"""
``[[ivr]]``: the auto-attendant menus of the ``ivr`` plugin (ADR 0026),
parsed and checked.

::

    [[ivr]]
    name = "main"                 # "ivr:main" names it (inbound routes, destinations)
    number = "500"                # optional: phones dial it to reach the menu
    prompt = "/etc/warden/main.wav"   # optional: 8 kHz mono 16-bit WAV; default: shipped
    timeout = 5                   # seconds to wait for the first digit
    digit_timeout = 2             # seconds between the digits of an extension number
    max_attempts = 3              # prompts played before timeout_to / invalid_to
    direct_dial = true            # an extension number typed reaches that extension
    timeout_to = "1000"           # nobody pressed anything
    invalid_to = "hangup"         # only wrong choices
    [ivr.digits]
    "1" = "ringgroup:sales"
    "2" = "1001"

A destination is a number routed as if the caller dialled it (an extension,
a ring group's number), ``ringgroup:<name>``, ``voicemail:<mailbox>``,
``ivr:<name>`` (another menu) or ``hangup``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from warden.errors import ConfigError
from warden.rtp import g711

__all__ = ["DESTINATION_KINDS", "IvrConfig", "IvrMenu", "parse_ivr"]

#: The application kinds a destination may name.
DESTINATION_KINDS = ("ringgroup", "voicemail", "ivr")
#: Menus at most; digits of a menu key.
MAX_MENUS = 64
#: The longest custom prompt, in seconds.
MAX_PROMPT_SECONDS = 300.0
_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_NUMBER = re.compile(r"\+?[0-9]{1,32}")
_ARGUMENT = re.compile(r"[0-9A-Za-z._-]{1,64}")
_KEYS = (
    "name", "number", "prompt", "timeout", "digit_timeout", "max_attempts", "direct_dial",
    "timeout_to", "invalid_to", "digits",
)  # fmt: skip
#: The keys a caller may press for a menu choice (``#`` ends typing).
MENU_KEYS = "0123456789*"


@attrs.frozen
class IvrMenu:
    """
    One auto-attendant menu.

    Attributes:
        name: ``ivr:<name>`` names it.
        number: the number phones dial to reach it ("" for none).
        prompt: the prompt's 16-bit 8 kHz PCM; None: the shipped one.
        prompt_file: where ``prompt`` came from ("" for the shipped one).
        timeout: seconds to wait for the first digit after the prompt.
        digit_timeout: seconds to wait for each further digit.
        max_attempts: prompts played before giving up.
        direct_dial: several digits typed name an extension.
        timeout_to: where a caller who pressed nothing goes.
        invalid_to: where a caller whose last choice was invalid goes.
        digits: the destination of each menu key.
    """

    name: str
    number: str = ""
    prompt: bytes | None = attrs.field(default=None, repr=False)
    prompt_file: str = ""
    timeout: float = 5.0
    digit_timeout: float = 2.0
    max_attempts: int = 3
    direct_dial: bool = True
    timeout_to: str = "hangup"
    invalid_to: str = "hangup"
    digits: Mapping[str, str] = attrs.field(factory=dict)

    def destinations(self) -> list[tuple[str, str]]:
        """``(key, destination)`` for every destination of the menu."""
        pairs = [("timeout_to", self.timeout_to), ("invalid_to", self.invalid_to)]
        return pairs + [(f'digits."{k}"', v) for k, v in sorted(self.digits.items())]


@attrs.frozen
class IvrConfig:
    """``[[ivr]]``: the menus, by name and by number."""

    menus: tuple[IvrMenu, ...] = ()

    def by_name(self, name: str) -> IvrMenu | None:
        """The menu named ``name``."""
        return next((m for m in self.menus if m.name == name), None)

    def by_number(self, number: str) -> IvrMenu | None:
        """The menu dialled as ``number``."""
        return next((m for m in self.menus if m.number and m.number == number), None)


def destination_problem(value: object) -> str:
    """What is wrong with destination ``value``; "" when nothing."""
    if not isinstance(value, str):
        return f"expected a destination string, got {value!r}"[:200]
    if value == "hangup" or _NUMBER.fullmatch(value):
        return ""
    kind, colon, argument = value.partition(":")
    if not colon:
        return (
            f"unknown destination {value!r}: expected a number, ringgroup:NAME,"
            " voicemail:MAILBOX, ivr:NAME or hangup"
        )[:200]
    if kind not in DESTINATION_KINDS:
        known = ", ".join(f"{k}:" for k in DESTINATION_KINDS)
        return f"unknown destination kind {kind!r} (known: {known}, a number or hangup)"[:200]
    if not _ARGUMENT.fullmatch(argument):
        return f"{value!r} names no {kind} (letters, digits, '.', '_' or '-')"[:200]
    if kind == "voicemail" and not argument.isdigit():
        return f"{value!r}: a mailbox is an extension number"
    return ""


def _want(path: str, ok: bool, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(path, f"expected {expected}, got {value!r}"[:200])


def _seconds(path: str, value: object, low: float, high: float) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    _want(path, ok, f"seconds from {low:g} to {high:g}", value)
    assert isinstance(value, (int, float))
    return float(value)


def _prompt(path: str, value: object) -> bytes:
    _want(path, isinstance(value, str) and bool(value), "the path of a WAV file", value)
    assert isinstance(value, str)
    try:
        data = Path(value).read_bytes()
    except OSError as e:
        raise ConfigError(path, f"cannot read {value}: {e.strerror or e}") from None
    try:
        return g711.read_wav(data, MAX_PROMPT_SECONDS)
    except g711.WavError as e:
        raise ConfigError(path, f"{value}: {e}") from None


def _digits(path: str, value: object) -> dict[str, str]:
    _want(path, isinstance(value, dict), 'a table of keys ("1" = "1001")', value)
    assert isinstance(value, dict)
    digits: dict[str, str] = {}
    for key, destination in value.items():
        if not (len(key) == 1 and key in MENU_KEYS):
            raise ConfigError(
                f'{path}."{key}"'[:200], "a menu key is one of 0-9 or * (# ends typing)"
            )
        problem = destination_problem(destination)
        if problem or destination == "":
            raise ConfigError(f'{path}."{key}"', problem or "empty destination")
        digits[key] = destination
    return digits


def _menu(path: str, table: Mapping[str, Any]) -> IvrMenu:
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"{path}.{key}"[:200], f"unknown key (known: {', '.join(_KEYS)})")
    name = table.get("name")
    _want(f"{path}.name", isinstance(name, str) and bool(_NAME.fullmatch(name)),
          "a name: a-z then a-z, 0-9 or '-' (at most 32)", name)  # fmt: skip
    assert isinstance(name, str)
    number = table.get("number", "")
    _want(f"{path}.number", isinstance(number, str)
          and (number == "" or bool(re.fullmatch(r"[0-9]{1,32}", number))),
          "a number of 1 to 32 digits, as a string", number)  # fmt: skip
    prompt = _prompt(f"{path}.prompt", table["prompt"]) if "prompt" in table else None
    attempts = table.get("max_attempts", 3)
    _want(f"{path}.max_attempts", isinstance(attempts, int) and not isinstance(attempts, bool)
          and 1 <= attempts <= 10, "an integer from 1 to 10", attempts)  # fmt: skip
    direct = table.get("direct_dial", True)
    _want(f"{path}.direct_dial", isinstance(direct, bool), "true or false", direct)
    targets = {}
    for key in ("timeout_to", "invalid_to"):
        value = table.get(key, "hangup")
        problem = destination_problem(value)
        if problem:
            raise ConfigError(f"{path}.{key}", problem)
        targets[key] = value
    return IvrMenu(
        name=name, number=number, prompt=prompt, prompt_file=str(table.get("prompt", "")),
        timeout=_seconds(f"{path}.timeout", table.get("timeout", 5), 1, 60),
        digit_timeout=_seconds(f"{path}.digit_timeout", table.get("digit_timeout", 2), 0.5, 10),
        max_attempts=attempts, direct_dial=direct, digits=_digits(f"{path}.digits",
        table.get("digits", {})), **targets,
    )  # fmt: skip


def parse_ivr(value: object) -> IvrConfig:
    """
    ``[[ivr]]`` (an array of tables) into L{IvrConfig}; prompt files are read.

    Raises:
        ConfigError: naming ``ivr[i].key`` and the problem.
    """
    if not isinstance(value, list):
        raise ConfigError("ivr", "must be an array of tables ([[ivr]])")
    if len(value) > MAX_MENUS:
        raise ConfigError("ivr", f"at most {MAX_MENUS} menus")
    menus: list[IvrMenu] = []
    for i, table in enumerate(value):
        if not isinstance(table, dict):
            raise ConfigError(f"ivr[{i}]", "must be a table")
        menu = _menu(f"ivr[{i}]", table)
        for key in ("name", "number"):
            if getattr(menu, key) and any(getattr(m, key) == getattr(menu, key) for m in menus):
                raise ConfigError(
                    f"ivr[{i}].{key}", f"another menu has {key} {getattr(menu, key)!r}"
                )
        menus.append(menu)
    names = {m.name for m in menus}
    for i, menu in enumerate(menus):
        for key, destination in menu.destinations():
            kind, _, argument = destination.partition(":")
            if kind == "ivr" and argument not in names:
                known = ", ".join(sorted(names))
                raise ConfigError(
                    f"ivr[{i}].{key}", f"no menu is named {argument!r} (known: {known})"
                )
    return IvrConfig(tuple(menus))
