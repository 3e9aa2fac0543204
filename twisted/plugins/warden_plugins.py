"""twistd entry points of Warden (declarations only; the code loads lazily)."""

from twisted.application.service import ServiceMaker

warden = ServiceMaker(
    "Warden IP-PBX",
    "warden.tap",
    "Run the Warden PBX (SIP registrar and call server).",
    "warden",
)
