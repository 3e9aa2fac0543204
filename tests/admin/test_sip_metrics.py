"""
The metric families the admin plugin exposes, counted where SIP work happens:
responses by method, status class and transport (reported by the server
transactions), and transaction latency on the injected clock, through the
L{TransactionMetrics} binding the SIP service gives its transaction layer.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.sip.transaction_fakes import UDP, Harness, make_request
from warden.sip import metrics
from warden.sip.message import make_response
from warden.sip.metrics import TransactionMetrics
from warden.testing.sipstack import FakeSipStack


def _value(metric: object) -> float:
    return float(metric._value.get())  # type: ignore[attr-defined]


def _histogram_count(method: str, role: str) -> float:
    for family in metrics.TRANSACTION_SECONDS.collect():
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels == {
                "method": method,
                "role": role,
            }:
                return float(sample.value)
    return 0.0


class ResponseCountTests(SynchronousTestCase):
    """warden_sip_responses_sent_total."""

    def test_counted_once_per_response_sent(self) -> None:
        """A response the TU sends counts once; answering a retransmission does not."""
        h = Harness(observer=TransactionMetrics())
        child = metrics.RESPONSES_SENT.labels("OPTIONS", "2xx", "udp")
        before = _value(child)
        request = make_request("OPTIONS")
        h.receive(request, UDP)
        txn = h.tu.transactions[-1]
        txn.respond(make_response(request, 200))
        h.receive(request, UDP)  # a retransmission, answered from the transaction
        self.assertEqual(h.send.statuses, [200, 200])
        self.assertEqual(_value(child), before + 1)

    def test_unknown_method_label(self) -> None:
        """Methods outside the known set are labelled "other" (bounded labels)."""
        child = metrics.RESPONSES_SENT.labels("other", "4xx", "tcp")
        before = _value(child)
        metrics.count_response(405, "tcp", "FROBNICATE")
        self.assertEqual(_value(child), before + 1)


class TransactionLatencyTests(SynchronousTestCase):
    """warden_sip_transaction_seconds, on the harness clock."""

    def test_server_latency(self) -> None:
        """The time from the request to the final response is observed once."""
        h = Harness(observer=TransactionMetrics())
        before = _histogram_count("OPTIONS", "server")
        request = make_request("OPTIONS")
        h.receive(request, UDP)
        txn = h.tu.transactions[-1]
        h.clock.advance(0.25)
        txn.respond(make_response(request, 100))
        self.assertEqual(_histogram_count("OPTIONS", "server"), before)
        txn.respond(make_response(request, 200))
        self.assertEqual(_histogram_count("OPTIONS", "server"), before + 1)
        h.clock.advance(60)
        self.assertEqual(_histogram_count("OPTIONS", "server"), before + 1)


class ServiceBindingTests(SynchronousTestCase):
    """The SIP service binds its transaction layer to the metrics."""

    def test_service_counts_responses_and_latency(self) -> None:
        """
        An OPTIONS answered through the SIP service's transaction layer counts
        one response and one server transaction.
        """
        stack = FakeSipStack()
        child = metrics.RESPONSES_SENT.labels("OPTIONS", "2xx", "udp")
        before, latencies = _value(child), _histogram_count("OPTIONS", "server")
        request = make_request("OPTIONS")
        (response,) = stack.send_udp(request.to_bytes())
        self.assertEqual(response.status, 200)  # type: ignore[attr-defined]
        self.assertEqual(_value(child), before + 1)
        self.assertEqual(_histogram_count("OPTIONS", "server"), latencies + 1)
