"""
Store URLs: which database ``[store] url`` (and ``wardenctl migrate-store``) names.

Two schemes:

- ``sqlite:///var/lib/warden/warden.db`` (or ``sqlite:/abs/path``; ``sqlite:rel/path``
  is relative to the working directory): the embedded SQLite file.
- ``postgresql://user@host:port/dbname?sslmode=require`` (``postgres://`` too): a
  PostgreSQL database. Query parameters are libpq connection parameters.

A password never appears in the URL: it comes from the environment
(``WARDEN_STORE_PASSWORD``) or from a file (``[store] password_file``), so the
configuration file alone never holds it, and a URL can always be shown.
L{redact_dsn} masks a password in any DSN text before it is printed.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs

from warden.errors import StoreError

__all__ = [
    "PASSWORD_ENVIRONMENT",
    "StoreURL",
    "parse_store_url",
    "read_password",
    "redact_dsn",
]

PASSWORD_ENVIRONMENT = "WARDEN_STORE_PASSWORD"

# libpq parameters a URL query may set; connection-shaping ones come from the URL.
_LIBPQ_QUERY = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "connect_timeout",
        "application_name",
        "target_session_attrs",
        "options",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "gssencmode",
        "channel_binding",
    }
)
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.$-]{1,63}$")


@attrs.frozen
class StoreURL:
    """
    A parsed store URL.

    Attributes:
        dialect: ``sqlite`` or ``postgresql``.
        path: the SQLite file (``sqlite`` only).
        host, port, database, user: the PostgreSQL server, database and role
            (``postgresql`` only; port 5432 when not given).
        params: extra libpq parameters from the query string, sorted by name.
    """

    dialect: str
    path: str = ""
    host: str = ""
    port: int = 5432
    database: str = ""
    user: str = ""
    params: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        """The URL, normalised; it never contains a password."""
        if self.dialect == "sqlite":
            return f"sqlite://{self.path}" if self.path.startswith("/") else f"sqlite:{self.path}"
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = "&".join(f"{k}={v}" for k, v in self.params)
        return f"postgresql://{user}{host}:{self.port}/{self.database}" + (
            f"?{query}" if query else ""
        )

    def connect_kwargs(self, password: str | None) -> dict[str, str]:
        """libpq keyword parameters for this URL (PostgreSQL only)."""
        if self.dialect != "postgresql":
            raise StoreError(f"{self} is not a PostgreSQL URL")
        kwargs = {"host": self.host, "port": str(self.port), "dbname": self.database}
        if self.user:
            kwargs["user"] = self.user
        kwargs.update(self.params)
        if password is not None:
            kwargs["password"] = password
        return kwargs


def parse_store_url(text: str) -> StoreURL:
    """
    Parse a store URL.

    Raises:
        ValueError: the URL is malformed, names an unknown scheme, or holds a
            password; the message says which, never echoing a password.
    """
    if text.startswith("sqlite:"):
        return _parse_sqlite(text[len("sqlite:") :])
    scheme = text.split(":", 1)[0] if ":" in text else ""
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(
            'must start with "sqlite:" or "postgresql://"'
            f" (got {scheme + ':' if scheme else 'no scheme'})"
        )
    return _parse_postgresql(text)


def _parse_sqlite(rest: str) -> StoreURL:
    if rest.startswith("//"):
        rest = rest[2:]
        if not rest.startswith("/"):
            raise ValueError("a sqlite URL has no host: use sqlite:///absolute/path.db")
    path = unquote(rest)
    if not path or path.endswith("/"):
        raise ValueError("a sqlite URL must name a database file")
    return StoreURL("sqlite", path=path)


def _parse_postgresql(text: str) -> StoreURL:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"malformed PostgreSQL URL ({redact_dsn(str(e))})") from None
    if parts.password is not None:
        raise ValueError(
            f"must not contain a password: set {PASSWORD_ENVIRONMENT} or [store] password_file"
        )
    if parts.fragment:
        raise ValueError("a PostgreSQL URL has no #fragment")
    host = parts.hostname or ""
    if not host:
        raise ValueError("a PostgreSQL URL needs a host: postgresql://user@host:port/dbname")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ValueError("a PostgreSQL URL names one database: postgresql://user@host/dbname")
    user = unquote(parts.username or "")
    for what, value in (("database", database), ("user", user)):
        if value and not _IDENTIFIER.match(value):
            raise ValueError(f"unusable {what} name {value!r}")
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key == "password":
            raise ValueError(
                f"must not contain a password: set {PASSWORD_ENVIRONMENT} or [store] password_file"
            )
        if key not in _LIBPQ_QUERY:
            known = ", ".join(sorted(_LIBPQ_QUERY))
            raise ValueError(f"unknown connection parameter {key!r} (known: {known})")
        params[key] = value
    return StoreURL(
        "postgresql",
        host=host,
        port=port if port is not None else 5432,
        database=database,
        user=user,
        params=tuple(sorted(params.items())),
    )


def read_password(password_file: str, environ: dict[str, str] | None = None) -> str | None:
    """
    The store password: ``$WARDEN_STORE_PASSWORD`` if set (even empty), else the
    first line of ``password_file`` if one is named, else None (libpq may still
    find one in ``~/.pgpass``).

    Raises:
        StoreError: the password file cannot be read (the message names the
            file, never its content).
    """
    environ = dict(os.environ) if environ is None else environ
    if PASSWORD_ENVIRONMENT in environ:
        return environ[PASSWORD_ENVIRONMENT]
    if not password_file:
        return None
    try:
        with open(password_file, encoding="utf-8") as f:
            first = f.readline()
    except OSError as e:
        raise StoreError(
            f"store.password_file: cannot read {password_file}: {e.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise StoreError(f"store.password_file: {password_file} is not UTF-8 text") from None
    return first.rstrip("\r\n")


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_dsn(text: str) -> str:
    """``text`` with any password in a URL (``user:pw@``) or ``password=`` masked."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _KEYWORD_PASSWORD.sub(r"\1***", text)
