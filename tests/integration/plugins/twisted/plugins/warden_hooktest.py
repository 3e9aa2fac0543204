"""
A feature plugin for the call-hook tests, loaded the third-party way (this
``twisted/plugins/`` directory on the path): it writes every hook point it is
asked at to ``[hooktest] log`` (JSON lines, by the caller's Call-ID) and acts
on the number dialled:

- ``9403``: rejected before routing (403 "Barred by hooktest");
- ``8<number>``: redirected before routing to ``<number>``, marked ``forwarded``;
- ``9404`` (no such extension): redirected after the routing failure to
  ``[hooktest] callee``;
- every outgoing INVITE gets ``X-Hooktest: <marks>``;
- MESSAGE out of dialog is answered 200 with ``X-Hooktest: message``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import implementer

from warden.errors import SipError
from warden.interfaces import ICallHook, IWardenPlugin
from warden.model import CallRecord
from warden.plugin import BuildContext
from warden.sip.flow import Flow
from warden.sip.hooks import CallAttempt, CallHookBase, OutgoingLeg
from warden.sip.message import Request, Response, make_response


@implementer(IPlugin, IWardenPlugin, ICallHook)
class HookTest(CallHookBase):
    """Owns ``[hooktest]``: ``log`` (a file path) and ``callee`` (a number)."""

    name = "hooktest"
    description = "records every call hook point (integration tests)"
    sections = ("hooktest",)
    needs = ()
    provides = ()
    methods = ("MESSAGE",)

    def __init__(self) -> None:
        self.log_path = ""
        self.callee = ""

    def parse_section(
        self, name: str, table: Mapping[str, object], filename: str | None
    ) -> dict[str, str]:
        """Both keys are strings."""
        if set(table) - {"log", "callee"} or not all(isinstance(v, str) for v in table.values()):
            raise ValueError("only log and callee, both strings")
        return {str(k): str(v) for k, v in table.items()}

    def make(self, context: BuildContext) -> None:
        """Read the section; the hooks need nothing else."""
        section = context.config.plugin_sections.get("hooktest", {})
        assert isinstance(section, dict)
        self.log_path = section.get("log", "")
        self.callee = section.get("callee", "")

    def _write(self, point: str, call: str, **fields: object) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"point": point, "call": call, **fields}) + "\n")

    def incoming(self, request: Request, flow: Flow) -> Deferred[None] | None:
        """Record."""
        self._write("incoming", request.call_id)
        return None

    def before_routing(self, attempt: CallAttempt) -> Deferred[None] | None:
        """Reject 9403; redirect 8<number>; mark every call."""
        call = attempt.request.call_id
        self._write("before_routing", call, dialled=attempt.dialled)
        attempt.marks.add("hooktest")
        if attempt.dialled == "9403":
            raise SipError(403, "Barred by hooktest")
        if attempt.dialled.startswith("8"):
            attempt.dialled = attempt.dialled[1:]
            attempt.marks.add("forwarded")
        return defer.succeed(None)

    def routing_failed(
        self, attempt: CallAttempt, status: int, reason: str
    ) -> Deferred[str | None] | str | None:
        """Send 9404 to the configured callee."""
        self._write("routing_failed", attempt.request.call_id, status=status)
        return self.callee if attempt.dialled == "9404" else None

    def leg_built(self, attempt: CallAttempt, leg: OutgoingLeg) -> None:
        """Say which marks the call has."""
        self._write("leg_built", attempt.request.call_id)
        leg.add_header("X-Hooktest", ",".join(sorted(attempt.marks)))

    def answered(self, attempt: CallAttempt) -> None:
        """Record."""
        self._write("answered", attempt.request.call_id)

    def ended(self, attempt: CallAttempt, record: CallRecord) -> None:
        """Record the call record's fields."""
        self._write(
            "ended", attempt.request.call_id, disposition=record.disposition,
            callee=record.callee, dialled=record.dialled, marks=sorted(attempt.marks),
        )  # fmt: skip

    def handle_request(self, request: Request, flow: Flow) -> Deferred[Response]:
        """Answer MESSAGE."""
        self._write("message", request.call_id)
        return defer.succeed(
            make_response(request, 200, "OK", headers=[("X-Hooktest", "message")])
        )


hooktest = HookTest()
