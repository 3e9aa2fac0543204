"""twistd entry points of Warden (declarations only; the code loads lazily)."""

from twisted.application.service import ServiceMaker

warden = ServiceMaker(
    "Warden IP-PBX",
    "warden.tap",
    "Run the Warden PBX (SIP registrar and call server).",
    "warden",
)

loadtest = ServiceMaker(
    "Warden load test",
    "warden.ops.loadtest.tap",
    "Drive a SIP PBX with registrations and calls (with RTP) and report pass/fail.",
    "warden-loadtest",
)

drtest = ServiceMaker(
    "Warden disaster-recovery test",
    "warden.ops.drtest.tap",
    "Restore a Warden backup into scratch, prove it serves calls, measure RTO/RPO.",
    "warden-drtest",
)
