"""
The admin API's resources (``/api/v1``): thin handlers that parse, call the
service objects built by ``warden.tap`` and return JSON.

Extensions (IDirectory), registrations (ILocationService), calls (the
CallController and ILiveCalls), CDRs (ICallRecordStore), the audit log, system
status and drain. Authentication endpoints are in L{warden.admin.api_auth}.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import io
import json
import re
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime

from warden import __version__, present
from warden.admin.http import ApiCall, Reply, Route, json_reply
from warden.digits import parse_decimal, parse_uint
from warden.errors import ApiError
from warden.interfaces import IAuditLog, ICallRecordStore, IDirectory, ILiveCalls, ILocationService
from warden.model import (
    MAX_RING_TIMEOUT,
    MIN_RING_TIMEOUT,
    Binding,
    Extension,
    ring_timeout_value,
)
from warden.store.credentials import (
    ALGORITHMS,
    FIPS_MD5_REFUSED,
    display_name_problem,
    generate_password,
    make_extension,
)
from warden.workerlink import ChannelError

NUMBER = r"[0-9]{1,32}"
CALL_ID = r"[A-Za-z0-9]{1,64}"
MAX_LIMIT = 1000
#: Seconds a sorted snapshot of the bindings serves ``GET /registrations`` pages.
SNAPSHOT_SECONDS = 1.0
_NAME_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")


@attrs.define
class ApiServices:
    """
    What the handlers work with, from the composition root.

    Attributes:
        clock: "now" for expiry and durations.
        directory, location, records, live, audit: the stores.
        realm: for new digest HA1 values.
        node_id: this node.
        calls: the CallController, or None when calls are off.
        drain: the drain controller.
        workers: with SIP workers, every worker through the supervisor
            (L{warden.admin.workers.PbxWorkers}); None: this process is the PBX.
        started_at: when the process started (clock time).
    """

    clock: IReactorTime
    directory: IDirectory
    location: ILocationService
    records: ICallRecordStore
    live: ILiveCalls
    audit: IAuditLog
    realm: str
    node_id: str
    calls: Any = None
    drain: Any = None
    workers: Any = None
    started_at: float = 0.0
    #: ``[security] fips``: new passwords get no MD5 HA1.
    fips: bool = False
    #: Whether the OpenSSL in use runs a FIPS provider (L{warden.fips}), for ``/status``.
    fips_provider_active: bool = False


def limit_of(query: dict[str, str], default: int = 100) -> int:
    """``limit`` from the query: 1..1000."""
    text = query.get("limit")
    if text is None:
        return default
    limit = parse_uint(text, MAX_LIMIT)
    if limit is None or limit < 1:
        raise ApiError(400, "invalid_parameter", f"limit must be 1..{MAX_LIMIT}")
    return limit


def time_of(query: dict[str, str], name: str, now: float) -> float | None:
    """A time parameter: ISO-8601, epoch seconds, or a time ago (``30m``)."""
    text = query.get(name)
    if text is None:
        return None
    value = parse_decimal(text, 1e11)
    if value is not None:
        return value
    try:
        return present.parse_when(text, now)
    except (ValueError, OverflowError):
        raise ApiError(400, "invalid_parameter", f"{name}: not a time") from None


def encode_cursor(value: Any) -> str:
    """An opaque paging cursor."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(text: str, check: Callable[[Any], bool]) -> Any:
    """The value of a cursor from L{encode_cursor}; 400 when it is not one."""
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", "not a cursor from this API") from None
    if not check(value):
        raise ApiError(400, "invalid_cursor", "not a cursor from this API")
    return value


# -- extensions ------------------------------------------------------------------


def extension_json(extension: Extension) -> dict[str, Any]:
    """An extension as the API shows it: never its HA1 values."""
    return {
        "number": extension.number,
        "name": extension.name,
        "enabled": extension.enabled,
        "qualify": extension.qualify,
        "algorithms": list(extension.algorithms),
        "ring_timeout": extension.ring_timeout or None,
    }


def _name(value: Any) -> str:
    problem = display_name_problem(value)
    if problem is not None:
        raise ApiError(400, "invalid_field", f"name: {problem}")
    return str(value)


