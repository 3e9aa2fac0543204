"""
Store URLs (L{warden.store.url}), the store password, and the start-up check of
L{warden.store.backend.check_store} against the throwaway PostgreSQL server.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from warden.errors import StoreError
from warden.store.backend import check_store, connect_kwargs
from warden.store.url import StoreURL, parse_store_url, read_password, redact_dsn
from warden.testing import servers


class ParseTests(SynchronousTestCase):
    """parse_store_url accepts the documented forms and refuses the rest clearly."""

    def test_sqlite_forms(self) -> None:
        """sqlite:///abs, sqlite:/abs and sqlite:rel name files; str() normalises."""
        self.assertEqual(
            parse_store_url("sqlite:///var/w.db"), StoreURL("sqlite", path="/var/w.db")
        )
        self.assertEqual(parse_store_url("sqlite:/var/w.db").path, "/var/w.db")
        self.assertEqual(parse_store_url("sqlite:data/w.db").path, "data/w.db")
        self.assertEqual(str(parse_store_url("sqlite:/var/w.db")), "sqlite:///var/w.db")
        self.assertEqual(str(parse_store_url("sqlite:data/w.db")), "sqlite:data/w.db")

    def test_sqlite_refused(self) -> None:
        """A host in a sqlite URL, or no file name, is refused."""
        for url in ["sqlite://host/w.db", "sqlite:", "sqlite:///var/"]:
            self.assertRaises(ValueError, parse_store_url, url)

    def test_postgresql(self) -> None:
        """Host, port (5432 by default), database, user and libpq parameters."""
        url = parse_store_url("postgres://warden@db.example/pbx?sslmode=require&connect_timeout=3")
        self.assertEqual(
            url,
            StoreURL(
                "postgresql",
                host="db.example",
                port=5432,
                database="pbx",
                user="warden",
                params=(("connect_timeout", "3"), ("sslmode", "require")),
            ),
        )
        self.assertEqual(
            str(url), "postgresql://warden@db.example:5432/pbx?connect_timeout=3&sslmode=require"
        )
        self.assertEqual(
            str(parse_store_url("postgresql://[::1]:6000/w")), "postgresql://[::1]:6000/w"
        )

    def test_postgresql_refused(self) -> None:
        """Each malformed PostgreSQL URL gets a message saying what is wrong."""
        cases = {
            "mysql://db/w": "must start with",
            "postgresql:///w": "needs a host",
            "postgresql://db": "names one database",
            "postgresql://db/a/b": "names one database",
            "postgresql://db:99999/w": "malformed",
            "postgresql://db/w?frobnicate=1": "unknown connection parameter",
            "postgresql://db/w#x": "fragment",
            "postgresql://u:pw@db/w": "must not contain a password",
            "postgresql://u@db/w?password=pw": "must not contain a password",
        }
        for url, expected in cases.items():
            with self.assertRaises(ValueError) as caught:
                parse_store_url(url)
            self.assertIn(expected, str(caught.exception), url)
            self.assertNotIn("pw", str(caught.exception).replace("password", ""), url)

    def test_redact(self) -> None:
        """Passwords in URLs and keyword DSNs are masked; the rest is kept."""
        self.assertEqual(
            redact_dsn("failed: postgresql://u:s3cret@db:5432/w"),
            "failed: postgresql://u:***@db:5432/w",
        )
        self.assertEqual(
            redact_dsn("host=db password='a b' user=u"), "host=db password=*** user=u"
        )
        self.assertEqual(redact_dsn("host=db password=x user=u"), "host=db password=*** user=u")


