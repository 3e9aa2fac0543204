"""
Pure in-memory tables shared by the memory fakes and the SQL write-behind.

``BindingTable`` is the read path of every L{ILocationService} implementation
that keeps bindings in memory (``MemoryLocationService`` and
``SQLLocationService``), so both answer reads with exactly the same rules.
``plan_upsert`` classifies a bulk directory import the same way for every backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from warden.model import Binding, Extension


def extension_order(number: str) -> tuple[int, str]:
    """
    Sort key for extension numbers: shorter first, then lexically.

    For digit strings without leading zeros this is numeric order (9 < 10 < 100),
    which is what an operator listing extensions expects.
    """
    return (len(number), number)


def qualified_numbers(extensions: Iterable[Extension]) -> list[str]:
    """The numbers of ``extensions`` with qualify on, in L{extension_order}."""
    return sorted((e.number for e in extensions if e.qualify), key=extension_order)


def plan_upsert(
    existing: Mapping[str, Extension], extensions: Iterable[Extension]
) -> tuple[int, int, dict[str, Extension]]:
    """
    Classify a bulk upsert against the current rows.

    Extensions are taken in order, as if each were written in turn: a number seen
    twice in ``extensions`` counts once as added (or updated) and then as updated
    if the second copy differs.

    Args:
        existing: the stored extensions, by number (at least those named in
            ``extensions``).
        extensions: the extensions to insert or replace.

    Returns:
        ``(added, updated, writes)``: the counts, and the rows that must be
        written, by number (unchanged rows are left out).
    """
    added = 0
    updated = 0
    writes: dict[str, Extension] = {}
    for extension in extensions:
        current = writes.get(extension.number) or existing.get(extension.number)
        if current is None:
            added += 1
        elif current != extension:
            updated += 1
        else:
            continue
        writes[extension.number] = extension
    return added, updated, writes


class BindingTable:
    """
    Bindings by AOR and contact key, with the read rules of L{ILocationService}.

    Expired bindings stay in the table until L{expire} removes them; every read
    filters them out with the ``now`` it is given.
    """

    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, Binding]] = {}

    def load(self, bindings: Iterable[Binding]) -> None:
        """Replace the whole table with ``bindings``."""
        self._by_aor = {}
        for binding in bindings:
            self._by_aor.setdefault(binding.aor, {})[binding.key] = binding

    def stored(self, aor: str) -> list[Binding]:
        """Every binding held for ``aor``, expired or not (what must be persisted)."""
        return list(self._by_aor.get(aor, {}).values())

    def bindings_for(self, aor: str, now: float) -> list[Binding]:
        """The unexpired bindings of ``aor``."""
        return [b for b in self._by_aor.get(aor, {}).values() if b.expires_at > now]

    def apply(self, aor: str, upserts: Sequence[Binding], removals: Iterable[str]) -> None:
        """
        Remove the bindings whose keys are in ``removals``, then add or replace
        ``upserts``.

        Raises:
            ValueError: an upsert belongs to another AOR (nothing is changed).
        """
        for binding in upserts:
            if binding.aor != aor:
                raise ValueError(f"binding for {binding.aor!r} applied to AOR {aor!r}")
        contacts = self._by_aor.setdefault(aor, {})
        for key in removals:
            contacts.pop(key, None)
        for binding in upserts:
            contacts[binding.key] = binding
        if not contacts:
            del self._by_aor[aor]

    def remove_aor(self, aor: str) -> int:
        """Remove every binding of ``aor``; return how many there were."""
        return len(self._by_aor.pop(aor, {}))

    def expire(self, now: float) -> tuple[int, list[str]]:
        """
        Remove every binding with ``expires_at <= now``.

        Returns:
            ``(removed, aors)``: the number removed and the AORs that changed.
        """
        removed = 0
        changed: list[str] = []
        for aor in list(self._by_aor):
            contacts = self._by_aor[aor]
            stale = [key for key, b in contacts.items() if b.expires_at <= now]
            if not stale:
                continue
            for key in stale:
                del contacts[key]
            if not contacts:
                del self._by_aor[aor]
            removed += len(stale)
            changed.append(aor)
        return removed, changed

    def all_bindings(self, now: float) -> list[Binding]:
        """Every unexpired binding, ordered by AOR then contact key."""
        return sorted(
            (
                b
                for contacts in self._by_aor.values()
                for b in contacts.values()
                if b.expires_at > now
            ),
            key=lambda b: (extension_order(b.aor), b.key),
        )

    def count(self, now: float) -> int:
        """The number of unexpired bindings."""
        return sum(
            1
            for contacts in self._by_aor.values()
            for b in contacts.values()
            if b.expires_at > now
        )