def _algorithms(value: Any, fips: bool) -> tuple[str, ...]:
    if not all(isinstance(a, str) and a in ALGORITHMS for a in value) or len(set(value)) != len(
        value
    ):
        raise ApiError(400, "invalid_field", f"algorithms: distinct values from {ALGORITHMS}")
    if fips and "MD5" in value:
        raise ApiError(400, "invalid_field", f"algorithms: {FIPS_MD5_REFUSED}")
    return tuple(value)


def _password(value: Any) -> str:
    if not 8 <= len(value) <= 128 or _NAME_FORBIDDEN.search(value):
        raise ApiError(400, "invalid_field", "password: 8..128 characters, no control ones")
    return str(value)


def _ring_timeout(value: Any) -> float:
    """``ring_timeout``: seconds, 1 to 600, or null (0) for the default."""
    number = 0.0 if value is None else ring_timeout_value(value)
    if number < 0:
        raise ApiError(
            400, "invalid_field",
            f"ring_timeout: seconds from {MIN_RING_TIMEOUT:g} to {MAX_RING_TIMEOUT:g},"
            " or null (or 0) for the default",
        )  # fmt: skip
    return number


_EXTENSION_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "enabled": bool, "qualify": bool, "algorithms": list,
    "ring_timeout": (int, float, type(None)),
}  # fmt: skip


class ExtensionsApi:
    """``/extensions``: list, create, read, change, delete, reset the SIP password."""

    def __init__(self, services: ApiServices) -> None:
        self.s = services

    async def _get(self, number: str) -> Extension:
        extension = await self.s.directory.get_extension(number)
        if extension is None:
            raise ApiError(404, "not_found", f"no extension {number}")
        return extension

    async def list(self, call: ApiCall) -> Reply:
        call.query_params(())
        extensions = await self.s.directory.list_extensions()
        return json_reply({"items": [extension_json(e) for e in extensions]})

    async def show(self, call: ApiCall) -> Reply:
        return json_reply(extension_json(await self._get(call.params["number"])))

    async def create(self, call: ApiCall) -> Reply:
        body = call.json({**_EXTENSION_FIELDS, "number": str, "password": str}, ["number"])
        number = body["number"]
        if not re.fullmatch(NUMBER, number):
            raise ApiError(400, "invalid_field", "number: 1 to 32 digits")
        given = "password" in body
        password = _password(body["password"]) if given else generate_password()
        extension = make_extension(
            number, _name(body.get("name", "")), self.s.realm, password,
            _algorithms(body.get("algorithms", []), self.s.fips), body.get("enabled", True),
            md5=not self.s.fips,
        )  # fmt: skip
        extension = attrs.evolve(
            extension, qualify=body.get("qualify", False),
            ring_timeout=_ring_timeout(body.get("ring_timeout")),
        )  # fmt: skip
        await self.s.directory.add_extension(extension)
        result: dict[str, Any] = {"extension": extension_json(extension)}
        if not given:
            result["password"] = password
        return json_reply(result, 201, target=number)

    async def change(self, call: ApiCall) -> Reply:
        body = call.json(_EXTENSION_FIELDS)
        extension = await self._get(call.params["number"])
        changes: dict[str, Any] = {}
        if "name" in body:
            changes["name"] = _name(body["name"])
        if "algorithms" in body:
            changes["algorithms"] = _algorithms(body["algorithms"], self.s.fips)
        for flag in ("enabled", "qualify"):
            if flag in body:
                changes[flag] = body[flag]
        if "ring_timeout" in body:
            changes["ring_timeout"] = _ring_timeout(body["ring_timeout"])
        extension = attrs.evolve(extension, **changes)
        await self.s.directory.update_extension(extension)
        return json_reply(extension_json(extension), detail={"fields": sorted(changes)})

    async def remove(self, call: ApiCall) -> Reply:
        number = call.params["number"]
        if not await self.s.directory.remove_extension(number):
            raise ApiError(404, "not_found", f"no extension {number}")
        return Reply(204)

    async def reset_password(self, call: ApiCall) -> Reply:
        call.json({})
        extension = await self._get(call.params["number"])
        password = generate_password()
        fresh = make_extension(
            extension.number, extension.name, self.s.realm, password, md5=not self.s.fips
        )
        await self.s.directory.update_extension(
            attrs.evolve(extension, realm=fresh.realm, ha1_md5=fresh.ha1_md5,
                         ha1_sha256=fresh.ha1_sha256)
        )  # fmt: skip
        return json_reply({"number": extension.number, "password": password})