class PasswordTests(SynchronousTestCase):
    """The password comes from the environment, else the password file."""

    def test_environment_wins(self) -> None:
        """WARDEN_STORE_PASSWORD is used even when a file is named (and unreadable)."""
        env = {"WARDEN_STORE_PASSWORD": "from-env"}
        self.assertEqual(read_password("/nonexistent", env), "from-env")

    def test_file_first_line(self) -> None:
        """The file's first line, without its line ending."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("from-file\r\nignored\n")
        self.assertEqual(read_password(path, {}), "from-file")

    def test_none(self) -> None:
        """No environment variable and no file: no password."""
        self.assertIsNone(read_password("", {}))

    def test_unreadable_file(self) -> None:
        """An unreadable file is a StoreError naming store.password_file."""
        error = self.assertRaises(StoreError, read_password, "/nonexistent/pw", {})
        self.assertIn("store.password_file", str(error))
        self.assertIn("/nonexistent/pw", str(error))

    def test_connect_kwargs(self) -> None:
        """Warden's libpq defaults, overridden by the URL's parameters, plus the password."""
        url = parse_store_url("postgresql://w@db/pbx?connect_timeout=9")
        os.environ["WARDEN_STORE_PASSWORD"] = "pw"
        self.addCleanup(os.environ.pop, "WARDEN_STORE_PASSWORD")
        kwargs = connect_kwargs(url)
        self.assertEqual(kwargs["connect_timeout"], "9")
        self.assertEqual(kwargs["password"], "pw")
        self.assertEqual((kwargs["host"], kwargs["dbname"], kwargs["user"]), ("db", "pbx", "w"))
        self.assertIn("statement_timeout", kwargs["options"])


class CheckStoreTests(SynchronousTestCase):
    """check_store fails with one line for each way the store can be wrong."""

    def setUp(self) -> None:
        self.server = servers.postgresql()
        self.server.create_database("check_store")
        self.server.create_role("check_user", "good-password", database="check_store")
        self.environ = dict(os.environ)
        self.addCleanup(self.restore)

    def restore(self) -> None:
        os.environ.clear()
        os.environ.update(self.environ)

    def url(self, database: str = "check_store", port: int | None = None) -> StoreURL:
        port = port or self.server.port
        return parse_store_url(f"postgresql://check_user@127.0.0.1:{port}/{database}")

    def test_good(self) -> None:
        """The right password (from the environment) passes."""
        os.environ["WARDEN_STORE_PASSWORD"] = "good-password"
        check_store(self.url())

    def test_password_file(self) -> None:
        """The right password from the password file passes."""
        os.environ.pop("WARDEN_STORE_PASSWORD", None)
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("good-password\n")
        check_store(self.url(), path)

    def test_wrong_password(self) -> None:
        """A wrong password: one line naming the URL and the cause, not the password."""
        os.environ["WARDEN_STORE_PASSWORD"] = "bad-password"
        error = self.assertRaises(StoreError, check_store, self.url())
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertNotIn("bad-password", message)
        self.assertIn(str(self.url()), message)
        self.assertIn("password authentication failed", message)

    def test_unknown_database(self) -> None:
        """A database that does not exist is named in the line."""
        os.environ["WARDEN_STORE_PASSWORD"] = "good-password"
        error = self.assertRaises(StoreError, check_store, self.url("no_such_db"))
        self.assertIn('database "no_such_db" does not exist', str(error))

    def test_nothing_listening(self) -> None:
        """A port nobody listens on: one line saying the connection failed."""
        error = self.assertRaises(StoreError, check_store, self.url(port=servers.free_tcp_port()))
        self.assertNotIn("\n", str(error))
        self.assertIn("cannot connect", str(error))

    def test_sqlite_directory(self) -> None:
        """For SQLite, the database's directory is created; an impossible one fails."""
        base = self.mktemp()
        check_store(parse_store_url(f"sqlite://{os.path.abspath(base)}/deep/w.db"))
        self.assertTrue(os.path.isdir(os.path.join(base, "deep")))
        blocker = self.mktemp()
        with open(blocker, "w", encoding="utf-8"):
            pass
        error = self.assertRaises(
            StoreError, check_store, parse_store_url(f"sqlite://{os.path.abspath(blocker)}/w.db")
        )
        self.assertIn("cannot create", str(error))
