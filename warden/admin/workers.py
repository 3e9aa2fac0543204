"""
The admin side of SIP worker processes (ADR 0035): what a worker answers the
supervisor (L{WorkerAnswers}: drain, drain status, metrics), and what worker 0,
serving the admin API, makes of every worker's answers (L{PbxWorkers}: one
drain state for the whole PBX, one ``/metrics`` with a ``worker`` label).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from twisted.logger import Logger

from warden.admin.drain import DrainController
from warden.workerlink import ControlChannel

#: The questions worker 0 may put to every worker through the supervisor.
OPERATIONS = frozenset(["drain", "drain_status", "metrics"])
#: The longest drain timeout asked for (seconds), as the API's ``/drain`` allows.
MAX_DRAIN_TIMEOUT = 86400.0
#: Seconds worker 0 waits for the supervisor (which waits for each worker less).
ALL_TIMEOUT = 10.0
#: Families that describe the whole PBX (read from the shared state or the
#: database) rather than one worker: served once, from the first worker that
#: answers, without a ``worker`` label, so that a sum does not count them N times.
PBX_WIDE = frozenset([
    "warden_registrar_bindings", "warden_voicemail_messages", "warden_voicemail_storage_bytes",
])  # fmt: skip

log = Logger()


def drain_timeout_of(args: dict[str, Any]) -> float | None:
    """The ``timeout`` argument of a drain: None, or seconds 0..86400."""
    timeout = args.get("timeout")
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError("timeout: a number of seconds")
    if not 0 <= timeout <= MAX_DRAIN_TIMEOUT:
        raise ValueError(f"timeout: 0..{MAX_DRAIN_TIMEOUT:g} seconds")
    return float(timeout)


class WorkerAnswers:
    """
    A worker's answers to the supervisor.

    Args:
        drain: this worker's drain controller.
        exposition: this worker's metrics, as Prometheus text.
    """

    def __init__(self, drain: DrainController, exposition: Callable[[], bytes]) -> None:
        self._drain = drain
        self._exposition = exposition

    def __call__(self, op: str, args: dict[str, Any]) -> Any:
        """Answer ``op``; an unknown one is a ValueError (answered as an error)."""
        if op == "drain":
            self._drain.start(drain_timeout_of(args))
            return self._drain.status()
        if op == "drain_status":
            return self._drain.status()
        if op == "metrics":
            return self._exposition().decode()
        raise ValueError(f"unknown operation {op[:40]!r}")


def combined_drain(answer: dict[str, Any]) -> dict[str, Any]:
    """
    One drain state from every worker's (the supervisor's ``all`` answer):
    draining when every worker that runs drains, the calls left on all of
    them, the latest deadline, and finished once every worker runs and has
    finished. ``workers`` lists each worker's own state.
    """
    each: list[dict[str, Any]] = []
    states: list[dict[str, Any]] = []
    for entry in answer.get("workers", []):
        result = entry.get("result")
        row: dict[str, Any] = {"worker": entry.get("worker"), "up": bool(entry.get("up"))}
        if isinstance(result, dict):
            row.update(result)
            states.append(result)
        elif entry.get("error"):
            row["error"] = str(entry["error"])
        each.append(row)
    deadlines = [s["deadline"] for s in states if isinstance(s.get("deadline"), (int, float))]
    count = int(answer.get("count", len(each)))
    return {
        "draining": bool(states) and all(s.get("draining") for s in states),
        "active_calls": sum(int(s.get("active_calls") or 0) for s in states),
        "deadline": max(deadlines) if deadlines else None,
        "finished": len(states) == count and all(s.get("finished") for s in states),
        "workers": {"count": count, "up": int(answer.get("up", 0)), "each": each},
    }


class _Families:
    """A collector yielding families already built."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        """The families."""
        yield from self._families


def merge_expositions(answer: dict[str, Any]) -> bytes:
    """
    One exposition from every worker's (the supervisor's ``all`` answer to
    ``metrics``): each sample labelled with its ``worker``, except the
    L{PBX_WIDE} families (once, unlabelled); plus ``warden_sip_workers`` and
    ``warden_sip_workers_up``. A worker that did not answer is left out.
    """
    families: dict[str, Metric] = {}
    for entry in answer.get("workers", []):
        text, index = entry.get("result"), entry.get("worker")
        if not isinstance(text, str) or not isinstance(index, int):
            continue
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError as e:
            log.warn("Metrics of SIP worker {index} unreadable: {error}", index=index, error=e)
            continue
        for family in parsed:
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
            elif family.name in PBX_WIDE or merged.type != family.type:
                continue
            for s in family.samples:
                labels = (
                    s.labels if family.name in PBX_WIDE else {**s.labels, "worker": str(index)}
                )
                merged.samples.append(Sample(s.name, labels, s.value, s.timestamp, s.exemplar))
    count = GaugeMetricFamily("warden_sip_workers", "SIP worker processes configured")
    count.add_metric([], float(answer.get("count", 0)))
    up = GaugeMetricFamily("warden_sip_workers_up", "SIP worker processes running")
    up.add_metric([], float(answer.get("up", 0)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*families.values(), count, up]))
    return bytes(generate_latest(registry))


class PbxWorkers:
    """
    Worker 0's view of every worker, through the supervisor.

    Args:
        channel: the channel to the supervisor.
    """

    def __init__(self, channel: ControlChannel, timeout: float = ALL_TIMEOUT) -> None:
        self._channel = channel
        self._timeout = timeout

    async def _all(self, op: str, **args: Any) -> dict[str, Any]:
        answer = await self._channel.ask("all", {"op": op, "args": args}, self._timeout)
        if not isinstance(answer, dict):
            raise ValueError("the supervisor's answer is not an object")
        return answer

    async def drain(self, timeout: float | None) -> dict[str, Any]:
        """Drain every worker; the combined state."""
        return combined_drain(await self._all("drain", timeout=timeout))

    async def drain_status(self) -> dict[str, Any]:
        """The combined drain state."""
        return combined_drain(await self._all("drain_status"))

    async def metrics(self) -> bytes:
        """Every worker's metrics as one exposition."""
        return merge_expositions(await self._all("metrics"))