# -- registrations ----------------------------------------------------------------


def binding_json(binding: Binding, now: float) -> dict[str, Any]:
    """A binding for the API."""
    return {
        "aor": binding.aor,
        "contact": binding.contact,
        "key": binding.key,
        "user_agent": binding.user_agent,
        "source": binding.received,
        "node": binding.node_id,
        "expires_at": binding.expires_at,
        "expires_in": max(0, round(binding.expires_at - now)),
    }


class RegistrationsApi:
    """
    ``/registrations``: list (paged), one AOR's, remove (kick).

    The listing pages through a sorted snapshot of every binding that is reused
    for ``SNAPSHOT_SECONDS`` (sorting thousands of bindings per page would cost
    the reactor milliseconds per request); a kick through the API drops it.
    Filtering by ``aor`` always reads the location service.
    """

    def __init__(self, services: ApiServices) -> None:
        self.s = services
        self._snapshot: tuple[float, list[Binding], list[tuple[str, str]]] | None = None

    async def _sorted(self, now: float) -> tuple[list[Binding], list[tuple[str, str]]]:
        if self._snapshot is not None and now - self._snapshot[0] < SNAPSHOT_SECONDS:
            return self._snapshot[1], self._snapshot[2]
        bindings = sorted(await self.s.location.all_bindings(now), key=lambda b: (b.aor, b.key))
        keys = [(b.aor, b.key) for b in bindings]
        self._snapshot = (now, bindings, keys)
        return bindings, keys

    async def list(self, call: ApiCall) -> Reply:
        query = call.query_params(("limit", "cursor", "aor"))
        limit = limit_of(query)
        now = self.s.clock.seconds()
        if "aor" in query:
            bindings = sorted(
                await self.s.location.bindings_for(query["aor"], now), key=lambda b: b.key
            )
            keys = [(b.aor, b.key) for b in bindings]
        else:
            bindings, keys = await self._sorted(now)
        start = 0
        if "cursor" in query:
            after = decode_cursor(
                query["cursor"],
                lambda v: (
                    isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
                ),
            )
            start = bisect.bisect_right(keys, (after[0], after[1]))
        page = [b for b in bindings[start : start + limit] if b.expires_at > now]
        result: dict[str, Any] = {"items": [binding_json(b, now) for b in page]}
        more = start + limit < len(bindings)
        last = bindings[start + limit - 1] if more else None
        result["next_cursor"] = encode_cursor([last.aor, last.key]) if last else None
        return json_reply(result)

    async def show(self, call: ApiCall) -> Reply:
        now = self.s.clock.seconds()
        bindings = await self.s.location.bindings_for(call.params["aor"], now)
        return json_reply({"items": [binding_json(b, now) for b in bindings]})

    async def remove(self, call: ApiCall) -> Reply:
        query = call.query_params(("key",))
        aor = call.params["aor"]
        if "key" in query:
            now = self.s.clock.seconds()
            keys = {b.key for b in await self.s.location.bindings_for(aor, now)}
            if query["key"] not in keys:
                raise ApiError(404, "not_found", f"no such binding of {aor}")
            await self.s.location.apply(aor, [], [query["key"]])
            removed = 1
        else:
            removed = await self.s.location.remove_aor(aor)
        self._snapshot = None
        return json_reply({"removed": removed}, detail={"removed": removed})


# -- calls --------------------------------------------------------------------------


