"""
wardenctl: each command through ``run_command`` on a memory directory, argument
and configuration errors through ``main``, and the real program end to end
(``python -m warden.ctl`` on SQLite) in a subprocess.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from io import StringIO
from typing import Any
from zoneinfo import ZoneInfo

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.store.conformance import call_record
from tests.store.syncpool import SyncPool
from warden.config import parse_config_text
from warden.ctl.main import CommandError, build_parser, main, read_import_file, run_command
from warden.model import CallRecord, Extension, LiveCall
from warden.present import csv_cell, parse_when
from warden.store.cdr import SQLCallRecordStore, SQLLiveCalls
from warden.store.credentials import compute_ha1
from warden.store.migrate import apply_migrations
from warden.testing import MemoryCallRecordStore, MemoryDirectory, MemoryLiveCalls

REALM = "test.example"
PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SlowDirectory(MemoryDirectory):
    """A MemoryDirectory whose bulk upsert takes 1.25 s of clock time."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def upsert_extensions(self, extensions: Sequence[Extension]) -> Deferred[tuple[int, int]]:
        self.clock.advance(1.25)
        return super().upsert_extensions(extensions)


class CommandTests(SynchronousTestCase):
    """The commands, run by run_command against a MemoryDirectory."""

    def setUp(self) -> None:
        self.config = parse_config_text(f'[server]\nrealm = "{REALM}"')
        self.directory = MemoryDirectory()
        self.clock = Clock()

    def ctl(self, *argv: str) -> tuple[int, str, str]:
        """Run one command; return (exit status, stdout, stderr)."""
        args = build_parser().parse_args(argv)
        out, err = StringIO(), StringIO()
        d = run_command(args, self.config, self.directory, self.clock, out, err)
        return self.successResultOf(d), out.getvalue(), err.getvalue()

    def stored(self, number: str) -> Extension | None:
        result: Extension | None = self.successResultOf(self.directory.get_extension(number))
        return result

    def assertPassword(self, number: str, password: str) -> None:
        """The stored HA1 values are those of ``password`` in the configured realm."""
        ext = self.stored(number)
        assert ext is not None
        self.assertEqual(ext.realm, REALM)
        self.assertEqual(ext.ha1_md5, compute_ha1("MD5", number, REALM, password))
        self.assertEqual(ext.ha1_sha256, compute_ha1("SHA-256", number, REALM, password))

    def test_add_generates_password(self) -> None:
        """add without --password prints a generated 20-character password of letters
        and digits, and stores its HA1 values (MD5 and SHA-256) for the realm."""
        code, out, err = self.ctl("extension", "add", "100", "--name", "Front Desk")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0], "added extension 100")
        password = lines[1].removeprefix("password: ")
        self.assertEqual(len(password), 20)
        self.assertTrue(password.isalnum() and password.isascii())
        self.assertPassword("100", password)
        self.assertEqual(self.stored("100").name, "Front Desk")  # type: ignore[union-attr]

    def test_add_given_password(self) -> None:
        """add --password stores that password's HA1 and does not echo it;
        --algorithms is normalised and kept in order."""
        code, out, _ = self.ctl(
            "extension", "add", "100", "--password", "s3cret", "--algorithms", "sha-256,md5"
        )
        self.assertEqual((code, out), (0, "added extension 100\n"))
        self.assertPassword("100", "s3cret")
        self.assertEqual(self.stored("100").algorithms, ("SHA-256", "MD5"))  # type: ignore[union-attr]

    def test_add_existing(self) -> None:
        """add of a taken number exits 1 with a message and changes nothing."""
        self.ctl("extension", "add", "100", "--password", "one")
        code, out, err = self.ctl("extension", "add", "100", "--password", "two")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, "wardenctl: extension 100 already exists\n")
        self.assertPassword("100", "one")

    def test_add_empty_password(self) -> None:
        """An empty --password exits 2."""
        code, _, err = self.ctl("extension", "add", "100", "--password", "")
        self.assertEqual(code, 2)
        self.assertIn("password must not be empty", err)

    def test_list_table(self) -> None:
        """list prints a table in number order, with default algorithms and state."""
        self.ctl("extension", "add", "101", "--password", "x", "--algorithms", "SHA-256")
        self.ctl("extension", "add", "20", "--password", "x", "--name", "Lobby")
        self.ctl("extension", "set", "101", "--disable")
        code, out, _ = self.ctl("extension", "list")
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines(),
            [
                "NUMBER  NAME   ALGORITHMS  ENABLED",
                "20      Lobby  default     yes",
                "101            SHA-256     no",
            ],
        )

    def test_list_json(self) -> None:
        """list --json prints every extension without HA1 values."""
        self.ctl("extension", "add", "100", "--password", "x", "--name", "Desk")
        code, out, _ = self.ctl("extension", "list", "--json")
        self.assertEqual(code, 0)
        self.assertEqual(
            json.loads(out),
            [
                {
                    "number": "100",
                    "name": "Desk",
                    "realm": REALM,
                    "algorithms": [],
                    "enabled": True,
                    "qualify": False,
                    "ring_timeout": None,
                }
            ],
        )

    def test_qualify_flag(self) -> None:
        """--qualify on add, --no-qualify on set; a new password keeps the flag."""
        self.ctl("extension", "add", "100", "--password", "x", "--qualify")
        code, out, _ = self.ctl("extension", "show", "100", "--json")
        self.assertEqual(code, 0)
        self.assertTrue(json.loads(out)["qualify"])
        self.ctl("extension", "set", "100", "--new-password")
        code, out, _ = self.ctl("extension", "show", "100", "--json")
        self.assertEqual(code, 0)
        self.assertTrue(json.loads(out)["qualify"])
        self.assertEqual(self.ctl("extension", "set", "100", "--no-qualify")[0], 0)
        code, out, _ = self.ctl("extension", "show", "100", "--json")
        self.assertEqual(code, 0)
        self.assertFalse(json.loads(out)["qualify"])

    def test_ring_timeout(self) -> None:
        """--ring-timeout on add and set (kept by a new password), 'default' clears it."""
        self.ctl("extension", "add", "100", "--password", "x", "--ring-timeout", "15")
        self.assertEqual(self.stored("100").ring_timeout, 15.0)  # type: ignore[union-attr]
        self.ctl("extension", "set", "100", "--new-password")
        self.assertEqual(self.stored("100").ring_timeout, 15.0)  # type: ignore[union-attr]
        self.assertEqual(self.ctl("extension", "set", "100", "--ring-timeout", "3.5")[0], 0)
        code, out, _ = self.ctl("extension", "show", "100")
        self.assertEqual(code, 0)
        self.assertIn("ring:       3.5 s", out)
        self.assertEqual(
            json.loads(self.ctl("extension", "show", "100", "--json")[1])["ring_timeout"], 3.5
        )
        self.assertEqual(self.ctl("extension", "set", "100", "--ring-timeout", "default")[0], 0)
        self.assertEqual(self.stored("100").ring_timeout, 0.0)  # type: ignore[union-attr]

    def test_show_never_prints_secrets(self) -> None:
        """show prints the extension's fields but never its HA1 values."""
        self.ctl("extension", "add", "100", "--password", "x", "--name", "Desk")
        ext = self.stored("100")
        assert ext is not None
        for argv in (["extension", "show", "100"], ["extension", "show", "100", "--json"]):
            code, out, _ = self.ctl(*argv)
            self.assertEqual(code, 0)
            self.assertIn("Desk", out)
            self.assertNotIn(ext.ha1_md5, out)
            self.assertNotIn(ext.ha1_sha256, out)
        _, out, _ = self.ctl("extension", "show", "100")
        self.assertIn(f"realm:      {REALM}\n", out)

    def test_show_realm_mismatch(self) -> None:
        """show warns when the HA1 values were made for another realm."""
        self.ctl("extension", "add", "100", "--password", "x")
        self.config = parse_config_text('[server]\nrealm = "new.example"')
        _, out, _ = self.ctl("extension", "show", "100")
        self.assertIn("the configured realm is new.example", out)

    def test_show_unknown(self) -> None:
        """show of an unknown number exits 1 with a message on stderr."""
        self.assertEqual(
            self.ctl("extension", "show", "100"), (1, "", "wardenctl: no extension 100\n")
        )

    def test_set_fields(self) -> None:
        """set changes the name, algorithms and enabled state, keeping the HA1."""
        self.ctl("extension", "add", "100", "--password", "x")
        code, out, _ = self.ctl(
            "extension", "set", "100", "--name", "New", "--algorithms", "MD5", "--disable"
        )
        self.assertEqual((code, out), (0, "updated extension 100\n"))
        ext = self.stored("100")
        assert ext is not None
        self.assertEqual((ext.name, ext.algorithms, ext.enabled), ("New", ("MD5",), False))
        self.assertPassword("100", "x")
        self.ctl("extension", "set", "100", "--enable", "--algorithms", "default")
        ext = self.stored("100")
        assert ext is not None
        self.assertEqual((ext.algorithms, ext.enabled), ((), True))

    def test_set_password(self) -> None:
        """set --password stores new HA1 values in the configured realm."""
        self.ctl("extension", "add", "100", "--password", "old", "--name", "Keep")
        self.config = parse_config_text('[server]\nrealm = "new.example"')
        self.assertEqual(self.ctl("extension", "set", "100", "--password", "new")[0], 0)
        ext = self.stored("100")
        assert ext is not None
        self.assertEqual((ext.realm, ext.name), ("new.example", "Keep"))
        self.assertEqual(ext.ha1_md5, compute_ha1("MD5", "100", "new.example", "new"))

    def test_set_new_password(self) -> None:
        """set --new-password generates, stores and prints a new password."""
        self.ctl("extension", "add", "100", "--password", "old")
        code, out, _ = self.ctl("extension", "set", "100", "--new-password")
        self.assertEqual(code, 0)
        password = out.splitlines()[1].removeprefix("password: ")
        self.assertEqual(len(password), 20)
        self.assertPassword("100", password)

    def test_set_nothing(self) -> None:
        """set without any change exits 2."""
        self.ctl("extension", "add", "100", "--password", "x")
        code, _, err = self.ctl("extension", "set", "100")
        self.assertEqual(code, 2)
        self.assertIn("nothing to change", err)

    def test_set_unknown(self) -> None:
        """set of an unknown number exits 1."""
        self.assertEqual(
            self.ctl("extension", "set", "100", "--name", "X"),
            (1, "", "wardenctl: no extension 100\n"),
        )

    def test_remove(self) -> None:
        """remove deletes the extension; removing it again exits 1."""
        self.ctl("extension", "add", "100", "--password", "x")
        self.assertEqual(
            self.ctl("extension", "remove", "100"), (0, "removed extension 100\n", "")
        )
        self.assertIsNone(self.stored("100"))
        self.assertEqual(
            self.ctl("extension", "remove", "100"), (1, "", "wardenctl: no extension 100\n")
        )

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_import(self) -> None:
        """import reads number;password[;name] lines, skipping the SIPp header,
        comments and blank lines, and reports the counts and the time taken."""
        path = self.write("SEQUENTIAL\n# phones\n\n100;pw100;Desk\n101;pw101\n 102 ; pw102 ;\n")
        code, out, err = self.ctl("extension", "import", path)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            out, "imported 3 extensions (3 added, 0 updated) for realm test.example in 0.00s\n"
        )
        self.assertPassword("100", "pw100")
        self.assertPassword("102", "pw102")
        self.assertEqual(self.stored("100").name, "Desk")  # type: ignore[union-attr]
        self.assertEqual(self.stored("102").name, "")  # type: ignore[union-attr]

    def test_import_idempotent(self) -> None:
        """Importing the same file twice changes nothing the second time; a changed
        password counts as updated."""
        path = self.write("100;a\n101;b\n")
        self.ctl("extension", "import", path)
        _, out, _ = self.ctl("extension", "import", path)
        self.assertEqual(
            out, "imported 2 extensions (0 added, 0 updated) for realm test.example in 0.00s\n"
        )
        _, out, _ = self.ctl("extension", "import", self.write("100;a\n101;changed\n102;c\n"))
        self.assertEqual(
            out, "imported 3 extensions (1 added, 1 updated) for realm test.example in 0.00s\n"
        )

    def test_import_bad_line(self) -> None:
        """A bad line exits 2 naming file:line and the problem; nothing is imported."""
        cases = [
            ("100;a\n10x;b\n", "2: an extension number must be 1 to 32 digits, got '10x'"),
            (
                "100;a\n\n101\n",
                "3: expected number;password or number;password;name, got 1 fields",
            ),
            ("100;a;b;c\n", "1: expected number;password or number;password;name, got 4 fields"),
            ("100;\n", "1: the password is empty"),
            ("100;a\n100;b\n", "2: extension 100 already given on line 1"),
            (
                "USER\nRANDOM\n",
                "2: expected number;password or number;password;name, got 1 fields",
            ),
            (
                "100;a;Front\x1b[2JDesk\n",
                "1: a display name must not contain control or format characters,"
                " got U+001B in 'Front\\x1b[2JDesk'",
            ),
            (
                "100;a;" + "x" * 129 + "\n",
                "1: a display name has at most 128 characters, got 129",
            ),
        ]
        for text, problem in cases:
            path = self.write(text)
            code, out, err = self.ctl("extension", "import", path)
            self.assertEqual((code, out), (2, ""))
            self.assertEqual(err, f"wardenctl: {path}:{problem}\n")
        self.assertEqual(self.successResultOf(self.directory.count_extensions()), 0)

    def test_import_missing_file(self) -> None:
        """A file that cannot be read exits 2 naming it."""
        path = self.mktemp()
        code, _, err = self.ctl("extension", "import", path)
        self.assertEqual(code, 2)
        self.assertEqual(err, f"wardenctl: {path}: cannot read: No such file or directory\n")

    def test_import_timed_by_clock(self) -> None:
        """The reported time comes from the injected clock."""
        self.directory = SlowDirectory(self.clock)
        _, out, _ = self.ctl("extension", "import", self.write("100;a\n"))
        self.assertEqual(
            out, "imported 1 extensions (1 added, 0 updated) for realm test.example in 1.25s\n"
        )

    def test_read_import_file(self) -> None:
        """read_import_file builds the extensions in file order, HA1 in the realm."""
        extensions = read_import_file(self.write("RANDOM\n2;b;Two\n1;a\n"), REALM)
        self.assertEqual([(e.number, e.name) for e in extensions], [("2", "Two"), ("1", "")])
        self.assertEqual(extensions[1].ha1_md5, compute_ha1("MD5", "1", REALM, "a"))
        self.assertRaises(CommandError, read_import_file, self.write("x;y\n"), REALM)


