"""
``/metrics``: the Prometheus exposition of every ``warden_*`` family (the SIP,
RTP, store, CDR spool and admin TLS modules define theirs), plus values read when
scraped: calls in progress and the transaction layer's retransmission counts.

Each family is defined once: the exposition is one text, and a name declared
twice makes Prometheus' parser refuse all of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

# The modules defining the families served here (imported for their registration).
from warden import tls
from warden.rtp import metrics as rtp_metrics
from warden.sip import metrics as sip_metrics
from warden.store import interaction, spool
from warden.workerlink import ChannelError

FAMILY_MODULES = (rtp_metrics, sip_metrics, interaction, spool, tls)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class WardenCollector:
    """
    Families computed at scrape time from the running objects.

    The CDR spool's depth is not among them: the spool keeps its own gauge
    (``warden_cdr_spool_depth``, L{warden.store.spool}).

    Args:
        calls: the CallController (``calls``), or None.
        transactions: the TransactionLayer (``retransmissions``, ``absorbed``), or None.
    """

    def __init__(self, calls: Any = None, transactions: Any = None) -> None:
        self._calls = calls
        self._transactions = transactions

    def collect(self) -> Iterator[Metric]:
        """The families, with current values."""
        calls = len(self._calls.calls) if self._calls is not None else 0
        yield GaugeMetricFamily("warden_calls_active", "Calls in progress on this node", calls)
        sent = absorbed = 0
        if self._transactions is not None:
            sent = self._transactions.retransmissions
            absorbed = self._transactions.absorbed
        yield CounterMetricFamily(
            "warden_sip_retransmissions",
            "SIP requests and responses sent again because a timer fired (RFC 3261 §17)",
            sent,
        )
        yield CounterMetricFamily(
            "warden_sip_retransmissions_absorbed",
            "Retransmissions received and absorbed by their transaction",
            absorbed,
        )


class LocalExposition:
    """
    This process's exposition: the default registry and the scrape-time
    collector's families.

    Args:
        collector: the scrape-time families.
        registry: the families defined by the modules.
    """

    def __init__(self, collector: WardenCollector, registry: CollectorRegistry = REGISTRY):
        self._registry = registry
        self._own = CollectorRegistry(auto_describe=False)
        self._own.register(collector)

    def __call__(self) -> bytes:
        """The exposition text."""
        return bytes(generate_latest(self._registry) + generate_latest(self._own))


class MetricsResource(resource.Resource):
    """
    ``GET /metrics``: this process's families or, with SIP workers, every
    worker's (L{warden.admin.workers.PbxWorkers}, each sample labelled with its
    worker).

    Rendering the exposition costs milliseconds of the reactor's time, so a
    rendering is served again to scrapes within ``max_age`` seconds of it (several
    scrapers, or a burst of them, then cost one rendering).

    Args:
        collector: the scrape-time families.
        clock: times ``max_age``.
        max_age: seconds a rendering is reused (0: never).
        workers: every SIP worker's metrics (None: this process's only).
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        collector: WardenCollector,
        clock: IReactorTime,
        max_age: float = 1.0,
        registry: CollectorRegistry = REGISTRY,
        workers: Any = None,
    ) -> None:
        super().__init__()
        self._local = LocalExposition(collector, registry)
        self._workers = workers
        self._clock = clock
        self._max_age = max_age
        self._cached: tuple[float, bytes] | None = None

    def render_GET(self, request: server.Request) -> bytes | int:
        """The exposition text."""
        request.setHeader("content-type", CONTENT_TYPE)
        now = self._clock.seconds()
        if self._cached is not None and now - self._cached[0] < self._max_age:
            return self._cached[1]
        if self._workers is None:
            text = self._local()
            self._cached = (now, text)
            return text
        d = Deferred.fromCoroutine(self._workers.metrics())
        d.addCallbacks(self._merged, self._unanswered, (request, now), {}, (request,))
        d.addErrback(lambda f: self.log.failure("Rendering /metrics failed", f))
        return server.NOT_DONE_YET

    def _merged(self, text: bytes, request: server.Request, now: float) -> None:
        self._cached = (now, text)
        if not request._disconnected:
            request.write(text)
            request.finish()

    def _unanswered(self, failure: Failure, request: server.Request) -> None:
        failure.trap(ChannelError, ValueError)
        self.log.warn("/metrics: the SIP workers did not answer: {error}", error=failure.value)
        if not request._disconnected:
            request.setResponseCode(503)
            request.write(b"# the SIP worker supervisor did not answer\n")
            request.finish()
