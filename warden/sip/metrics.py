"""
Prometheus metrics of the SIP layer (``warden_sip_*``, ``warden_registrar_*``).

Labels are bounded: method (known methods, else "other"), status class,
transport. Never Call-ID, user or address.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from zope.interface import implementer

from warden.interfaces import ITransactionObserver

KNOWN_METHODS = frozenset(
    ["ACK", "BYE", "CANCEL", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS", "PRACK",
     "PUBLISH", "REFER", "REGISTER", "SUBSCRIBE", "UPDATE"]
)  # fmt: skip

REQUESTS = Counter("warden_sip_requests_total", "SIP requests received", ["method", "transport"])
RESPONSES_SENT = Counter(
    "warden_sip_responses_sent_total",
    "SIP responses sent",
    ["method", "status_class", "transport"],
)
PARSE_ERRORS = Counter(
    "warden_sip_parse_errors_total", "Malformed SIP messages received", ["transport"]
)
TCP_REFUSED = Counter(
    "warden_sip_tcp_refused_total",
    "TCP connections closed at once: their source IP held sip.tcp_connections_per_ip",
)
TCP_MESSAGE_TIMEOUTS = Counter(
    "warden_sip_tcp_message_timeouts_total",
    "TCP connections closed because a message took longer than sip.tcp_message_timeout",
)
TLS_HANDSHAKE_TIMEOUTS = Counter(
    "warden_sip_tls_handshake_timeouts_total",
    "TLS connections closed because the handshake took longer than tls.handshake_timeout",
)
TLS_HANDSHAKE_FAILURES = Counter(
    "warden_sip_tls_handshake_failures_total",
    "TLS connections whose handshake failed (no common version or cipher, bad certificate)",
)
AUTH_FAILURES = Counter("warden_sip_auth_failures_total", "Failed digest authentications")
AUTH_FIPS_REFUSED = Counter(
    "warden_sip_auth_fips_refused_total",
    "Digest credentials in an algorithm FIPS mode refuses (MD5), answered with a new challenge",
)
THROTTLED = Counter(
    "warden_sip_throttled_total", "Requests dropped from sources blocked for failed auth"
)
RESPONSES_PASSED_ON = Counter(
    "warden_sip_responses_passed_on_total",
    "Responses that reached a worker's shared port and went on to the worker their Via names",
)
THROTTLED_SOURCES = Gauge(
    "warden_sip_throttled_sources", "Source addresses currently blocked for failed auth"
)
REGISTRATIONS = Counter(
    "warden_registrar_registrations_total", "Successful REGISTER requests", ["kind"]
)
BINDINGS = Gauge("warden_registrar_bindings", "Current registrar bindings")
HOP_FORWARDED = Counter(
    "warden_sip_hop_forwarded_total",
    "Messages forwarded for other nodes to phones whose flow this node holds",
    ["kind"],
)
NODE_STREAM_REQUESTS = Counter(
    "warden_sip_node_tcp_requests_total",
    "Requests sent to another node over TCP for their size (RFC 3261 §18.1.1)",
)
HOP_REFUSED = Counter(
    "warden_sip_hop_refused_total",
    "Requests routed through this node that it could not forward",
    ["status"],
)
IN_DIALOG_REFUSED = Counter(
    "warden_sip_in_dialog_refused_total",
    "In-dialog requests refused because they did not come from the dialog's peer",
    ["method"],
)
UDP_DROPS = Counter(
    "warden_sip_udp_drops_total",
    "SIP datagrams the kernel dropped because the socket's receive buffer was full",
)
CALL_LEGS = Counter(
    "warden_call_legs_total",
    "Ended call legs by side and signalling transport (tls: encrypted signalling)",
    ["leg", "transport"],
)
EXPIRED = Counter("warden_registrar_expired_total", "Bindings removed because they expired")
CALL_ATTEMPTS = Counter(
    "warden_calls_attempted_total", "Authenticated INVITEs that started a call attempt"
)
CALL_ANSWERS = Counter("warden_calls_answered_total", "Calls answered")
CALLS_ENDED = Counter(
    "warden_calls_ended_total",
    "Calls ended, by disposition (ANSWERED, BUSY, NO ANSWER, FAILED, CANCELLED)",
    ["disposition"],
)
CALL_SETUP_SECONDS = Histogram(
    "warden_call_setup_seconds",
    "Time from a call's INVITE to its answer",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0),
)
TRANSACTION_SECONDS = Histogram(
    "warden_sip_transaction_seconds",
    "Time from a transaction's request to its final response (RFC 3261 §17), or its timeout",
    ["method", "role"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


def method_label(method: str) -> str:
    """The method, or "other" for methods outside the known set."""
    return method if method in KNOWN_METHODS else "other"


# Label children, looked up once: ``labels()`` is slow for a per-message call.
# Keys are label values, so these dicts are as bounded as the labels are.
_REQUEST_CHILDREN: dict[tuple[str, str], Any] = {}
_RESPONSE_CHILDREN: dict[tuple[int, str, str], Any] = {}


def count_request(method: str, transport: str) -> None:
    """Count one request received (``warden_sip_requests_total``)."""
    key = (method_label(method), transport)
    child = _REQUEST_CHILDREN.get(key)
    if child is None:
        child = _REQUEST_CHILDREN[key] = REQUESTS.labels(*key)
    child.inc()


def count_response(status: int, transport: str, method: str = "other") -> None:
    """
    Count one response sent (``warden_sip_responses_sent_total``), by the method
    it answers (its CSeq method), status class and transport.
    """
    key = (status // 100, transport, method)
    child = _RESPONSE_CHILDREN.get(key)
    if child is None:
        child = _RESPONSE_CHILDREN[key] = RESPONSES_SENT.labels(
            method_label(method), f"{key[0]}xx", transport
        )
    child.inc()


_REGISTRATION_CHILDREN: dict[str, Any] = {}


def count_registration(kind: str) -> None:
    """Count one successful REGISTER (``warden_registrar_registrations_total``)."""
    child = _REGISTRATION_CHILDREN.get(kind)
    if child is None:
        child = _REGISTRATION_CHILDREN[kind] = REGISTRATIONS.labels(kind)
    child.inc()


_TRANSACTION_CHILDREN: dict[tuple[str, str], Any] = {}


def observe_transaction(method: str, role: str, seconds: float) -> None:
    """Observe one transaction's latency (``warden_sip_transaction_seconds``)."""
    key = (method_label(method), role)
    child = _TRANSACTION_CHILDREN.get(key)
    if child is None:
        child = _TRANSACTION_CHILDREN[key] = TRANSACTION_SECONDS.labels(*key)
    child.observe(seconds)


@implementer(ITransactionObserver)
class TransactionMetrics:
    """
    The transaction layer's reports as metrics: each response sent counts in
    ``warden_sip_responses_sent_total``, each transaction's latency is observed in
    ``warden_sip_transaction_seconds``. The SIP service binds its layer to one.

    The methods are the counting functions themselves: reporting costs the
    transaction one call, as counting directly did.
    """

    response_sent = staticmethod(count_response)
    exchange_ended = staticmethod(observe_transaction)