class MainTests(SynchronousTestCase):
    """main() rejects bad arguments and configurations before touching a database."""

    def setUp(self) -> None:
        self.stderr = StringIO()
        self.patch(sys, "stderr", self.stderr)
        self.patch(sys, "stdout", StringIO())

    def test_bad_number(self) -> None:
        """A number that is not 1 to 32 digits exits 2 with argparse's message."""
        for bad in ["12a", "", "1" * 33, "-1"]:
            self.assertEqual(main(["extension", "add", "--", bad]), 2)
        self.assertIn("an extension number must be 1 to 32 digits", self.stderr.getvalue())

    def test_bad_ring_timeout(self) -> None:
        """A ring timeout that is not 1 to 600 seconds (ASCII) exits 2 saying so."""
        for bad in ("0.5", "601", "-3", "nan", "1e3", "\uff12\uff10", "ten"):
            self.assertEqual(main(["extension", "set", "100", f"--ring-timeout={bad}"]), 2)
        self.assertEqual(self.stderr.getvalue().count("the ring timeout is seconds"), 7)

    def test_bad_name(self) -> None:
        """A display name with a line break or a bidirectional override exits 2
        saying why, for add and set alike."""
        self.assertEqual(main(["extension", "add", "100", "--name", "A\r\nP-Asserted: x"]), 2)
        self.assertEqual(main(["extension", "set", "100", "--name", "\u202eevil"]), 2)
        message = self.stderr.getvalue()
        self.assertIn("got U+000D in", message)
        self.assertIn("got U+202E in", message)
        self.assertIn("a display name must not contain control or format characters", message)

    def test_bad_algorithms(self) -> None:
        """Unknown or repeated algorithms exit 2."""
        self.assertEqual(main(["extension", "add", "100", "--algorithms", "SHA-512"]), 2)
        self.assertEqual(main(["extension", "add", "100", "--algorithms", "MD5,md5"]), 2)
        self.assertIn("unknown digest algorithm 'SHA-512'", self.stderr.getvalue())

    def test_missing_command(self) -> None:
        """No command, or conflicting options, exit 2."""
        self.assertEqual(main([]), 2)
        self.assertEqual(main(["extension"]), 2)
        self.assertEqual(main(["extension", "set", "1", "--enable", "--disable"]), 2)

    def test_help(self) -> None:
        """--help exits 0."""
        self.assertEqual(main(["--help"]), 0)

    def test_config_error(self) -> None:
        """A bad configuration file exits 2 with its one-line message."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("[sip]\nport = true\n")
        self.assertEqual(main(["--config", path, "extension", "list"]), 2)
        self.assertEqual(
            self.stderr.getvalue(),
            f"wardenctl: {path}: sip.port: must be an integer 0..65535, got true\n",
        )


class ProcessTests(SynchronousTestCase):
    """``python -m warden.ctl`` end to end on a real SQLite database."""

    def setUp(self) -> None:
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        config = os.path.join(self.workdir, "warden.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(f'[server]\nrealm = "{REALM}"\n')
        self.base = ["--config", config, "--data-dir", os.path.join(self.workdir, "var")]

    def wardenctl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        path = os.pathsep.join(filter(None, [PROJECT, os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path)
        return subprocess.run(
            [sys.executable, "-m", "warden.ctl", *self.base, *argv],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def test_lifecycle(self) -> None:
        """add, list, show, set, remove work against the database in data_dir,
        which is created with the schema on first use."""
        added = self.wardenctl("extension", "add", "100", "--name", "Desk")
        self.assertEqual(added.returncode, 0, added.stderr)
        self.assertTrue(os.path.exists(os.path.join(self.workdir, "var", "warden.db")))
        self.assertEqual(
            self.wardenctl("extension", "add", "101", "--password", "x").returncode, 0
        )
        listed = self.wardenctl("extension", "list", "--json")
        self.assertEqual([e["number"] for e in json.loads(listed.stdout)], ["100", "101"])
        changed = self.wardenctl("extension", "set", "101", "--disable", "--name", "Lobby")
        self.assertEqual(changed.returncode, 0, changed.stderr)
        shown = self.wardenctl("extension", "show", "101")
        self.assertIn("name:       Lobby\n", shown.stdout)
        self.assertIn("enabled:    no\n", shown.stdout)
        self.assertEqual(self.wardenctl("extension", "remove", "100").returncode, 0)
        missing = self.wardenctl("extension", "show", "100")
        self.assertEqual(
            (missing.returncode, missing.stderr), (1, "wardenctl: no extension 100\n")
        )

    def test_domain_option_sets_the_realm(self) -> None:
        """
        ``wardenctl --domain NAME`` works as ``twistd warden --domain NAME``: with
        no realm in the file, imported digests are for realm NAME (the server's),
        and the import says which realm it used.
        """
        self.base = [
            "--data-dir",
            os.path.join(self.workdir, "var"),
            "--domain",
            "pbx.example.org",
        ]
        path = os.path.join(self.workdir, "phones.csv")
        with open(path, "w", encoding="utf-8") as f:
            f.write("SEQUENTIAL\n100;pw100\n")
        imported = self.wardenctl("extension", "import", path)
        self.assertEqual(imported.returncode, 0, imported.stderr)
        self.assertIn("for realm pbx.example.org in", imported.stdout)
        shown = json.loads(self.wardenctl("extension", "show", "100", "--json").stdout)
        self.assertEqual(shown["realm"], "pbx.example.org")

    def test_import_10000(self) -> None:
        """Importing 10,000 extensions adds them all and reports its time; importing
        the same file again adds and updates nothing. (How long it takes is
        measured by bench/, not asserted here.)"""
        path = os.path.join(self.workdir, "phones.csv")
        with open(path, "w", encoding="utf-8") as f:
            f.write("SEQUENTIAL\n")
            f.writelines(f"{n};pw{n};Phone {n}\n" for n in range(20000, 30000))
        first = self.wardenctl("extension", "import", path)
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertRegex(
            first.stdout,
            r"^imported 10000 extensions \(10000 added, 0 updated\) for realm \S+ in ",
        )
        self.assertRegex(first.stdout, r" in \d+\.\d+s\n$")
        again = self.wardenctl("extension", "import", path)
        self.assertRegex(
            again.stdout, r"^imported 10000 extensions \(0 added, 0 updated\) for realm \S+ in "
        )
        shown = self.wardenctl("extension", "show", "29999", "--json")
        self.assertEqual(json.loads(shown.stdout)["name"], "Phone 29999")

    def test_errors(self) -> None:
        """A bad argument and a bad import line exit 2; the line is named and nothing
        is imported."""
        bad_arg = self.wardenctl("extension", "add", "12a")
        self.assertEqual(bad_arg.returncode, 2)
        self.assertIn("must be 1 to 32 digits", bad_arg.stderr)
        path = os.path.join(self.workdir, "bad.csv")
        with open(path, "w", encoding="utf-8") as f:
            f.write("100;a\n101;b\n102\n")
        bad_file = self.wardenctl("extension", "import", path)
        self.assertEqual(bad_file.returncode, 2)
        self.assertIn(f"{path}:3: expected number;password", bad_file.stderr)
        self.assertEqual(self.wardenctl("extension", "list", "--json").stdout.strip(), "[]")


# 2026-11-25T09:00:00Z, which is 10:00 in the zone the call tests show times in.
T0 = 1795597200.0
ZONE = timezone(timedelta(hours=1))


def cdr(call_id: str, started_at: float, **kw: Any) -> CallRecord:
    """An answered call from 100 to 200: 5 s ringing, 60 s talking."""
    return call_record(call_id, started_at, **{"media": {"a": {"packets_in": 3000}}, **kw})


class WhenTests(SynchronousTestCase):
    """parse_when (the times cdr filters accept) and csv_cell (formula-safe cells)."""

    def test_iso(self) -> None:
        """ISO-8601 without an offset is in the given zone; with one, it is obeyed."""
        self.assertEqual(parse_when("2026-11-25T10:00", 0.0, ZONE), T0)
        self.assertEqual(parse_when("2026-11-25 10:00:30.5", 0.0, ZONE), T0 + 30.5)
        self.assertEqual(parse_when("2026-11-25T09:00Z", 0.0, ZONE), T0)
        self.assertEqual(parse_when(" 2026-11-25T04:00-05:00 ", 0.0, ZONE), T0)

    def test_date(self) -> None:
        """A date means its midnight in the zone."""
        self.assertEqual(parse_when("2026-11-25", 0.0, ZONE), T0 - 10 * 3600)

    def test_local_zone_with_daylight_saving(self) -> None:
        """A zone with daylight saving time uses the offset of the date given."""
        zone = ZoneInfo("America/New_York")
        winter = parse_when("2026-01-15T12:00", 0.0, zone)
        summer = parse_when("2026-07-15T12:00", 0.0, zone)
        self.assertEqual(datetime.fromtimestamp(winter, UTC).hour, 17)
        self.assertEqual(datetime.fromtimestamp(summer, UTC).hour, 16)

    def test_relative(self) -> None:
        """A number and a unit (s, m, h, d, w) means that long before now."""
        now = T0
        cases = {"45s": 45, "30m": 1800, "1h": 3600, "1H": 3600, "7d": 7 * 86400,
                 "2w": 14 * 86400, "1.5h": 5400, "0m": 0}  # fmt: skip
        for text, ago in cases.items():
            self.assertEqual(parse_when(text, now, ZONE), now - ago, text)

    def test_bad(self) -> None:
        """Anything else raises ValueError saying what is accepted."""
        for text in ["yesterday", "", "1y", "-1h", "2026-13-01", "10:00", "h"]:
            with self.assertRaises(ValueError) as caught:
                parse_when(text, T0, ZONE)
            self.assertIn("expected a time like 2026-11-25T10:00", str(caught.exception))

    def test_csv_cell(self) -> None:
        """Cells a spreadsheet would run as formulas get an apostrophe; numbers,
        including +E.164 and negative ones, are left alone."""
        self.assertEqual(csv_cell('=HYPERLINK("x")'), '\'=HYPERLINK("x")')
        self.assertEqual(csv_cell("+1+cmd|' /C calc'!A0"), "'+1+cmd|' /C calc'!A0")
        self.assertEqual(csv_cell("@SUM(A1)"), "'@SUM(A1)")
        for text in ["+15551234567", "-1.5", "100", "Front Desk", ""]:
            self.assertEqual(csv_cell(text), text)


class CallCommandTests(SynchronousTestCase):
    """cdr list, cdr export and calls, through run_command on memory stores."""

    def setUp(self) -> None:
        self.config = parse_config_text(f'[server]\nrealm = "{REALM}"')
        self.records = MemoryCallRecordStore()
        self.live = MemoryLiveCalls()
        self.clock = Clock()
        self.clock.advance(T0 + 3600)

    def ctl(self, *argv: str) -> tuple[int, str, str]:
        """Run one command; return (exit status, stdout, stderr)."""
        args = build_parser().parse_args(argv)
        out, err = StringIO(), StringIO()
        d = run_command(
            args,
            self.config,
            MemoryDirectory(),
            self.clock,
            out,
            err,
            call_records=self.records,
            live_calls=self.live,
            tz=ZONE,
        )
        return self.successResultOf(d), out.getvalue(), err.getvalue()

    def add(self, *records: CallRecord) -> None:
        for record in records:
            self.successResultOf(self.records.add(record))

    def listed(self, *argv: str) -> list[str]:
        """The call_ids that cdr list --json prints for these filters."""
        code, out, err = self.ctl("cdr", "list", "--json", *argv)
        self.assertEqual((code, err), (0, ""))
        return [r["call_id"] for r in json.loads(out)]

    def test_list_table(self) -> None:
        """cdr list prints a table: local start time, parties, disposition,
        duration and billsec as H:MM:SS, how the call ended, and its recording
        (the file, "deleted" once retention removed it, or "-")."""
        self.add(
            cdr("c1", T0, caller_name="Zoë", recording="2026/11/25/c1.wav"),
            cdr(
                "c2",
                T0 + 90.4,
                answered_at=None,
                ended_at=T0 + 120.0,
                callee="",
                disposition="NO ANSWER",
                hangup_cause="408",
                hangup_side="system",
            ),
            cdr("c3", T0 + 100, recording_info={"deleted_at": T0, "file": "x.wav"}),
        )
        code, out, err = self.ctl("cdr", "list")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            out.splitlines(),
            [
                "STARTED              FROM  NAME        DIALLED  TO   DISPOSITION  DURATION"
                "  BILLSEC  HANGUP        RECORDING",
                "2026-11-25 10:00:00  100   Zoë         200      200  ANSWERED     0:01:05"
                "   0:01:00  BYE (caller)  2026/11/25/c1.wav",
                "2026-11-25 10:01:30  100   Front Desk  200      -    NO ANSWER    0:00:30"
                "   0:00:00  408 (system)  -",
                "2026-11-25 10:01:40  100   Front Desk  200      200  ANSWERED     0:01:05"
                "   0:01:00  BYE (caller)  deleted",
            ],
        )

    def test_list_empty(self) -> None:
        """With nothing to show, cdr list says so."""
        self.assertEqual(self.ctl("cdr", "list"), (0, "no call records match\n", ""))

    def test_filters(self) -> None:
        """--since/--until (ISO, date or time ago), --extension (caller, callee or
        dialled) and --disposition (any spelling) select records."""
        self.add(
            cdr("early", T0 - 86400),
            cdr("ten", T0),
            cdr("busy", T0 + 600, answered_at=None, disposition="BUSY", caller="300"),
            cdr(
                "missed",
                T0 + 1800,
                answered_at=None,
                disposition="NO ANSWER",
                callee="",
                caller="400",
                dialled="300",
            ),
        )
        self.assertEqual(self.listed(), ["early", "ten", "busy", "missed"])
        self.assertEqual(self.listed("--since", "2026-11-25"), ["ten", "busy", "missed"])
        self.assertEqual(self.listed("--since", "1h"), ["ten", "busy", "missed"])
        self.assertEqual(self.listed("--since", "59m"), ["busy", "missed"])
        self.assertEqual(self.listed("--until", "2026-11-25T10:10"), ["early", "ten"])
        self.assertEqual(self.listed("--extension", "300"), ["busy", "missed"])
        self.assertEqual(self.listed("--disposition", "no-answer"), ["missed"])
        self.assertEqual(self.listed("--disposition", "busy", "--extension", "100"), [])

    def test_bad_when(self) -> None:
        """A time that is not understood exits 2 and says what is accepted."""
        code, out, err = self.ctl("cdr", "list", "--since", "yesterday")
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(
            err,
            "wardenctl: --since: expected a time like 2026-11-25T10:00, a date like"
            " 2026-11-25, or a time ago like 30m, 1h, 7d; got 'yesterday'\n",
        )
        code, _, err = self.ctl("cdr", "export", self.mktemp(), "--until", "5 o'clock")
        self.assertEqual(code, 2)
        self.assertIn("--until: expected a time like", err)

    def test_since_not_before_until(self) -> None:
        """--since at or after --until exits 2."""
        code, _, err = self.ctl("cdr", "list", "--since", "1h", "--until", "2h")
        self.assertEqual((code, err), (2, "wardenctl: --since must be before --until\n"))

    def test_limit(self) -> None:
        """--limit caps the rows, oldest first, and a note on stderr says more match."""
        self.add(*[cdr(f"c{n}", T0 + n) for n in range(3)])
        code, out, err = self.ctl("cdr", "list", "--json", "--limit", "2")
        self.assertEqual([r["call_id"] for r in json.loads(out)], ["c0", "c1"])
        self.assertEqual(code, 0)
        self.assertIn("showing the first 2 matching calls", err)
        self.assertEqual(self.ctl("cdr", "list", "--json", "--limit", "3")[2], "")

    def test_json(self) -> None:
        """--json prints every field (times as epoch seconds) with duration and billsec."""
        record = cdr("c1", T0 + 0.25)
        self.add(record)
        _, out, _ = self.ctl("cdr", "list", "--json")
        self.assertEqual(
            json.loads(out), [{**record.to_json_dict(), "duration": 65.0, "billsec": 60.0}]
        )

    def test_csv(self) -> None:
        """--csv prints a header and RFC 4180 rows (CRLF, quoted when needed), ISO
        times with the zone's offset, an empty answered_at for unanswered calls,
        seconds with milliseconds, and no spreadsheet formulas."""
        self.add(
            cdr(
                "c1",
                T0 + 0.25,
                caller_name='Smith, "Jo"',
                caller="+15551234567",
                recording="2026/11/25/c1.wav",
            ),
            cdr(
                "c2",
                T0 + 60,
                answered_at=None,
                callee="",
                disposition="FAILED",
                hangup_cause="503",
                hangup_side="system",
                caller_name="=1+1",
                codec="",
            ),
        )
        code, out, _ = self.ctl("cdr", "list", "--csv")
        self.assertEqual(code, 0)
        self.assertEqual(
            out.split("\r\n"),
            [
                "call_id,started_at,answered_at,ended_at,caller,caller_name,dialled,callee,"
                "disposition,hangup_cause,hangup_side,duration,billsec,codec,node_id,recording,"
                "stir_attest,stir_verstat,emergency",
                "c1,2026-11-25T10:00:00.250+01:00,2026-11-25T10:00:05.250+01:00,"
                '2026-11-25T10:01:05.250+01:00,+15551234567,"Smith, ""Jo""",200,200,'
                "ANSWERED,BYE,caller,65.000,60.000,PCMU,node-1,2026/11/25/c1.wav,,,false",
                "c2,2026-11-25T10:01:00.000+01:00,,2026-11-25T10:02:05.000+01:00,100,'=1+1,"
                "200,,FAILED,503,system,65.000,0.000,,node-1,,,,false",
                "",
            ],
        )
        rows = list(csv.reader(StringIO(out, newline="")))
        self.assertEqual(rows[1][5], 'Smith, "Jo"')

    def test_export(self) -> None:
        """cdr export writes every matching record (paging through the store) to
        the file as CSV and says how many; --limit caps it."""
        self.add(*[cdr(f"c{n:04d}", T0 + n) for n in range(2500)])
        self.add(cdr("other", T0 + 5000, caller="999", callee="998", dialled="998"))
        path = os.path.join(self.mktemp())
        code, out, err = self.ctl("cdr", "export", path, "--extension", "100")
        self.assertEqual((code, out, err), (0, f"exported 2500 call records to {path}\n", ""))
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        self.assertEqual(rows[0][0], "call_id")
        self.assertEqual([row[0] for row in rows[1:]], [f"c{n:04d}" for n in range(2500)])
        self.assertFalse(os.path.exists(path + ".part"))
        code, out, _ = self.ctl("cdr", "export", path, "--limit", "1200")
        self.assertEqual(out, f"exported 1200 call records to {path}\n")

    def test_export_unwritable(self) -> None:
        """An export file that cannot be written exits 2 naming it."""
        path = os.path.join(self.mktemp(), "missing", "out.csv")
        code, out, err = self.ctl("cdr", "export", path)
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(err, f"wardenctl: {path}: cannot write: No such file or directory\n")

    def test_calls(self) -> None:
        """calls lists the calls in progress: from, to (callee, else dialled),
        state, duration so far from the clock, codec, whether each leg's media is
        encrypted (caller/callee), whether it is recorded, packets and the node."""
        now = self.clock.seconds()
        for call in [
            LiveCall(
                "l1",
                "100",
                "200",
                "200",
                "answered",
                now - 75,
                now - 70,
                "PCMU",
                7000,
                caller_media="srtp",
                callee_media="rtp",
                caller_signalling="tls",
                callee_signalling="udp",
                recording=True,
            ),
            LiveCall("l2", "+15551234567", "", "300", "ringing", now - 4, node_id="b"),
        ]:
            self.successResultOf(self.live.publish(call))
        code, out, err = self.ctl("calls")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            out.splitlines(),
            [
                "FROM          TO   STATE     DURATION  CODEC  SIGNALLING  MEDIA     REC  PACKETS"
                "  NODE",
                "100           200  answered  0:01:15   PCMU   tls/udp     srtp/rtp  yes  7000"
                "     -",
                "+15551234567  300  ringing   0:00:04   -      -/-         -/-       -    0"
                "        b",
            ],
        )
        _, out, _ = self.ctl("calls", "--json")
        listed = json.loads(out)
        self.assertEqual([(c["call_id"], c["duration"]) for c in listed], [("l1", 75), ("l2", 4)])
        self.assertEqual(listed[0]["packets"], 7000)
        self.assertEqual([c["recording"] for c in listed], [True, False])
        self.assertEqual((listed[0]["caller_media"], listed[0]["callee_media"]), ("srtp", "rtp"))
        signalling = (listed[0]["caller_signalling"], listed[0]["callee_signalling"])
        self.assertEqual(signalling, ("tls", "udp"))

    def test_no_calls(self) -> None:
        """calls with nothing in progress says so; --json prints an empty list."""
        self.assertEqual(self.ctl("calls"), (0, "no calls in progress\n", ""))
        self.assertEqual(json.loads(self.ctl("calls", "--json")[1]), [])


