"""
Emergency calls (the ``e911`` plugin, ADR 0027): the dispatchable locations
of extensions and networks (RFC 4119 / RFC 5139 civic addresses, as RFC 5491
profiles them for PIDF-LO), and the call observers hear of
(L{warden.interfaces.IEmergencyObserver}).

Civic address elements are named as in the PIDF-LO civic schema
(``urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr``): ``country`` (ISO 3166
alpha-2), ``A1`` (state) ... ``A6``, ``RD`` (road), ``HNO`` (house number),
``FLR``, ``ROOM``, ... An unknown element is refused (L{parse_civic}).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

import attrs

__all__ = [
    "CIVIC_ELEMENTS",
    "CivicError",
    "CivicLocation",
    "EmergencyCall",
    "check_civic",
    "check_location_name",
    "civic_text",
    "parse_civic",
    "parse_network",
]

#: Civic address elements in the order of the RFC 5139 schema (which extends
#: RFC 4119's; ``STS`` is RFC 4119's street suffix, kept for compatibility),
#: each with what it holds.
CIVIC_ELEMENTS: dict[str, str] = {
    "country": "country (ISO 3166 alpha-2 code, e.g. US)",
    "A1": "national subdivision (state, e.g. CA)",
    "A2": "county, parish",
    "A3": "city, township",
    "A4": "city division, borough",
    "A5": "neighbourhood, block",
    "A6": "street (RFC 4119; use RD)",
    "PRM": "road pre-modifier",
    "PRD": "leading street direction",
    "RD": "primary road or street",
    "STS": "street suffix",
    "POD": "trailing street direction",
    "POM": "road post-modifier",
    "RDSEC": "road section",
    "RDBR": "road branch",
    "RDSUBBR": "road sub-branch",
    "HNO": "house number",
    "HNS": "house number suffix",
    "LMK": "landmark or vanity address",
    "LOC": "additional location information",
    "FLR": "floor",
    "NAM": "name (residence, business or office occupant)",
    "PC": "postal code",
    "BLD": "building",
    "UNIT": "unit (apartment, suite)",
    "ROOM": "room",
    "SEAT": "seat (desk, cubicle, workstation)",
    "PLC": "place type",
    "PCN": "postal community name",
    "POBOX": "post office box",
    "ADDCODE": "additional code",
}
#: The longest value of one element, in characters.
MAX_ELEMENT_CHARS = 128
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Elements of the one-line text a person reads (L{civic_text}), in order.
_TEXT_ORDER = (
    ("NAM", "{}"), ("BLD", "Building {}"), ("FLR", "Floor {}"), ("UNIT", "Unit {}"),
    ("ROOM", "Room {}"), ("SEAT", "Seat {}"), ("LOC", "{}"),
)  # fmt: skip
_STREET = ("HNO", "HNS", "PRD", "PRM", "RD", "STS", "POD", "POM", "A6")
_AREA = ("A3", "A1", "PC", "country")


class CivicError(ValueError):
    """A civic address, location name or network that cannot be used (says why)."""


def check_location_name(name: str) -> str:
    """
    ``name`` when it can name a location: ASCII letters, digits, ``_.-``,
    starting with a letter or digit, at most 64 characters.

    Raises:
        CivicError: it cannot.
    """
    if not _NAME.match(name):
        raise CivicError(
            f"location name {name!r}: use 1 to 64 ASCII letters, digits, '_', '.' or '-'"
        )
    return name


def check_civic(elements: Mapping[str, str]) -> dict[str, str]:
    """
    ``elements`` as a civic address in schema order, once checked: known
    element names only, ``country`` present and an ISO 3166 alpha-2 code,
    printable values of at most L{MAX_ELEMENT_CHARS} characters, no empty one.

    Raises:
        CivicError: naming the element and what is wrong.
    """
    for key, value in elements.items():
        if key not in CIVIC_ELEMENTS:
            known = ", ".join(CIVIC_ELEMENTS)
            raise CivicError(f"unknown civic address element {key!r} (known: {known})")
        if not isinstance(value, str) or not value.strip():
            raise CivicError(f"civic address element {key!r} is empty")
        if len(value) > MAX_ELEMENT_CHARS or not value.isprintable():
            raise CivicError(
                f"civic address element {key!r} must be printable text of at most"
                f" {MAX_ELEMENT_CHARS} characters"
            )
    country = elements.get("country")
    if country is None:
        raise CivicError("a civic address needs 'country' (an ISO 3166 code such as US)")
    if not _COUNTRY.match(country):
        raise CivicError(f"country {country!r} is not an ISO 3166 alpha-2 code (such as US)")
    return {key: elements[key].strip() for key in CIVIC_ELEMENTS if key in elements}


def parse_civic(text: str) -> dict[str, str]:
    """
    The civic address of ``country=US,A1=CA,A3=San Jose,RD=Main St,HNO=100``
    (comma-separated ``ELEMENT=value`` pairs; a value holds no comma).

    Raises:
        CivicError: a pair without ``=``, an element given twice, or a civic
            address L{check_civic} refuses.
    """
    elements: dict[str, str] = {}
    for pair in text.split(","):
        if not pair.strip():
            continue
        key, equals, value = pair.partition("=")
        key = key.strip()
        if not equals:
            raise CivicError(f"{pair.strip()!r} is not ELEMENT=value")
        if key in elements:
            raise CivicError(f"civic address element {key!r} is given twice")
        elements[key] = value.strip()
    return check_civic(elements)


def civic_text(civic: Mapping[str, str]) -> str:
    """
    The dispatchable location as one line a person reads: street, then
    building, floor, room..., then city, state, postal code and country
    (``100 Main St, Floor 2, Room 201, San Jose, CA, 95113, US``).
    """
    street = " ".join(civic[k] for k in _STREET if k in civic)
    parts = [street] if street else []
    parts += [form.format(civic[k]) for k, form in _TEXT_ORDER if k in civic]
    parts += [civic[k] for k in _AREA if k in civic]
    return ", ".join(parts)


def parse_network(text: str) -> str:
    """
    The network ``text`` names (``10.1.2.0/24``, ``2001:db8::/48``, or one
    address), in canonical form.

    Raises:
        CivicError: not a network, or host bits set.
    """
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError as e:
        raise CivicError(f"{text!r} is not a network such as 10.1.2.0/24: {e}") from None


def _frozen_civic(value: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    return dict(value)


@attrs.frozen
class CivicLocation:
    """
    A named dispatchable location.

    Attributes:
        name: how extensions and networks refer to it (``hq-floor2``).
        civic: its civic address elements (L{check_civic}), in schema order.
    """

    name: str
    civic: dict[str, str] = attrs.field(converter=_frozen_civic, hash=False)

    @property
    def text(self) -> str:
        """The location as one line a person reads (L{civic_text})."""
        return civic_text(self.civic)


@attrs.frozen
class EmergencyCall:
    """
    An emergency call as it starts, for its observers (notifications,
    metrics).

    Attributes:
        call_id: Warden's identifier of the call (its call record's).
        extension: the calling extension.
        caller_name: its display name ("" when none).
        callback_number: the number the PSAP calls back (sent in
            P-Asserted-Identity).
        dialled: what the caller dialled (``911``, ``9911``, ``933``).
        test: a test call (``933``), routed the same way.
        location_name: the dispatchable location's name ("" when none is known).
        civic: its civic address elements (PIDF-LO, RFC 5139 names).
        location_text: the same as one line a person reads.
        location_is_default: the site default was used (the device has none).
        started_at: unix time the call started.
        node: the node placing the call.
    """

    call_id: str
    extension: str
    caller_name: str
    callback_number: str
    dialled: str
    test: bool
    location_name: str
    civic: dict[str, str] = attrs.field(converter=_frozen_civic, hash=False)
    location_text: str = ""
    location_is_default: bool = False
    started_at: float = 0.0
    node: str = ""
