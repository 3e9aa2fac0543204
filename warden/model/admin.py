"""
Value objects of the admin plugin: accounts, API tokens, audit entries, and
the endpoints other plugins add to the admin API (L{PluginEndpoint}).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


#: Scopes an API token may carry: read anything, change configuration data,
#: act on calls (hang up).
SCOPES = ("read", "write", "calls")


@attrs.frozen
class AdminAccount:
    """
    An operator who may use the admin API.

    Attributes:
        name: the login name.
        password_hash: ``scrypt$n$r$p$salt$hash`` (L{warden.secrets}).
        totp_secret: the base32 TOTP seed once MFA is enrolled, else "".
        totp_pending: a seed handed out by enrolment and not confirmed yet, else "".
        totp_last_step: the last TOTP time step accepted (a code is used once).
        recovery_hashes: SHA-256 hashes of the unused recovery codes.
        created_at: when the account was made (clock time).
        generation: moves when the password changes or MFA is enrolled; sessions
            and API tokens issued under an older generation stop working.
        disabled: the account cannot log in; its sessions and tokens stop working.
    """

    name: str
    password_hash: str
    created_at: float
    totp_secret: str = ""
    totp_pending: str = ""
    totp_last_step: int = 0
    recovery_hashes: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    generation: int = 0
    disabled: bool = False

    @property
    def mfa_enabled(self) -> bool:
        """Whether logging in needs a TOTP (or recovery) code."""
        return bool(self.totp_secret)


@attrs.frozen
class ApiToken:
    """
    A long-lived token for automation. The secret itself is never stored.

    Attributes:
        token_id: the public part of the token, unique.
        name: what the operator called it.
        secret_hash: SHA-256 (hex) of the secret part.
        scopes: from L{SCOPES}.
        owner: the account that created it.
        created_at: clock time.
        revoked_at: when it was revoked, or None.
        owner_generation: the owner's credential generation when it was made; the
            token stops working when the owner's generation moves.
        expires_at: when it stops working, or None for never.
    """

    token_id: str
    name: str
    secret_hash: str
    scopes: tuple[str, ...] = attrs.field(converter=_strings)
    owner: str
    created_at: float
    revoked_at: float | None = None
    owner_generation: int = 0
    expires_at: float | None = None

    def public(self) -> dict[str, Any]:
        """What the API shows of the token: everything but the secret hash."""
        return {
            "id": self.token_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "owner": self.owner,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "expires_at": self.expires_at,
        }


@attrs.frozen
class AuditEntry:
    """
    One state-changing admin request.

    Attributes:
        at: when (clock time).
        actor: the account, or ``token:<id>``, or "-" when unauthenticated.
        source: the client's address.
        action: what was asked, e.g. ``POST /api/v1/extensions``.
        target: the object acted on ("100"), or "".
        status: the HTTP status of the answer.
        detail: extra JSON facts (never secrets).
        entry_id: its position in the log (0 before it is appended).
    """

    at: float
    actor: str
    source: str
    action: str
    target: str
    status: int
    detail: dict[str, Any] = attrs.field(factory=dict, hash=False)
    entry_id: int = 0

    def to_json(self) -> dict[str, Any]:
        """The entry as the API returns it."""
        return {
            "id": self.entry_id,
            "at": self.at,
            "actor": self.actor,
            "source": self.source,
            "action": self.action,
            "target": self.target,
            "status": self.status,
            "detail": self.detail,
        }


@attrs.frozen
class EndpointRequest:
    """
    A request to a plugin's endpoint, checked by the admin API.

    Attributes:
        params: the path parameters, each matching its pattern.
        body: the JSON object body, with only the endpoint's fields, each of
            its type (empty without a body).
    """

    params: Mapping[str, str]
    body: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class EndpointReply:
    """
    A plugin endpoint's answer.

    Attributes:
        body: JSON-able value; None for an empty body (with status 204).
        status: HTTP status.
        target: the object acted on, for the audit log.
        detail: extra audit facts (never secrets).
    """

    body: Any = None
    status: int = 200
    target: str = ""
    detail: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class PluginEndpoint:
    """
    An endpoint a plugin adds to the admin API (``/api/v1``), served with the
    core's authentication, scope check, body checks, error answers and audit,
    and described in the OpenAPI document. A handler refuses a request by
    raising L{warden.errors.ApiError}.

    Attributes:
        method: HTTP method.
        template: path under ``/api/v1`` with ``{name}`` parameters.
        handler: the coroutine answering a checked request.
        scope: the token scope needed (``read``, ``write``, ``calls``).
        summary: one line for the OpenAPI document.
        params: each path parameter's pattern (a full match).
        fields: the JSON body's fields: name -> (type, JSON schema); None when
            the endpoint takes no body.
        ok: the status of success (for the document).
    """

    method: str
    template: str
    handler: Callable[[EndpointRequest], Awaitable[EndpointReply]]
    scope: str
    summary: str
    params: Mapping[str, str] = attrs.field(factory=dict)
    fields: Mapping[str, tuple[type, Mapping[str, Any]]] | None = None
    ok: int = 200
