"""
Prometheus metrics of the built-in media relay (``warden_rtp_*``, ``warden_media_*``).

Labels are bounded: ``reason`` takes only the values of L{DROP_REASONS}. Never a
Call-ID, port or address. Per-packet counters are exported in batches by
``MediaSession.flush_metrics`` (each timeout check and on release).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Why a packet was not relayed: a source other than the latched one (and not
#: allowed to latch), a new source still proving itself (ADR 0013), no known
#: destination on the far side yet, not RTP/RTCP, or the socket refused to send;
#: on an SRTP leg (ADR 0019) a bad authentication tag, a replayed packet index
#: (RFC 3711 §3.3.2), or a packet the leg's context would not protect.
DROP_REASONS = (
    "spoofed", "pending", "no_destination", "malformed", "send_error",
    "auth_failed", "replayed", "protect_failed",
)  # fmt: skip

PACKETS_RELAYED = Counter(
    "warden_rtp_packets_relayed_total", "RTP and RTCP packets relayed between call legs"
)
BYTES_RELAYED = Counter("warden_rtp_bytes_relayed_total", "UDP payload bytes relayed")
PACKETS_DROPPED = Counter(
    "warden_rtp_packets_dropped_total", "Packets received but not relayed", ["reason"]
)
DROPPED = {reason: PACKETS_DROPPED.labels(reason) for reason in DROP_REASONS}
REFUSED_DESTINATIONS = Counter(
    "warden_media_refused_destinations_total",
    "SDP media addresses the relay refused to send to ([media] destinations, ADR 0013)",
)
LEGS = Counter(
    "warden_media_legs_total",
    "Call legs whose media session ended, by whether their media was SRTP (ADR 0019)",
    ["media"],
)
LEGS_BY_MEDIA = {media: LEGS.labels(media) for media in ("srtp", "rtp")}
LOST = Counter(
    "warden_rtp_lost_packets_total",
    "RTP packets lost before reaching the relay (sequence gaps, RFC 3550 A.1)",
)
DTMF_EVENTS = Counter("warden_rtp_dtmf_events_total", "RFC 4733 telephone-events relayed")
PORTS_IN_USE = Gauge("warden_media_ports_in_use", "UDP ports bound by the media relay")
SESSIONS = Gauge("warden_media_sessions", "Media relay sessions allocated")
TIMEOUTS = Counter("warden_media_timeouts_total", "Sessions whose media stopped (not on hold)")
BIND_FAILURES = Counter(
    "warden_media_bind_failures_total", "Relay ports that could not be bound and were skipped"
)
ALLOCATION_FAILURES = Counter(
    "warden_media_allocation_failures_total", "Calls refused media ports (range exhausted)"
)
JITTER_SECONDS = Histogram(
    "warden_rtp_jitter_seconds",
    "Interarrival jitter (RFC 3550 §6.4.1) of each call leg's incoming RTP, at call end",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5),
)
STALE_RECORDS = Counter(
    "warden_media_stale_records_total",
    "Calls whose record got the media process's last periodic counters, not its final"
    " count (no answer to the release in time, or the process died; ADR 0033)",
)
