"""
wardenctl: each command through ``run_command`` on a memory directory, argument
and configuration errors through ``main``, and the real program end to end
(``python -m warden.ctl`` on SQLite) in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from io import StringIO

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warden.config import parse_config_text
from warden.ctl import CommandError, build_parser, main, read_import_file, run_command
from warden.store.credentials import compute_ha1
from warden.store.model import Extension
from warden.testing import MemoryDirectory

REALM = "test.example"
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
                }
            ],
        )

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
        self.assertEqual(out, "imported 3 extensions (3 added, 0 updated) in 0.00s\n")
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
        self.assertEqual(out, "imported 2 extensions (0 added, 0 updated) in 0.00s\n")
        _, out, _ = self.ctl("extension", "import", self.write("100;a\n101;changed\n102;c\n"))
        self.assertEqual(out, "imported 3 extensions (1 added, 1 updated) in 0.00s\n")

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
        self.assertEqual(out, "imported 1 extensions (1 added, 0 updated) in 1.25s\n")

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

    def test_import_10000(self) -> None:
        """Importing 10,000 extensions takes a couple of seconds at most, and
        importing the same file again adds and updates nothing."""
        path = os.path.join(self.workdir, "phones.csv")
        with open(path, "w", encoding="utf-8") as f:
            f.write("SEQUENTIAL\n")
            f.writelines(f"{n};pw{n};Phone {n}\n" for n in range(20000, 30000))
        started = time.monotonic()
        first = self.wardenctl("extension", "import", path)
        wall = time.monotonic() - started
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertRegex(
            first.stdout, r"^imported 10000 extensions \(10000 added, 0 updated\) in "
        )
        reported = float(first.stdout.rsplit(" in ", 1)[1].rstrip("s\n"))
        self.assertLess(reported, 2.0)
        self.assertLess(wall, 10.0)
        again = self.wardenctl("extension", "import", path)
        self.assertRegex(again.stdout, r"^imported 10000 extensions \(0 added, 0 updated\) in ")
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
