"""
The admin API over several SIP workers (L{warden.admin.workers}, ADR 0035): an
in-memory supervisor of two workers, each with its own calls and drain
controller, behind worker 0's API: ``POST /drain`` drains both and reports
one state, ``/status`` counts the workers, ``/metrics`` merges both workers'
families under a ``worker`` label; and the merge on its own.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.admin.apihelper import START, ApiHarness, FakeCall, FakeCalls
from tests.test_workerlink import MemoryPbx
from warden.admin.drain import DrainController
from warden.admin.workers import PbxWorkers, WorkerAnswers, merge_expositions

V1 = "/api/v1"


def exposition(registrations: int, bindings: int, setup: list[float]) -> bytes:
    """One worker's metrics: a counter, a PBX-wide gauge, a histogram."""
    registry = CollectorRegistry()
    Counter("warden_registrar_registrations", "h", ["kind"], registry=registry).labels("new").inc(
        registrations
    )
    Gauge("warden_registrar_bindings", "h", registry=registry).set(bindings)
    histogram = Histogram("warden_call_setup_seconds", "h", registry=registry, buckets=(1, 2))
    for value in setup:
        histogram.observe(value)
    return bytes(generate_latest(registry))


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``text`` by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


class MergeTests(SynchronousTestCase):
    """Every worker's exposition as one."""

    def answer(self, *texts: bytes | None) -> dict[str, Any]:
        workers = [
            {"worker": i, "up": t is not None, **({"result": t.decode()} if t else {"error": "x"})}
            for i, t in enumerate(texts)
        ]
        return {"count": len(texts), "up": sum(t is not None for t in texts), "workers": workers}

    def test_labels_and_sums(self) -> None:
        """
        Counters and histograms keep each worker's series under ``worker``
        (their sums are the workers' totals, nothing counted twice); the
        bindings gauge (shared state) appears once, unlabelled.
        """
        merged = samples(merge_expositions(self.answer(
            exposition(3, 10, [0.5]), exposition(4, 10, [1.5, 3.0]),
        )))  # fmt: skip
        total = "warden_registrar_registrations_total"
        self.assertEqual(merged[(total, (("kind", "new"), ("worker", "0")))], 3)
        self.assertEqual(merged[(total, (("kind", "new"), ("worker", "1")))], 4)
        self.assertNotIn((total, (("kind", "new"),)), merged)
        self.assertEqual(merged[("warden_registrar_bindings", ())], 10)
        self.assertEqual(
            [k for k in merged if k[0] == "warden_registrar_bindings"],
            [("warden_registrar_bindings", ())],
        )
        count = "warden_call_setup_seconds_count"
        self.assertEqual(merged[(count, (("worker", "0"),))], 1)
        self.assertEqual(merged[(count, (("worker", "1"),))], 2)
        bucket = "warden_call_setup_seconds_bucket"
        self.assertEqual(merged[(bucket, (("le", "2.0"), ("worker", "1")))], 1)
        self.assertEqual(merged[("warden_sip_workers", ())], 2)
        self.assertEqual(merged[("warden_sip_workers_up", ())], 2)

    def test_silent_or_unreadable_worker_left_out(self) -> None:
        """A worker down, or answering text that is not an exposition, adds no series."""
        answer = self.answer(exposition(3, 10, []), None)
        answer["workers"].append({"worker": 2, "up": True, "result": "not {valid"})
        answer["count"] = 3
        merged = samples(merge_expositions(answer))
        workers = {dict(k[1]).get("worker") for k in merged} - {None}
        self.assertEqual(workers, {"0"})
        self.assertEqual(merged[("warden_sip_workers_up", ())], 1)


class PbxApiTests(SynchronousTestCase):
    """Worker 0's API in front of two in-memory workers."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.calls = [FakeCalls(), FakeCalls()]
        self.drains = [DrainController(self.clock, c, 30.0) for c in self.calls]
        texts = [exposition(3, 10, [0.5]), exposition(4, 10, [1.5])]

        def answers(index: int) -> Any:
            return WorkerAnswers(self.drains[index], lambda: texts[index])

        self.pbx = MemoryPbx(self.clock, 2, answers)
        workers = PbxWorkers(self.pbx.current(0).channel)
        self.h = ApiHarness(clock=self.clock, workers=workers)
        self.h.services.drain = self.drains[0]  # worker 0's
        self.rw = self.h.token("read", "write")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        return self.h.request(method, path, body, self.rw)

    def test_drain_every_worker(self) -> None:
        """POST /drain drains both workers; GET /drain adds their calls; finished when both are."""
        self.calls[0].calls["a"] = FakeCall("a", START)
        self.calls[1].calls["b"] = FakeCall("b", START)
        self.calls[1].calls["c"] = FakeCall("c", START)
        started = self.request("POST", V1 + "/drain", {"timeout": 10})
        self.assertEqual(started.status, 202, started.body)
        self.assertTrue(all(c.draining for c in self.calls))
        state = started.json()
        self.assertEqual((state["draining"], state["active_calls"]), (True, 3))
        self.assertEqual(state["workers"]["up"], 2)
        del self.calls[0].calls["a"]
        self.clock.advance(1.0)
        state = self.request("GET", V1 + "/drain").json()
        self.assertEqual((state["active_calls"], state["finished"]), (2, False))
        self.assertEqual([w["finished"] for w in state["workers"]["each"]], [True, False])
        self.clock.advance(9.0)  # the timeout: worker 1 hangs up its calls
        state = self.request("GET", V1 + "/drain").json()
        self.assertEqual((state["active_calls"], state["finished"]), (0, True))

    def test_status_counts_workers(self) -> None:
        """/status says how many workers run and whether the PBX drains."""
        self.pbx.supervisor.ended(1, None, 9)
        status = self.request("GET", V1 + "/status").json()
        self.assertEqual(status["workers"], {"count": 2, "up": 1})
        self.assertFalse(status["draining"])

    def test_supervisor_silent(self) -> None:
        """No answer from the supervisor: 503 with a clear error, no traceback."""
        self.pbx.current(0).channel.connectionLost()
        response = self.request("GET", V1 + "/drain")
        self.assertEqual(response.status, 503)
        self.assertIn("did not answer", response.json()["error"]["message"])

    def test_metrics_of_both(self) -> None:
        """/metrics: both workers' registrations, each under its worker label."""
        response = self.request("GET", "/metrics")
        self.assertEqual(response.status, 200)
        merged = samples(response.body)
        total = "warden_registrar_registrations_total"
        self.assertEqual(merged[(total, (("kind", "new"), ("worker", "0")))], 3)
        self.assertEqual(merged[(total, (("kind", "new"), ("worker", "1")))], 4)

    def test_bad_drain_timeout_from_channel(self) -> None:
        """A worker refuses a drain timeout that is no number of seconds 0..86400."""
        answers = WorkerAnswers(self.drains[1], lambda: b"")
        for bad in ("10", True, -1, 86401):
            self.assertRaises(ValueError, answers, "drain", {"timeout": bad})
        self.assertRaises(ValueError, answers, "reboot", {})
        self.assertFalse(self.drains[1].draining)