class CallsApi:
    """``/calls``: the calls in progress on this node, and hanging one up."""

    def __init__(self, services: ApiServices) -> None:
        self.s = services

    def _local(self) -> dict[str, Any]:
        return dict(self.s.calls.calls) if self.s.calls is not None else {}

    def _call_json(self, call: Any, now: float) -> dict[str, Any]:
        stats = call.media.stats() if call.media is not None else {}
        legs = []
        for side, party in (("a", call.caller.number), ("b", call.callee.number)):
            dialog = call.dialogs.get(side)
            flow = dialog.flow if dialog is not None else None
            legs.append({
                "side": side,
                "party": party,
                "remote": f"{flow.transport}:{flow.host}:{flow.port}" if flow else "",
                "transport": flow.transport if flow else "",
                "signalling_encrypted": flow is not None and flow.transport == "tls",
                "media": {k: v for k, v in stats.get(side, {}).items()
                          if not k.startswith("last_packet")},
            })  # fmt: skip
        return {
            "id": call.call_id,
            "caller": call.caller.number,
            "callee": call.callee.number,
            "dialled": call.dialled,
            "state": call.state.value,
            "codec": call.codec,
            "started_at": call.started_at,
            "answered_at": call.answered_at,
            "duration": round(max(0.0, now - call.started_at), 3),
            "node": self.s.node_id,
            "recording": bool(call.attempt.recording),
            "legs": legs,
        }

    async def list(self, call: ApiCall) -> Reply:
        call.query_params(())
        now = self.s.clock.seconds()
        local = self._local()
        items = [self._call_json(c, now) for c in local.values()]
        for summary in await self.s.live.list():
            if summary.call_id not in local:
                items.append({
                    "id": summary.call_id, "caller": summary.caller, "callee": summary.callee,
                    "dialled": summary.dialled, "state": summary.state, "codec": summary.codec,
                    "started_at": summary.started_at, "answered_at": summary.answered_at,
                    "duration": round(max(0.0, now - summary.started_at), 3),
                    "node": summary.node_id, "recording": summary.recording, "legs": [],
                })  # fmt: skip
        items.sort(key=lambda c: (c["started_at"], c["id"]))
        return json_reply({"items": items})

    async def show(self, call: ApiCall) -> Reply:
        found = self._local().get(call.params["call_id"])
        if found is None:
            raise ApiError(404, "not_found", "no such call on this node")
        return json_reply(self._call_json(found, self.s.clock.seconds()))

    async def hangup(self, call: ApiCall) -> Reply:
        found = self._local().get(call.params["call_id"])
        if found is None:
            raise ApiError(404, "not_found", "no such call on this node")
        self.s.calls.end_call(found, "admin hangup")
        return Reply(204)


# -- call records, audit, status, drain -------------------------------------------


class RecordsApi:
    """``/cdrs`` (filters, cursor paging, CSV) and ``/audit``."""

    def __init__(self, services: ApiServices) -> None:
        self.s = services

    async def cdrs(self, call: ApiCall) -> Reply:
        query = call.query_params(
            ("since", "until", "extension", "disposition", "limit", "cursor", "format")
        )
        now = self.s.clock.seconds()
        filters: dict[str, Any] = {
            "since": time_of(query, "since", now), "until": time_of(query, "until", now),
        }  # fmt: skip
        if "extension" in query:
            if not re.fullmatch(r"[0-9A-Za-z+*#._-]{1,64}", query["extension"]):
                raise ApiError(400, "invalid_parameter", "extension: a number")
            filters["extension"] = query["extension"]
        if "disposition" in query:
            try:
                filters["disposition"] = present.parse_disposition(query["disposition"])
            except ValueError as e:
                raise ApiError(400, "invalid_parameter", str(e)) from None
        fmt = query.get("format", "json")
        if fmt not in ("json", "csv"):
            raise ApiError(400, "invalid_parameter", "format: json or csv")
        limit = limit_of(query)
        cursor = None
        if "cursor" in query:
            cursor = decode_cursor(query["cursor"], lambda v: isinstance(v, str) and len(v) < 200)
        records = await self.s.records.list(**filters, limit=limit + 1, after_call_id=cursor)
        more, records = len(records) > limit, records[:limit]
        next_cursor = encode_cursor(records[-1].call_id) if more else None
        if fmt == "csv":
            out = io.StringIO()
            present.CsvWriter(out).write(records)
            headers = (("Link", f'<?cursor={next_cursor}>; rel="next"'),) if next_cursor else ()
            used = {k: v for k, v in filters.items() if v is not None}
            detail = {"format": "csv", "count": len(records), "filters": used}
            return Reply(200, raw=out.getvalue().encode(), content_type="text/csv; charset=utf-8",
                         headers=headers, audit=True, detail=detail)  # fmt: skip
        items = [present.record_json(r) for r in records]
        return json_reply({"items": items, "next_cursor": next_cursor})

    async def audit(self, call: ApiCall) -> Reply:
        query = call.query_params(("since", "until", "actor", "limit", "cursor"))
        now = self.s.clock.seconds()
        limit = limit_of(query)
        after = None
        if "cursor" in query:
            after = decode_cursor(query["cursor"], lambda v: isinstance(v, int) and v >= 0)
        entries = await self.s.audit.list(
            since=time_of(query, "since", now), until=time_of(query, "until", now),
            actor=query.get("actor"), limit=limit + 1, after_id=after,
        )  # fmt: skip
        more, entries = len(entries) > limit, entries[:limit]
        return json_reply({
            "items": [e.to_json() for e in entries],
            "next_cursor": encode_cursor(entries[-1].entry_id) if more else None,
        })  # fmt: skip


