"""
Calls that ring several extensions: a ring group (ADR 0023).

A call hook sets L{warden.sip.hooks.CallAttempt.plan} before routing to a
L{RingPlan}: steps of extension numbers, each step's members rung at once
(every binding of each, forked in parallel) for the call's ring timeout
(L{warden.sip.hooks.CallAttempt.ring_timeout}). A simultaneous group is one
step with every member; a hunt group is one step per member, in order.

L{GroupRinger} is the B2BUA's part:

- a step's members are routed like dialled extensions; one that cannot be
  rung (unknown, not registered, at its call limit, the caller itself) is
  left out, and a step left empty is skipped;
- when every fork of a step failed or its ring timer fired, the next step
  rings (the call keeps ringing); after the last, the call's hooks are asked
  as for any unanswered call (``routing_failed``: the group's timeout
  destination);
- the member whose phone answers becomes the call's callee (live calls,
  the call record, per-extension call counts).

Until a member answers, the callee is the group itself (its number and name).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from warden.model import Binding, Extension, Route

if TYPE_CHECKING:  # pragma: no cover
    from warden.sip.b2bua import CallController
    from warden.sip.call import Call
    from warden.sip.hooks import CallAttempt

__all__ = ["GroupRinger", "RingPlan"]

_log = Logger()


@attrs.define(eq=False)
class RingPlan:
    """
    The extensions a call rings, step after step.

    Attributes:
        number: the group's number (the callee until a member answers).
        name: the group's name.
        steps: the extension numbers of each step, rung at once.
        index: the step ringing.
        members: the extension of each member rung so far, by number.
    """

    number: str
    name: str
    steps: tuple[tuple[str, ...], ...]
    index: int = 0
    members: dict[str, Extension] = attrs.field(factory=dict)

    def party(self) -> Extension:
        """The callee standing for the group before a member answers."""
        return Extension(number=self.number, name=self.name, realm="", ha1_md5="", ha1_sha256="")

    @property
    def last_step(self) -> bool:
        """Whether the step ringing is the last one."""
        return self.index + 1 >= len(self.steps)


class GroupRinger:
    """
    Rings the steps of calls with a L{RingPlan}.

    Args:
        controller: the B2BUA (routing, limits, parties, redirects).
    """

    def __init__(self, controller: CallController) -> None:
        self.controller = controller

    async def route(self, attempt: CallAttempt) -> Route:
        """
        The route of the first step from the plan's current one that has a
        phone to ring (the plan moves to it); 480 when none has.
        """
        plan = attempt.plan
        assert plan is not None
        while plan.index < len(plan.steps):
            bindings = await self._step(plan, attempt.caller)
            if bindings:
                return Route(0, "", plan.party(), bindings)
            plan.index += 1
        plan.index = len(plan.steps) - 1
        return Route(480, "Temporarily Unavailable", plan.party())

    async def _step(self, plan: RingPlan, caller: Extension) -> tuple[Binding, ...]:
        found: list[Binding] = []
        for number in plan.steps[plan.index]:
            if number == caller.number or self.controller.at_limit(number):
                continue
            route = await self.controller.router.route(number, caller)
            if route.status or route.extension is None:
                continue
            plan.members[number] = route.extension
            found.extend(b for b in route.bindings if b not in found)
        return tuple(found)

    def next_step(self, call: Call) -> bool:
        """
        Every fork of the step failed or it rang out: ring the next step (True),
        or False after the last one.
        """
        plan = call.attempt.plan
        if plan is None or plan.last_step:
            return False
        plan.index += 1
        d = defer.Deferred.fromCoroutine(self._ring_next(call))
        d.addErrback(self._failed, call)
        return True

    async def _ring_next(self, call: Call) -> None:
        from warden.sip.call import CallState

        route = await self.route(call.attempt)
        if call.state is not CallState.RINGING:
            return  # cancelled meanwhile
        if route.status:
            if not self.controller.redirect_failed(call, 480, None, "no answer"):
                call.fail(480, "Temporarily Unavailable", "no answer")
            return
        call.restart(route.bindings)

    def _failed(self, failure: Failure, call: Call) -> None:
        _log.failure(
            "Could not ring the next members for {call_id}", failure, call_id=call.call_id
        )
        call.fail(500, "Server Internal Error", "ring group failed")

    def answered(self, call: Call) -> None:
        """The member whose phone answered becomes the callee."""
        plan = call.attempt.plan
        winner = call.winner
        if plan is None or winner is None:
            return
        member = plan.members.get(winner.binding.aor)
        if member is not None:
            self.controller.change_party(call, "b", member)
