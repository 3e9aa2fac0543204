"""
Prometheus metrics of the SIP layer (``warden_sip_*``, ``warden_registrar_*``).

Labels are bounded: method (known methods, else "other"), status class,
transport. Never Call-ID, user or address.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge

KNOWN_METHODS = frozenset(
    ["ACK", "BYE", "CANCEL", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS", "PRACK",
     "PUBLISH", "REFER", "REGISTER", "SUBSCRIBE", "UPDATE"]
)  # fmt: skip

REQUESTS = Counter("warden_sip_requests_total", "SIP requests received", ["method", "transport"])
RESPONSES_SENT = Counter(
    "warden_sip_responses_sent_total", "SIP responses sent", ["status_class", "transport"]
)
PARSE_ERRORS = Counter(
    "warden_sip_parse_errors_total", "Malformed SIP messages received", ["transport"]
)
AUTH_FAILURES = Counter("warden_sip_auth_failures_total", "Failed digest authentications")
THROTTLED = Counter(
    "warden_sip_throttled_total", "Requests dropped from sources blocked for failed auth"
)
THROTTLED_SOURCES = Gauge(
    "warden_sip_throttled_sources", "Source addresses currently blocked for failed auth"
)
REGISTRATIONS = Counter(
    "warden_registrar_registrations_total", "Successful REGISTER requests", ["kind"]
)
BINDINGS = Gauge("warden_registrar_bindings", "Current registrar bindings")
UDP_DROPS = Counter(
    "warden_sip_udp_drops_total",
    "SIP datagrams the kernel dropped because the socket's receive buffer was full",
)
EXPIRED = Counter("warden_registrar_expired_total", "Bindings removed because they expired")


def method_label(method: str) -> str:
    """The method, or "other" for methods outside the known set."""
    return method if method in KNOWN_METHODS else "other"


# Label children, looked up once: ``labels()`` is slow for a per-message call.
# Keys are label values, so these dicts are as bounded as the labels are.
_REQUEST_CHILDREN: dict[tuple[str, str], Any] = {}
_RESPONSE_CHILDREN: dict[tuple[int, str], Any] = {}


def count_request(method: str, transport: str) -> None:
    """Count one request received (``warden_sip_requests_total``)."""
    key = (method_label(method), transport)
    child = _REQUEST_CHILDREN.get(key)
    if child is None:
        child = _REQUEST_CHILDREN[key] = REQUESTS.labels(*key)
    child.inc()


def count_response(status: int, transport: str) -> None:
    """Count one response sent (``warden_sip_responses_sent_total``), by status class."""
    key = (status // 100, transport)
    child = _RESPONSE_CHILDREN.get(key)
    if child is None:
        child = _RESPONSE_CHILDREN[key] = RESPONSES_SENT.labels(f"{key[0]}xx", transport)
    child.inc()


_REGISTRATION_CHILDREN: dict[str, Any] = {}


def count_registration(kind: str) -> None:
    """Count one successful REGISTER (``warden_registrar_registrations_total``)."""
    child = _REGISTRATION_CHILDREN.get(kind)
    if child is None:
        child = _REGISTRATION_CHILDREN[kind] = REGISTRATIONS.labels(kind)
    child.inc()
