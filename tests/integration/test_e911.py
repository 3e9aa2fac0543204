"""
Emergency calls on the wire (the e911 plugin, ADR 0027): a real ``twistd
warden`` with its default plugins, SIPp phones and SIPp as the emergency
trunk (127.0.0.2), locations set with ``wardenctl``.

- 911 and 9911 from an extension in do-not-disturb with a forward set (by
  ``*78`` and ``*72``) reach the emergency trunk; each INVITE the trunk
  received is multipart with the SDP and a PIDF-LO whose civic address is
  the extension's location, a ``Geolocation`` header pointing at the PIDF-LO
  part's Content-ID, and the callback number in P-Asserted-Identity; the
  call records say ``emergency``.
- A phone with no location of its own: its network's location, else the
  site default, counted in ``warden_emergency_default_location_total``.
- A draining node (``POST /api/v1/drain``) refuses an ordinary call with 503
  but places a 911 call (Kari's Law).
- A full trunk (``max_calls = 1``): the ordinary call on it is dropped (BYE
  to both legs) and the 911 call goes out.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.clients import poll_async
from tests.integration.harness import (
    LOCALHOST,
    free_media_port,
    free_port,
    poll,
    provision,
    sipp_command,
    spawn,
    wardenctl,
)
from tests.integration.test_call_features import BENCH_SCENARIOS, SCENARIOS, CallFeatureTestCase
from warden.features.pidf import CIVIC_NS
from warden.sip.message import Request
from warden.sip.parser import parse_datagram

ITSP_HOST = "127.0.0.2"
CALLBACK = "15551230000"
FLOOR2 = {"country": "US", "A1": "CA", "A3": "San Jose", "RD": "Main St", "HNO": "100",
          "FLR": "2", "ROOM": "201"}  # fmt: skip
LOBBY = {"country": "US", "A1": "CA", "A3": "San Jose", "LOC": "Lobby"}
WAREHOUSE = {"country": "US", "A1": "CA", "A3": "Milpitas", "BLD": "W"}
_RECEIVED = re.compile(
    rb"^-{20,} [^\n]*\n(?:UDP|TCP) message received \[(\d+)\] bytes :\n\n", re.M
)


def civic_text(civic: dict[str, str]) -> str:
    """``--civic`` of a civic address."""
    return ",".join(f"{k}={v}" for k, v in civic.items())


def received(run_dir: Path) -> list[Request]:
    """The requests SIPp's message trace in ``run_dir`` shows it received, parsed."""
    found: list[Request] = []
    for path in run_dir.glob("*_messages.log"):
        data = path.read_bytes()
        for match in _RECEIVED.finditer(data):
            raw = data[match.end() : match.end() + int(match.group(1))]
            message = parse_datagram(raw)
            if isinstance(message, Request):
                found.append(message)
    return found


def location_of(invite: Request) -> tuple[dict[str, str], dict[str, Any]]:
    """
    The civic address of the INVITE's PIDF-LO and facts to check: its body's
    part types, the Content-ID the Geolocation header points at.
    """
    head = f"Content-Type: {invite.get('Content-Type')}\r\n\r\n".encode()
    body = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head + invite.body)
    assert body.is_multipart(), invite.get("Content-Type")
    parts = {part.get_content_type(): part for part in body.get_payload()}
    pidf = parts["application/pidf+xml"]
    root = ET.fromstring(pidf.get_payload(decode=True))
    address = root.find(f".//{{{CIVIC_NS}}}civicAddress")
    assert address is not None
    civic = {child.tag.split("}")[1]: child.text or "" for child in address}
    facts = {
        "types": list(parts),
        "content_id": pidf["Content-ID"],
        "geolocation": invite.get("Geolocation"),
        "sdp": parts["application/sdp"].get_payload(decode=True),
    }
    return civic, facts