class CallArgumentTests(SynchronousTestCase):
    """main() rejects bad cdr arguments before touching a database."""

    def setUp(self) -> None:
        self.stderr = StringIO()
        self.patch(sys, "stderr", self.stderr)
        self.patch(sys, "stdout", StringIO())

    def test_bad_arguments(self) -> None:
        """An unknown disposition, a limit below 1, --csv with --json and export
        without a file exit 2."""
        self.assertEqual(main(["cdr", "list", "--disposition", "lost"]), 2)
        self.assertIn("unknown disposition 'lost'", self.stderr.getvalue())
        self.assertEqual(main(["cdr", "list", "--limit", "0"]), 2)
        self.assertEqual(main(["cdr", "list", "--limit", "ten"]), 2)
        self.assertEqual(main(["cdr", "list", "--csv", "--json"]), 2)
        self.assertEqual(main(["cdr", "export"]), 2)
        self.assertEqual(main(["cdr"]), 2)


class CallProcessTests(SynchronousTestCase):
    """``python -m warden.ctl cdr`` and ``calls`` end to end on a real SQLite database."""

    setUp = ProcessTests.setUp
    wardenctl = ProcessTests.wardenctl

    def seed(self) -> None:
        """Write records and a live call into the database, as the server would."""
        folder = os.path.join(self.workdir, "var")
        os.makedirs(folder, exist_ok=True)
        pool = SyncPool(os.path.join(folder, "warden.db"))
        self.addCleanup(pool.close)
        self.successResultOf(apply_migrations(pool))  # type: ignore[arg-type]
        records = SQLCallRecordStore(pool)  # type: ignore[arg-type]
        for n in range(3):
            self.successResultOf(records.add(cdr(f"c{n}", T0 + 60 * n)))
        self.successResultOf(records.add(cdr("b", T0 + 30, answered_at=None, disposition="BUSY")))
        live = SQLLiveCalls(pool)  # type: ignore[arg-type]
        self.successResultOf(live.publish(LiveCall("l1", "100", "200", "200", "ringing", T0)))

    def test_cdr_and_calls(self) -> None:
        """cdr list (JSON and CSV), cdr export and calls read what the server wrote;
        a bad time exits 2."""
        self.seed()
        listed = self.wardenctl("cdr", "list", "--json", "--since", "2026-11-25T09:00Z")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertEqual(
            [r["call_id"] for r in json.loads(listed.stdout)], ["c0", "b", "c1", "c2"]
        )
        busy = self.wardenctl("cdr", "list", "--csv", "--disposition", "BUSY")
        self.assertEqual(busy.stdout.splitlines()[1].split(",")[0], "b")
        path = os.path.join(self.workdir, "out.csv")
        exported = self.wardenctl("cdr", "export", path, "--limit", "2")
        self.assertEqual(exported.stdout, f"exported 2 call records to {path}\n")
        with open(path, encoding="utf-8", newline="") as f:
            self.assertEqual(len(list(csv.reader(f))), 3)
        bad = self.wardenctl("cdr", "list", "--until", "soon")
        self.assertEqual(bad.returncode, 2)
        self.assertIn("--until: expected a time like", bad.stderr)
        calls = self.wardenctl("calls", "--json")
        self.assertEqual([c["call_id"] for c in json.loads(calls.stdout)], ["l1"])
