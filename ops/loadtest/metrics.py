"""
Live metrics of a running load test for Prometheus (``--prometheus-port``), so a
Grafana panel can watch a test: operations started, succeeded and failed by phase
(failures also by cause), operations in flight, and RTP packets sent and lost.
Served as plain HTTP ``/metrics`` on 127.0.0.1 from a registry of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource
from twisted.web.server import Site

if TYPE_CHECKING:
    from .runner import LoadTest


class LoadTestCollector:
    """Reads the run's recorder at every scrape (no bookkeeping of its own)."""

    def __init__(self, test: LoadTest) -> None:
        self.test = test

    def collect(self) -> Iterator[Metric]:
        """The metric families."""
        recorder = self.test.recorder
        started = CounterMetricFamily(
            "warden_loadtest_operations_started", "Operations started", labels=["phase"]
        )
        finished = CounterMetricFamily(
            "warden_loadtest_operations_finished",
            "Operations finished, by outcome",
            labels=["phase", "outcome"],
        )
        failures = CounterMetricFamily(
            "warden_loadtest_failures", "Failed operations by cause", labels=["phase", "cause"]
        )
        for phase, counts in sorted(recorder.phases.items()):
            started.add_metric([phase], counts.attempted)
            finished.add_metric([phase, "success"], counts.succeeded)
            finished.add_metric([phase, "failure"], counts.failed)
            for cause, n in sorted(counts.causes.items()):
                failures.add_metric([phase, cause], n)
        in_flight = GaugeMetricFamily("warden_loadtest_in_flight", "Operations in flight")
        in_flight.add_metric([], recorder.in_flight)
        rtp = CounterMetricFamily(
            "warden_loadtest_rtp_packets", "RTP packets of finished calls", labels=["kind"]
        )
        rtp.add_metric(["sent"], recorder.rtp.sent)
        rtp.add_metric(["lost"], recorder.rtp.lost)
        yield from (started, finished, failures, in_flight, rtp)


def metrics_site(test: LoadTest) -> Site:
    """A site serving ``/metrics`` for ``test``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LoadTestCollector(test))
    root = Resource()  # type: ignore[no-untyped-call]
    root.putChild(b"metrics", MetricsResource(registry=registry))  # type: ignore[no-untyped-call]
    return Site(root)  # type: ignore[no-untyped-call]


def serve_metrics(reactor: Any, port: int, test: LoadTest) -> Any:
    """Listen on 127.0.0.1:``port``; returns the listening port."""
    return reactor.listenTCP(port, metrics_site(test), interface="127.0.0.1")