class EmergencyCallTests(CallFeatureTestCase):
    """Extensions 2000-2003, trunk itsp (SIPp) for emergency and outside calls."""

    async def start(self, calls: int, max_calls: int = 0) -> Any:
        """Warden with the trunk and ``[emergency]``; the trunk's SIPp taking ``calls``."""
        trunk_port = free_port()
        self.trunk_dir = self.workdir()
        # Warden's defaults otherwise (voicemail on): nothing may divert a 911 call.
        self.warden = await self.start_warden({
            "trunks": [{"name": "itsp", "host": ITSP_HOST, "port": trunk_port,
                        "register": False, "from_number": CALLBACK, "max_calls": max_calls}],
            "routes.outbound": [{"pattern": "_9NXXNXXXXXX", "strip": 1, "prefix": "1",
                                 "trunks": ["itsp"]}],
            "emergency": {"trunks": ["itsp"], "outside_prefix": "9",
                          "default_location": "hq-lobby"},
        })  # fmt: skip
        self.users = await provision(self.warden.config_path, 4, first=2000)
        for name, civic in (("hq-floor2", FLOOR2), ("hq-lobby", LOBBY)):
            added = await wardenctl(
                self.warden.config_path, "location", "add", name, "--civic", civic_text(civic)
            )
            self.assertEqual(added.code, 0, added.stderr)
        args = [
            "-sf", str(BENCH_SCENARIOS / "call_uas.xml"), "-i", ITSP_HOST, "-p", str(trunk_port),
            "-mp", str(free_media_port()), "-m", str(calls), "-trace_err", "-trace_msg",
        ]  # fmt: skip
        trunk, process = spawn(sipp_command(args), self.trunk_dir)
        self.addCleanup(lambda: process.signalProcess("KILL") if trunk.running else None)
        return trunk

    async def ctl(self, *argv: str) -> str:
        """Run wardenctl; it must succeed; its output."""
        result = await wardenctl(self.warden.config_path, *argv)
        self.assertEqual(result.code, 0, result.stderr)
        return str(result.stdout)

    async def metric(self, name: str) -> float:
        """A counter's value as the node's /metrics says (0 when absent)."""
        if getattr(self, "_admin", None) is None:
            self._admin = await self.admin()
        text = (await self._admin.request("GET", "/metrics")).body.decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        return 0.0

    def invites(self) -> list[Request]:
        """The INVITEs the trunk received, in order."""
        return [r for r in received(self.trunk_dir) if r.method == "INVITE"]

    async def emergency_records(self, caller: str) -> list[dict[str, Any]]:
        """``caller``'s call records marked emergency (waiting for them)."""
        found: list[dict[str, Any]] = []

        async def written() -> bool:
            listed = await wardenctl(self.warden.config_path, "cdr", "list", "--json")
            records = json.loads(listed.stdout or "[]")
            found[:] = [r for r in records if r["caller"] == caller and r["emergency"]]
            return len(found) >= 2

        await poll_async(written, 30)
        return found

    async def test_911_and_9911_past_dnd_and_forward(self) -> None:
        """
        2000 (DND by *78, forward by *72 to 2001, location hq-floor2) dials
        911 and 9911: both reach the trunk as 911 with its PIDF-LO, the
        Geolocation header and the callback number; both records say emergency.
        """
        trunk = await self.start(calls=2)
        self.assertEqual(await self.refused("2000", "*78"), "SIP/2.0 480 Do Not Disturb On")
        status = await self.refused("2000", "*722001")
        self.assertEqual(status, "SIP/2.0 480 Call Forwarding On 2001")
        await self.ctl("extension", "set", "2000", "--location", "hq-floor2")
        await self.answered("2000", "911")
        await self.answered("2000", "9911")
        await self.finished(trunk)
        invites = self.invites()
        self.assertEqual([i.uri.user for i in invites], ["911", "911"])
        for invite in invites:
            civic, facts = location_of(invite)
            self.assertEqual(civic, FLOOR2)
            self.assertEqual(facts["types"], ["application/sdp", "application/pidf+xml"])
            self.assertIn(b"m=audio", facts["sdp"])
            geolocation = facts["geolocation"] or ""
            self.assertTrue(geolocation.startswith("<cid:"), geolocation)
            self.assertEqual(f"<{geolocation[5:-1]}>", facts["content_id"])
            self.assertIn(f"sip:{CALLBACK}@", invite.get("P-Asserted-Identity") or "")
            self.assertEqual(invite.get("Priority"), "emergency")
        records = await self.emergency_records("2000")
        self.assertEqual(sorted(r["dialled"] for r in records), ["911", "9911"])

    async def test_network_then_default_location(self) -> None:
        """
        2001 has no location: with 127.0.0.0/8 mapped, that network's location
        goes out; unmapped, the default does, and the alert metric counts it.
        """
        trunk = await self.start(calls=2)
        await self.ctl("location", "add", "warehouse", "--civic", civic_text(WAREHOUSE))
        await self.ctl("location", "map", "127.0.0.0/8", "warehouse")
        await self.answered("2001", "933")
        await self.ctl("location", "unmap", "127.0.0.0/8")
        before = await self.metric("warden_emergency_default_location_total")
        await self.answered("2001", "911")
        await self.finished(trunk)
        after = await self.metric("warden_emergency_default_location_total")
        self.assertEqual(after - before, 1)
        first, second = self.invites()
        self.assertEqual(location_of(first)[0], WAREHOUSE)
        self.assertEqual(location_of(second)[0], LOBBY)
        self.assertIn("ALERT: emergency call", self.warden.log_text())

    async def test_911_on_a_draining_node(self) -> None:
        """Draining: 2000's call to 2001 is refused with 503, its 911 call goes out."""
        trunk = await self.start(calls=1)
        client = await self.admin()
        drain = await client.request("POST", "/api/v1/drain", {"timeout": 60})
        self.assertEqual(drain.status, 202, drain.body)
        self.assertTrue(drain.json()["draining"])
        self.assertEqual(await self.refused("2000", "2001"), "SIP/2.0 503 Service Unavailable")
        await self.answered("2000", "911")
        await self.finished(trunk)
        self.assertEqual([i.uri.user for i in self.invites()], ["911"])

    async def test_full_trunk_drops_newest_call(self) -> None:
        """
        The trunk carries one call: 2001's answered outside call is dropped
        (BYE to 2001's phone and to the trunk) when 2000 dials 911, which
        then goes out.
        """
        trunk = await self.start(calls=2, max_calls=1)
        run_dir = self.workdir()
        args = [
            f"{self.warden.address[0]}:{self.warden.address[1]}",
            "-sf", str(SCENARIOS / "answered_until_bye_uac.xml"),
            "-inf", str(self.injection("2001", "95552345678")),
            "-i", LOCALHOST, "-p", str(free_port()), "-mp", str(free_media_port()), "-m", "1",
            "-timeout", "90s", "-timeout_error", "-trace_err", "-trace_msg",
        ]  # fmt: skip
        outside, process = spawn(sipp_command(args), run_dir)
        self.addCleanup(lambda: process.signalProcess("KILL") if outside.running else None)

        async def answered() -> bool:
            listed = await wardenctl(self.warden.config_path, "calls", "--json")
            return any(c.get("state") == "answered" for c in json.loads(listed.stdout or "[]"))

        self.assertTrue(await poll_async(answered, 30), self.warden.log_tail())
        await self.answered("2000", "911")
        await poll(lambda: not outside.running, 30)
        self.assertEqual(outside.code, 0, outside.output())  # it got Warden's BYE
        await self.finished(trunk)
        byes = [r for r in received(self.trunk_dir) if r.method == "BYE"]
        first, emergency = self.invites()
        self.assertEqual(first.uri.user, "15552345678")
        self.assertEqual(emergency.uri.user, "911")
        self.assertIn(first.call_id, [b.call_id for b in byes])
        self.assertIn("dropped for an emergency call", self.warden.log_text())
