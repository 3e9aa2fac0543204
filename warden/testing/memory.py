"""
In-memory L{IDirectory}, L{ILocationService}, L{ICallRecordStore} and
L{ILiveCalls}.

Every method returns an already-fired Deferred, so tests built on these fakes can
use ``SynchronousTestCase`` with ``successResultOf`` / ``failureResultOf``.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from warden.errors import CallRecordNotFound, ExtensionExists, ExtensionNotFound, StaleBindings
from warden.interfaces import (
    ICallRecordStore,
    IDirectory,
    IDurableLocation,
    IGuardedLocation,
    ILiveCalls,
)
from warden.model import Binding, CallRecord, Extension, LiveCall, expired_recording
from warden.store.tables import BindingTable, extension_order, plan_upsert, qualified_numbers


@implementer(IDirectory)
class MemoryDirectory:
    """A directory held in a dict; nothing survives the process."""

    def __init__(self, extensions: Iterable[Extension] = ()) -> None:
        self._extensions: dict[str, Extension] = {e.number: e for e in extensions}

    def add_extension(self, extension: Extension) -> Deferred[None]:
        """Add ``extension``; fail with ExtensionExists if its number is taken."""
        if extension.number in self._extensions:
            return defer.fail(ExtensionExists(extension.number))
        self._extensions[extension.number] = extension
        return defer.succeed(None)

    def get_extension(self, number: str) -> Deferred[Extension | None]:
        """Fire with the extension for ``number``, or None."""
        return defer.succeed(self._extensions.get(number))

    def list_extensions(self) -> Deferred[list[Extension]]:
        """Fire with every extension, ordered by number."""
        numbers = sorted(self._extensions, key=extension_order)
        return defer.succeed([self._extensions[n] for n in numbers])

    def update_extension(self, extension: Extension) -> Deferred[None]:
        """Replace the extension with the same number; fail if there is none."""
        if extension.number not in self._extensions:
            return defer.fail(ExtensionNotFound(extension.number))
        self._extensions[extension.number] = extension
        return defer.succeed(None)

    def remove_extension(self, number: str) -> Deferred[bool]:
        """Remove the extension; fire with whether it existed."""
        return defer.succeed(self._extensions.pop(number, None) is not None)

    def upsert_extensions(self, extensions: Sequence[Extension]) -> Deferred[tuple[int, int]]:
        """Insert or replace many extensions; fire with ``(added, updated)``."""
        added, updated, writes = plan_upsert(self._extensions, extensions)
        self._extensions.update(writes)
        return defer.succeed((added, updated))

    def count_extensions(self) -> Deferred[int]:
        """Fire with the number of extensions."""
        return defer.succeed(len(self._extensions))

    def qualified_numbers(self) -> Deferred[list[str]]:
        """Fire with the numbers of the extensions with qualify on, in list order."""
        return defer.succeed(qualified_numbers(self._extensions.values()))


@implementer(IDurableLocation)
class MemoryLocationService:
    """Bindings held in memory only; ``flush``, ``load`` and ``close`` have nothing to do."""

    def __init__(self) -> None:
        self._table = BindingTable()

    def bindings_for(self, aor: str, now: float) -> Deferred[list[Binding]]:
        """Fire with the unexpired bindings of ``aor``."""
        return defer.succeed(self._table.bindings_for(aor, now))

    def apply(
        self, aor: str, upserts: Sequence[Binding], removals: Sequence[str]
    ) -> Deferred[None]:
        """Remove ``removals`` (keys), then add or replace ``upserts``."""
        try:
            self._table.apply(aor, upserts, removals)
        except ValueError as e:
            return defer.fail(e)
        return defer.succeed(None)

    def remove_aor(self, aor: str) -> Deferred[int]:
        """Remove every binding of ``aor``; fire with how many there were."""
        return defer.succeed(self._table.remove_aor(aor))

    def expire(self, now: float) -> Deferred[int]:
        """Remove bindings with ``expires_at <= now``; fire with how many."""
        removed, _ = self._table.expire(now)
        return defer.succeed(removed)

    def all_bindings(self, now: float) -> Deferred[list[Binding]]:
        """Fire with every unexpired binding, ordered by AOR then key."""
        return defer.succeed(self._table.all_bindings(now))

    def count(self, now: float) -> Deferred[int]:
        """Fire with the number of unexpired bindings."""
        return defer.succeed(self._table.count(now))

    def flush(self) -> Deferred[None]:
        """Fire at once: memory is as durable as it gets."""
        return defer.succeed(None)

    def load(self) -> Deferred[int]:
        """Fire with the number of bindings held (they are current already)."""
        return defer.succeed(self._table.count(float("-inf")))

    def close(self) -> Deferred[None]:
        """Fire at once: nothing is pending."""
        return defer.succeed(None)


@implementer(IDurableLocation, IGuardedLocation)
class MemoryGuardedLocation(MemoryLocationService):
    """
    One node's handle on bindings that several nodes share (in memory, as the
    nodes of a cluster share Redis): it remembers the bindings of each AOR as
    it last read or wrote them (L{view}) and L{apply_unchanged} checks them.

    Args:
        shared: another node's handle, whose bindings this one shares (None:
            bindings of its own).
    """

    def __init__(self, shared: MemoryLocationService | None = None) -> None:
        super().__init__()
        if shared is not None:
            self._table = shared._table
        self._views: dict[str, list[Binding]] = {}

    def _seen(self, aor: str) -> None:
        self._views[aor] = self._table.stored(aor)

    def view(self, aor: str, now: float) -> list[Binding] | None:
        """The bindings of ``aor`` this node last read or wrote, unchecked; None if none."""
        seen = self._views.get(aor)
        if seen is None:
            return None
        return [b for b in seen if b.expires_at > now]

    def bindings_for(self, aor: str, now: float) -> Deferred[list[Binding]]:
        """Fire with the unexpired bindings of ``aor`` (this node's view from now on)."""
        self._seen(aor)
        return super().bindings_for(aor, now)

    def apply(
        self, aor: str, upserts: Sequence[Binding], removals: Sequence[str]
    ) -> Deferred[None]:
        """Remove ``removals`` (keys), then add or replace ``upserts``."""
        d = super().apply(aor, upserts, removals)
        self._seen(aor)
        return d

    def apply_unchanged(
        self, aor: str, upserts: Sequence[Binding], removals: Sequence[str]
    ) -> Deferred[None]:
        """L{apply}, if ``aor`` still holds what L{view} saw; else L{StaleBindings}."""
        seen = self._views.get(aor)
        if seen is None:
            return defer.fail(StaleBindings(f"no view of AOR {aor!r}"))
        held = self._table.stored(aor)
        if _by_key(seen) != _by_key(held):
            self._views[aor] = held
            return defer.fail(StaleBindings(f"the bindings of AOR {aor!r} changed"))
        return self.apply(aor, upserts, removals)


def _by_key(bindings: Iterable[Binding]) -> list[Binding]:
    return sorted(bindings, key=lambda b: b.key)


def _record_order(record: CallRecord) -> tuple[float, str]:
    return (record.started_at, record.call_id)


@implementer(ICallRecordStore)
class MemoryCallRecordStore:
    """Call records held in a dict by call_id; nothing survives the process."""

    def __init__(self, records: Iterable[CallRecord] = ()) -> None:
        self._records: dict[str, CallRecord] = {}
        for record in records:
            self._records.setdefault(record.call_id, record)

    def add(self, record: CallRecord) -> Deferred[None]:
        """Keep ``record`` unless its call_id is already stored."""
        self._records.setdefault(record.call_id, record)
        return defer.succeed(None)

    def list(
        self,
        since: float | None = None,
        until: float | None = None,
        extension: str | None = None,
        disposition: str | None = None,
        limit: int = 100,
        after_call_id: str | None = None,
    ) -> Deferred[builtins.list[CallRecord]]:
        """Fire with one page of records, ordered by ``(started_at, call_id)``."""
        if limit < 0:
            return defer.fail(ValueError(f"limit must be >= 0, got {limit}"))
        after: tuple[float, str] | None = None
        if after_call_id is not None:
            cursor = self._records.get(after_call_id)
            if cursor is None:
                return defer.fail(CallRecordNotFound(after_call_id))
            after = _record_order(cursor)

        def wanted(r: CallRecord) -> bool:
            return (
                (after is None or _record_order(r) > after)
                and (since is None or r.started_at >= since)
                and (until is None or r.started_at < until)
                and (extension is None or extension in (r.caller, r.callee, r.dialled))
                and (disposition is None or r.disposition == disposition)
            )

        found = sorted(filter(wanted, self._records.values()), key=_record_order)
        return defer.succeed(found[:limit])

    def count(self) -> Deferred[int]:
        """Fire with the number of stored records."""
        return defer.succeed(len(self._records))

    def expire_recordings(
        self, before: float, at: float, limit: int = 500
    ) -> Deferred[builtins.list[str]]:
        """Unlink the oldest recordings of calls started before ``before``."""
        old = sorted(
            (r for r in self._records.values() if r.recording and r.started_at < before),
            key=_record_order,
        )[:limit]
        for record in old:
            self._records[record.call_id] = expired_recording(record, at)
        return defer.succeed([r.recording for r in old])


@implementer(ILiveCalls)
class MemoryLiveCalls:
    """Live-call summaries held in a dict by call_id."""

    def __init__(self) -> None:
        self._calls: dict[str, LiveCall] = {}

    def publish(self, call: LiveCall) -> Deferred[None]:
        """Add or replace the summary of ``call.call_id``."""
        self._calls[call.call_id] = call
        return defer.succeed(None)

    def remove(self, call_id: str) -> Deferred[None]:
        """Forget the summary of ``call_id``, if any."""
        self._calls.pop(call_id, None)
        return defer.succeed(None)

    def list(self) -> Deferred[builtins.list[LiveCall]]:
        """Fire with every summary, ordered by ``(started_at, call_id)``."""
        return defer.succeed(sorted(self._calls.values(), key=lambda c: (c.started_at, c.call_id)))

    def clear_node(self, node_id: str) -> Deferred[int]:
        """Forget the summaries of ``node_id``; fire with how many there were."""
        stale = [call_id for call_id, c in self._calls.items() if c.node_id == node_id]
        for call_id in stale:
            del self._calls[call_id]
        return defer.succeed(len(stale))
