"""
``[state] url``: where the shared, short-lived state lives (L{warden.store.redis}).

Parsed without importing the Redis client, so the configuration can validate it.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import attrs

from warden.digits import parse_uint

PASSWORD_ENV = "WARDEN_STATE_PASSWORD"
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379


class StateURLError(ValueError):
    """A ``[state] url`` that cannot be used; the message says why."""


@attrs.frozen
class StateURL:
    """
    A parsed ``[state] url``.

    Attributes:
        hosts: ``(host, port)`` of the Redis server, or of every Sentinel.
        db: the database number.
        master: the Sentinel service name; "" for a plain Redis URL.
    """

    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    master: str = ""

    @property
    def sentinel(self) -> bool:
        """Whether the URL names Sentinels rather than the server itself."""
        return bool(self.master)


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise StateURLError(f"missing host in {text!r}")
    if port_text == "":
        return host, default_port
    port = parse_uint(port_text, 65535)
    if port is None or port == 0:
        raise StateURLError(f"bad port in {text!r}")
    return host, port


def _db(text: str) -> int:
    if text == "":
        return 0
    number = parse_uint(text, 99999)
    if number is None:
        raise StateURLError(f"the database must be a number, got {text!r}")
    return number


def parse_state_url(url: str) -> StateURL:
    """
    Parse ``redis://host:port/db`` or ``redis+sentinel://host:port,host:port/master/db``.

    A password never goes in the URL (config files get copied and logged): it
    comes from ``$WARDEN_STATE_PASSWORD``.

    Raises:
        StateURLError: the URL is not one of those forms.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "redis+sentinel"):
        raise StateURLError("must start with redis:// or redis+sentinel://")
    location = parts.netloc
    if "@" in location:
        raise StateURLError(f"must not contain credentials: set ${PASSWORD_ENV} instead")
    if parts.query or parts.fragment:
        raise StateURLError("must not have a query or fragment")
    path = [unquote(p) for p in parts.path.split("/")[1:]]
    if parts.scheme == "redis":
        if len(path) > 1:
            raise StateURLError("the path must be /<db> (redis://host:port/0)")
        host = _host_port(location, DEFAULT_PORT)
        return StateURL(hosts=(host,), db=_db(path[0] if path else ""))
    if not path or not path[0]:
        raise StateURLError("needs the master name: redis+sentinel://host:port/<master>/<db>")
    if len(path) > 2:
        raise StateURLError("the path must be /<master>/<db>")
    hosts = tuple(_host_port(h, DEFAULT_SENTINEL_PORT) for h in location.split(","))
    return StateURL(hosts=hosts, db=_db(path[1] if len(path) == 2 else ""), master=path[0])
