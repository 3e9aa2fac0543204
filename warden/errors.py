"""
The Warden exception tree.

``SipError(status, reason)`` is turned into a SIP response in exactly one place
(``warden.sip.dispatch``); ``ConfigError`` surfaces as ``usage.UsageError`` with the file,
key and problem on one line.
"""

from __future__ import annotations


class WardenError(Exception):
    """Base of every error Warden raises on purpose."""


class ConfigError(WardenError):
    """
    A configuration value is missing, unknown or invalid.

    Args:
        path: dotted key, e.g. ``sip.port``.
        problem: what is wrong, in words an operator understands.
        filename: the file the key came from, when there is one.
    """

    def __init__(self, path: str, problem: str, filename: str | None = None) -> None:
        self.path = path
        self.problem = problem
        self.filename = filename
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.filename}: " if self.filename else ""
        return f"{where}{self.path}: {self.problem}"


class SipParseError(WardenError):
    """
    Bytes that are not a well-formed SIP message.

    ``partial`` carries whatever could be parsed (a message object with at least the
    start line and some headers) so that a 400 can still be built when possible.
    """

    def __init__(self, reason: str, partial: object | None = None) -> None:
        self.reason = reason
        self.partial = partial
        super().__init__(reason)


class SipError(WardenError):
    """
    A request that must be answered with a final error response.

    Args:
        status: the SIP status code (400-699).
        reason: the reason phrase.
        headers: extra headers for the response, as ``(name, value)`` pairs.

    Attributes:
        stateless: answer once and forget the transaction (no retransmission
            until an ACK): for answers to requests that may come from a spoofed
            address, such as the 407 challenge to an INVITE.
    """

    stateless = False

    def __init__(
        self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        super().__init__(f"{status} {reason}")


class FlowTokenRefused(WardenError):
    """
    A cluster flow token (L{warden.sip.hop}) that must not be honoured: forged,
    expired, for another call, or presented from outside the cluster. The
    message says which, for the log; the sender only sees 403.
    """


class StoreError(WardenError):
    """A store operation failed."""


class ExtensionExists(StoreError):
    """The extension number is already in the directory."""


class ExtensionNotFound(StoreError):
    """No extension has that number."""


class ConfigFileError(ConfigError):
    """
    The configuration file as a whole is unusable: unreadable, not UTF-8, or not
    valid TOML (the problem then carries tomllib's line and column).
    """

    def __init__(self, problem: str, filename: str | None = None) -> None:
        super().__init__("", problem, filename)

    def __str__(self) -> str:
        where = f"{self.filename}: " if self.filename else ""
        return f"{where}{self.problem}"


class StateUnavailable(StoreError):
    """
    The shared state store (Redis) did not answer in time or failed; the request
    that needed it is answered 503 with Retry-After, and the next one tries again.
    """


class StaleBindings(StoreError):
    """
    A guarded write of an AOR's bindings found them changed since this node's
    view (L{warden.interfaces.IGuardedLocation}); nothing was written.
    """


class StoreUnavailable(StoreError):
    """
    The database could not be reached (or kept failing) within the store's
    retries (L{warden.store.pgpool}); the request that needed it is answered 503
    with Retry-After, like L{StateUnavailable}.
    """


class CallRecordNotFound(StoreError):
    """No call record has that call_id (e.g. a paging cursor that names none)."""


class AdminAccountExists(StoreError):
    """An admin account with that name already exists."""


class AdminAccountNotFound(StoreError):
    """No admin account has that name."""


class ApiError(WardenError):
    """
    An admin API request that must be answered with an error; turned into the
    JSON ``{"error": {"code", "message"}}`` response in exactly one place
    (``warden.admin.http``).

    Args:
        status: the HTTP status (400-599).
        code: a stable machine-readable code ("not_found", "invalid_body").
        message: what went wrong, for people; never contains secrets.
        headers: extra response headers, as ``(name, value)`` pairs.
    """

    def __init__(
        self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        super().__init__(f"{status} {code}: {message}")
