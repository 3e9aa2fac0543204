"""
The auto-attendant (IVR) as a feature plugin, ``ivr`` (ADR 0026), enabled by
default and inert without ``[[ivr]]`` menus (L{warden.features.ivr_config}).

A call reaches menu ``main`` as the local application ``ivr:main``: from an
inbound route (``[[routes.inbound]] to = "ivr:main"``), from a phone dialling
the menu's ``number``, or as another menu's or a ring group's destination.
Warden answers (ADR 0022), plays the menu's prompt and reads DTMF (RFC 4733
events or SIP INFO):

- a menu key (one digit, ``digits``) sends the caller to its destination;
- with ``direct_dial`` (the default) the caller may instead type an
  extension's number: after the first digit, digits are read until ``#``,
  ``digit_timeout`` seconds without one, or 16 digits; one digit is a menu
  key, several an extension number, which must be an enabled extension;
- nothing typed within ``timeout`` seconds, or a wrong choice ("That is not a
  valid choice."), plays the prompt again, ``max_attempts`` prompts in all;
  then the caller goes to ``timeout_to`` (nothing typed the last time) or
  ``invalid_to``.

A destination is routed as if the caller had dialled it (L{warden.sip.handover}):
an extension rings (and goes to voicemail when unanswered, as any call),
``ringgroup:sales`` rings the group, ``voicemail:1001`` and ``ivr:other`` run
on the same answered call, ``hangup`` says goodbye and hangs up. A call visits
at most L{MAX_VISITS} menus, so two menus sending callers to each other end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from warden.digits import is_digits
from warden.errors import ConfigError
from warden.features.ivr_config import IvrConfig, IvrMenu, parse_ivr
from warden.features.voicemail import prompt
from warden.interfaces import ICallHook, IDirectory, ILocalApplication, IWardenPlugin
from warden.sip.hooks import CallAttempt, CallHookBase
from warden.sip.local import LocalCall

if TYPE_CHECKING:
    from warden.plugin import BuildContext

__all__ = ["MAX_DIGITS", "MAX_VISITS", "IvrPlugin", "choose", "plugin"]

#: The longest number a caller may type.
MAX_DIGITS = 16
#: Menus one call may visit (``ivr:a`` sending to ``ivr:b`` and back).
MAX_VISITS = 10
#: Digits that stop the prompt.
ANY_DIGIT = "0123456789*#"
#: The shipped prompt of a menu without its own.
DEFAULT_PROMPT = "ivr-welcome"

OUTCOMES = ("choice", "extension", "timeout", "invalid")
CHOICES = Counter(
    "warden_ivr_outcomes_total",
    "Callers leaving an auto-attendant menu, by how they left it",
    ["outcome"],
)
for _outcome in OUTCOMES:
    CHOICES.labels(_outcome)


async def choose(
    menu: IvrMenu, call: LocalCall, is_extension: Callable[[str], Deferred[bool]]
) -> tuple[str, str]:
    """
    Run ``menu`` on ``call``: the destination the caller chose and how
    (L{OUTCOMES}). Fails with L{warden.rtp.endpoint.HungUp} when the caller
    hangs up.
    """
    endpoint = call.endpoint
    greeting = menu.prompt if menu.prompt is not None else prompt(DEFAULT_PROMPT)
    last = "timeout"
    endpoint.clear_digits()
    for attempt in range(menu.max_attempts):
        # Digits typed ahead (during "not a valid choice") answer the next prompt.
        first = ""
        if attempt and last == "invalid":
            first = await endpoint.play(prompt("invalid"), interrupt=ANY_DIGIT)
        if not first:
            first = await endpoint.play(greeting, interrupt=ANY_DIGIT)
        if not first:
            first = await endpoint.next_digit(menu.timeout)
        if not first or first == "#":
            last = "timeout"
            continue
        typed = first
        if menu.direct_dial and first != "*":
            typed += await endpoint.read_digits(MAX_DIGITS - 1, menu.digit_timeout)
        if len(typed) == 1 and typed in menu.digits:
            return menu.digits[typed], "choice"
        if menu.direct_dial and is_digits(typed) and await is_extension(typed):
            return typed, "extension"
        last = "invalid"
    if last == "timeout":
        return menu.timeout_to, "timeout"
    return menu.invalid_to, "invalid"


@implementer(IPlugin, IWardenPlugin, ICallHook, ILocalApplication)
class IvrPlugin(CallHookBase):
    """Auto-attendant menus (``[[ivr]]``), run as the local application ``ivr``."""

    name = "ivr"
    description = "Auto-attendant menus: prompt, DTMF choices, direct dial ([[ivr]], ivr:NAME)"
    sections: tuple[str, ...] = ("ivr",)
    array_sections: tuple[str, ...] = ("ivr",)
    needs: tuple[str, ...] = ("directory", "sip")
    provides: tuple[str, ...] = ("ivr",)
    applications: tuple[str, ...] = ("ivr",)

    log = Logger()

    def __init__(self) -> None:
        self.config = IvrConfig()
        self.directory: IDirectory | None = None
        #: Menus visited by each call being sent from menu to menu.
        self._visits: dict[str, int] = {}

    def parse_section(self, name: str, table: object, filename: str | None) -> object:
        """``[[ivr]]``."""
        return parse_ivr(table)

    def make(self, context: BuildContext) -> None:
        """The menus, checked against the local applications and ring groups enabled."""
        from warden.sip.service import SipService

        config = context.config.plugin_sections.get("ivr", IvrConfig())
        assert isinstance(config, IvrConfig)
        calls = context.need("sip", SipService).calls
        assert calls is not None
        groups = getattr(context.optional("callfeatures", object), "groups", None)
        check_destinations(
            config,
            lambda target: calls.local_target(target) is not None,
            None if groups is None else lambda name: groups.by_name(name) is not None,
        )
        self.use(config, context.need("directory", IDirectory))

    def use(self, config: IvrConfig, directory: IDirectory) -> None:
        """Run these menus with ``directory`` (tests; L{make} gives the real ones)."""
        self.config, self.directory = config, directory

    # -- call hooks ---------------------------------------------------------------------

    def before_routing(self, attempt: CallAttempt) -> None:
        """
        A menu's ``number`` dialled: the menu answers (unless a ring group,
        listed earlier, took the number; a menu's number wins over an
        extension's).
        """
        menu = self.config.by_number(attempt.dialled) if attempt.plan is None else None
        if menu is not None:
            attempt.dialled = f"ivr:{menu.name}"
            attempt.marks.add("ivr")

    # -- the local application ----------------------------------------------------------

    def run_application(self, name: str, argument: str, call: LocalCall) -> Deferred[None]:
        """``ivr:<menu>``: play the menu, then send the caller on (or hang up)."""
        return Deferred.fromCoroutine(self._run(argument, call))

    async def _run(self, name: str, call: LocalCall) -> None:
        menu = self.config.by_name(name)
        visits = self._visits.pop(call.call_id, 0) + 1
        if menu is None or visits > MAX_VISITS:
            self.log.warn(
                "Call {call_id}: no IVR menu {name} (or too many menus visited)",
                call_id=call.call_id, name=name,
            )  # fmt: skip
            await call.endpoint.play(prompt("goodbye"))
            return
        destination, outcome = await choose(menu, call, self._is_extension)
        CHOICES.labels(outcome).inc()
        self.log.info(
            "Call {call_id} leaves IVR {menu} for {destination} ({outcome})",
            call_id=call.call_id, menu=name, destination=destination, outcome=outcome,
        )  # fmt: skip
        if destination == "hangup":
            await call.endpoint.play(prompt("goodbye"))
            return
        if destination.startswith("ivr:"):
            self._visits[call.call_id] = visits
            if len(self._visits) > 10_000:  # calls that hung up between two menus
                self._visits.clear()
        call.transfer(destination)

    def _is_extension(self, number: str) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._extension_exists(number))

    async def _extension_exists(self, number: str) -> bool:
        if self.directory is None:
            return False
        extension = await self.directory.get_extension(number)
        return extension is not None and extension.enabled


def check_destinations(
    config: IvrConfig,
    application_runs: Callable[[str], bool],
    group_exists: Callable[[str], bool] | None,
) -> None:
    """
    Every destination naming an application names one that runs
    (``voicemail:`` needs the voicemail plugin) and every ``ringgroup:`` an
    existing group.

    Raises:
        ConfigError: naming ``ivr[i].key``.
    """
    for i, menu in enumerate(config.menus):
        for key, destination in menu.destinations():
            kind, colon, argument = destination.partition(":")
            if not colon or kind == "ivr":
                continue
            if kind == "ringgroup":
                if group_exists is None or not group_exists(argument):
                    raise ConfigError(
                        f"ivr[{i}].{key}", f"no ring group is named {argument!r} ([[ringgroups]])"
                    )
            elif not application_runs(destination):
                raise ConfigError(
                    f"ivr[{i}].{key}", f"{kind}: destinations need the {kind} plugin enabled"
                )


plugin = IvrPlugin()
