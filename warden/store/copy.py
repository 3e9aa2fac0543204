"""
Copying the durable data of one store into another (``wardenctl migrate-store``).

What is copied: the directory of extensions (with their HA1 values, flags and
algorithms) and every call record. Bindings and live calls are not: they are
short-lived, and phones re-register. (Voicemail metadata will be copied here
once a store holds it.)

The target must be empty unless ``merge`` is given: then extensions already
there are replaced by the source's and call records already there are kept
(a record is identified by its call_id). After copying, the counts are checked:
with an empty target they must be equal; when merging, every source extension
must be in the target as in the source, and the target must hold at least as
many call records.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred

from warden.errors import StoreError
from warden.interfaces import ICallRecordStore, IDirectory
from warden.model import CallRecord

#: Call records read and written per batch.
BATCH = 1000


class TargetNotEmpty(StoreError):
    """The target store already holds data, and merging was not asked for."""


class CopyMismatch(StoreError):
    """After copying, the target does not hold what the source does."""


@attrs.frozen
class CopyReport:
    """
    What was copied and found.

    Attributes:
        extensions: extensions in the source (all copied).
        call_records: call records in the source (all copied).
        target_extensions: extensions in the target afterwards.
        target_call_records: call records in the target afterwards.
    """

    extensions: int
    call_records: int
    target_extensions: int
    target_call_records: int


async def _add_records(store: ICallRecordStore, records: list[CallRecord]) -> None:
    add_many: Callable[[list[CallRecord]], Deferred[None]] | None = getattr(
        store, "add_many", None
    )
    if add_many is not None:
        await add_many(records)
        return
    for record in records:
        await store.add(record)


async def copy_store(
    source_directory: IDirectory,
    source_records: ICallRecordStore,
    target_directory: IDirectory,
    target_records: ICallRecordStore,
    merge: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> CopyReport:
    """
    Copy extensions and call records from the source stores to the target
    stores, then verify the counts.

    Raises:
        TargetNotEmpty: the target holds extensions or call records and
            ``merge`` is false (nothing was written).
        CopyMismatch: the verification failed.
    """
    existing = (await target_directory.count_extensions(), await target_records.count())
    if any(existing) and not merge:
        raise TargetNotEmpty(
            f"the target already holds {existing[0]} extensions and {existing[1]} call"
            " records; use --merge to add to them"
        )
    extensions = await source_directory.list_extensions()
    await target_directory.upsert_extensions(extensions)
    progress(f"copied {len(extensions)} extensions")

    copied = 0
    cursor: str | None = None
    while True:
        page = await source_records.list(limit=BATCH, after_call_id=cursor)
        if not page:
            break
        await _add_records(target_records, page)
        copied += len(page)
        cursor = page[-1].call_id
        progress(f"copied {copied} call records")

    source_counts = (await source_directory.count_extensions(), await source_records.count())
    report = CopyReport(
        extensions=len(extensions),
        call_records=copied,
        target_extensions=await target_directory.count_extensions(),
        target_call_records=await target_records.count(),
    )
    problems: list[str] = []
    if source_counts != (report.extensions, report.call_records):
        problems.append(
            f"the source changed while copying (now {source_counts[0]} extensions,"
            f" {source_counts[1]} call records)"
        )
    if merge:
        for extension in extensions:
            if await target_directory.get_extension(extension.number) != extension:
                problems.append(f"extension {extension.number} differs in the target")
                break
        if report.target_call_records < copied:
            problems.append(f"the target holds {report.target_call_records} call records")
    elif (report.target_extensions, report.target_call_records) != (len(extensions), copied):
        problems.append(
            f"the target holds {report.target_extensions} extensions and"
            f" {report.target_call_records} call records"
        )
    if problems:
        raise CopyMismatch(
            f"copied {len(extensions)} extensions and {copied} call records, but "
            + "; ".join(problems)
        )
    return report