class SystemApi:
    """``/status`` and ``/drain``."""

    def __init__(self, services: ApiServices) -> None:
        self.s = services

    async def status(self, call: ApiCall) -> Reply:
        now = self.s.clock.seconds()
        extensions = await self.s.directory.count_extensions()
        registrations = await self.s.location.count(now)
        records = await self.s.records.count()
        calls = len(self.s.calls.calls) if self.s.calls is not None else 0
        draining = bool(self.s.drain and self.s.drain.draining)
        workers = None
        if self.s.workers is not None:
            state = await self._workers_drain(None, status=True)
            draining, calls = state["draining"], state["active_calls"]
            workers = {"count": state["workers"]["count"], "up": state["workers"]["up"]}
        return json_reply({
            "version": __version__,
            "node": self.s.node_id,
            "uptime": round(max(0.0, now - self.s.started_at), 3),
            "draining": draining,
            "workers": workers,
            "fips": {"mode": self.s.fips, "provider_active": self.s.fips_provider_active},
            "counts": {"extensions": extensions, "registrations": registrations,
                       "calls": calls, "cdrs": records},
        })  # fmt: skip

    async def _workers_drain(self, timeout: float | None, status: bool = False) -> dict[str, Any]:
        """Every SIP worker's combined drain state (after asking them to drain, unless status)."""
        try:
            if status:
                return dict(await self.s.workers.drain_status())
            return dict(await self.s.workers.drain(timeout))
        except (ChannelError, ValueError) as e:
            raise ApiError(503, "unavailable", f"the SIP workers did not answer: {e}") from None

    async def drain(self, call: ApiCall) -> Reply:
        body = call.json({"timeout": (int, float)})
        timeout = body.get("timeout")
        if timeout is not None and not 0 <= timeout <= 86400:
            raise ApiError(400, "invalid_field", "timeout: 0..86400 seconds")
        if self.s.drain is None:
            raise ApiError(409, "unavailable", "drain is not available")
        self.s.drain.start(timeout)  # this worker at once, whatever the others answer
        if self.s.workers is not None:
            return json_reply(await self._workers_drain(timeout), 202)
        return json_reply(self.s.drain.status(), 202)

    async def drain_status(self, call: ApiCall) -> Reply:
        if self.s.drain is None:
            raise ApiError(409, "unavailable", "drain is not available")
        if self.s.workers is not None:
            return json_reply(await self._workers_drain(None, status=True))
        return json_reply(self.s.drain.status())


def data_routes(services: ApiServices) -> list[Route]:
    """The routes of this module."""
    ext, reg = ExtensionsApi(services), RegistrationsApi(services)
    calls, rec, system = CallsApi(services), RecordsApi(services), SystemApi(services)
    number = {"number": NUMBER}
    return [
        Route("GET", "status", system.status, "read"),
        Route("GET", "extensions", ext.list, "read"),
        Route("POST", "extensions", ext.create, "write"),
        Route("GET", "extensions/{number}", ext.show, "read", number),
        Route("PATCH", "extensions/{number}", ext.change, "write", number),
        Route("DELETE", "extensions/{number}", ext.remove, "write", number),
        Route("POST", "extensions/{number}/password", ext.reset_password, "write", number),
        Route("GET", "registrations", reg.list, "read"),
        Route("GET", "registrations/{aor}", reg.show, "read", {"aor": NUMBER}),
        Route("DELETE", "registrations/{aor}", reg.remove, "write", {"aor": NUMBER}),
        Route("GET", "calls", calls.list, "read"),
        Route("GET", "calls/{call_id}", calls.show, "read", {"call_id": CALL_ID}),
        Route("DELETE", "calls/{call_id}", calls.hangup, "calls", {"call_id": CALL_ID}),
        Route("GET", "cdrs", rec.cdrs, "read"),
        Route("GET", "audit", rec.audit, "read"),
        Route("GET", "drain", system.drain_status, "read"),
        Route("POST", "drain", system.drain, "write"),
    ]
