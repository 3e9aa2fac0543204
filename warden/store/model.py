"""Value objects kept by the stores."""

from __future__ import annotations

import attrs


@attrs.frozen
class Extension:
    """
    One extension of the directory.

    Attributes:
        number: the extension number, also the SIP user name and AOR user part.
        name: display name ("Front Desk").
        realm: the digest realm the HA1 values were computed with.
        ha1_md5: hex MD5(number:realm:password).
        ha1_sha256: hex SHA-256(number:realm:password) (RFC 8760).
        algorithms: digest algorithms offered to this extension, in order; empty
            means the registrar's configured default.
        enabled: a disabled extension cannot register.
    """

    number: str
    name: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    algorithms: tuple[str, ...] = ()
    enabled: bool = True


@attrs.frozen
class Binding:
    """
    One registered contact of an AOR (RFC 3261 §10.3).

    Attributes:
        aor: extension number.
        contact: the Contact URI exactly as the phone sent it (without the header
            parameters).
        key: comparison key of ``contact`` (``warden.sip.uri.contact_key``).
        expires_at: absolute expiry, seconds since the epoch (clock time).
        q: preference 0.0-1.0.
        call_id: Call-ID of the REGISTER that created or refreshed it.
        cseq: CSeq number of that REGISTER.
        received: where the REGISTER came from, ``transport:host:port``.
        user_agent: the User-Agent header, or "".
        node_id: the Warden node that accepted it.
    """

    aor: str
    contact: str
    key: str
    expires_at: float
    q: float = 1.0
    call_id: str = ""
    cseq: int = 0
    received: str = ""
    user_agent: str = ""
    node_id: str = ""
