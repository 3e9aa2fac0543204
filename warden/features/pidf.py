"""
PIDF-LO documents carrying a civic address (RFC 4119 §2.2.1, RFC 5139, with
the RFC 5491 profile: a ``<dm:device>`` tuple holding ``<gp:geopriv>``), and
the SIP location conveyance headers pointing at them (RFC 6442).

The XML is built with L{xml.etree.ElementTree}, which escapes every text
value: a civic element holding ``<`` or ``&`` stays text.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from warden.model.emergency import CIVIC_ELEMENTS

__all__ = [
    "CIVIC_NS",
    "CONTENT_TYPE",
    "DM_NS",
    "GP_NS",
    "PIDF_NS",
    "geolocation_header",
    "pidf_lo",
]

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
GP_NS = "urn:ietf:params:xml:ns:pidf:geopriv10"
CIVIC_NS = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
#: The MIME type of a PIDF-LO body part (RFC 4119 §4).
CONTENT_TYPE = "application/pidf+xml"
_XML_NS = "http://www.w3.org/XML/1998/namespace"

for _prefix, _uri in (("", PIDF_NS), ("gp", GP_NS), ("ca", CIVIC_NS), ("dm", DM_NS)):
    ET.register_namespace(_prefix, _uri)


def _timestamp(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def pidf_lo(
    entity: str, civic: Mapping[str, str], device_id: str, at: float, method: str = "Manual"
) -> bytes:
    """
    A PIDF-LO document giving ``civic`` as the location of the device
    ``device_id`` of ``entity``.

    Args:
        entity: the presentity (``pres:1000@example.com``).
        civic: civic address elements (L{warden.model.emergency.check_civic}),
            written in schema order; unknown names are left out.
        device_id: the ``id`` of the ``<dm:device>`` element (an XML NCName
            is made of it).
        at: unix time of the ``<dm:timestamp>``.
        method: how the location was determined (RFC 4119 ``<gp:method>``;
            ``Manual`` for one an operator configured).
    """
    presence = ET.Element(f"{{{PIDF_NS}}}presence", {"entity": entity})
    ncname = "d" + "".join(c if c.isalnum() else "-" for c in device_id)[:60]
    device = ET.SubElement(presence, f"{{{DM_NS}}}device", {"id": ncname})
    geopriv = ET.SubElement(device, f"{{{GP_NS}}}geopriv")
    info = ET.SubElement(geopriv, f"{{{GP_NS}}}location-info")
    address = ET.SubElement(info, f"{{{CIVIC_NS}}}civicAddress", {f"{{{_XML_NS}}}lang": "en"})
    for name in CIVIC_ELEMENTS:
        if name in civic:
            ET.SubElement(address, f"{{{CIVIC_NS}}}{name}").text = civic[name]
    ET.SubElement(geopriv, f"{{{GP_NS}}}usage-rules")
    ET.SubElement(geopriv, f"{{{GP_NS}}}method").text = method
    ET.SubElement(device, f"{{{DM_NS}}}timestamp").text = _timestamp(at)
    body: bytes = ET.tostring(presence, encoding="utf-8", xml_declaration=True)
    return body


def geolocation_header(content_id: str) -> str:
    """
    The ``Geolocation`` header value pointing at the body part whose
    ``Content-ID`` is ``<content_id>`` (RFC 6442 §4.1: a ``cid:`` URI).
    """
    return f"<cid:{content_id}>"
