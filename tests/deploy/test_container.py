"""
deploy/container/Containerfile, checked without a container engine: its
instructions parse, it builds the wheel from the files that hold the package,
runs as a non-root user, bakes in no secret, starts ``twistd -n warden`` with
options Warden accepts, exposes Warden's default ports, and its HEALTHCHECK
command really reports a running Warden healthy (and a stopped one not).
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from twisted.internet import utils
from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from tests.deploy.tools import DEPLOY, REPO
from tests.integration.clients import poll_async
from tests.integration.harness import IntegrationTestCase
from warden.config import AdminConfig, MediaConfig, SipConfig

CONTAINERFILE = DEPLOY / "container" / "Containerfile"

#: Instructions of the Dockerfile/Containerfile format (the builder's reference).
KNOWN = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip
SECRET_WORDS = re.compile(
    r"(password|passwd|secret|token|api[_-]?key|private[_-]?key|BEGIN [A-Z ]*PRIVATE KEY)",
    re.IGNORECASE,
)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continued lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    assert not pending, "the file ends inside a continued line"
    return result


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) argument list."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def default_admin_port() -> int:
    """The port of the default ``[admin] listen`` endpoint."""
    return int(AdminConfig().listen.split(":")[1])


class ContainerfileTests(SynchronousTestCase):
    """The Containerfile is well-formed and its run-time stage is safe."""

    def setUp(self) -> None:
        self.all = instructions(CONTAINERFILE.read_text(encoding="utf-8"))
        starts = [i for i, (word, _) in enumerate(self.all) if word == "FROM"]
        self.final = self.all[starts[-1] :]

    def args(self, word: str) -> list[str]:
        """Arguments of every ``word`` instruction of the final stage."""
        return [rest for w, rest in self.final if w == word]

    def test_parses(self) -> None:
        """Every instruction is known; two stages on a Debian slim base."""
        self.assertEqual({w for w, _ in self.all} - KNOWN, set())
        bases = [rest.split()[0] for w, rest in self.all if w == "FROM"]
        self.assertEqual(bases, ["docker.io/library/debian:bookworm-slim"] * 2)

    def test_wheel_from_the_package_files(self) -> None:
        """
        The build stage copies setup.cfg and every package root setup.cfg names (so
        the wheel holds the twistd plugin), never the whole tree with ./var in it,
        installs the wheel it built, and the final stage copies only the virtualenv.
        """
        copies = [rest.split() for w, rest in self.all if w == "COPY"]
        sources = {s for c in copies if not c[0].startswith("--from") for s in c[:-1]}
        self.assertNotIn(".", sources)
        setup = configparser.ConfigParser()
        setup.read(REPO / "setup.cfg", encoding="utf-8")
        roots = {n.split(".")[0] for n in setup["options"]["packages"].split()}
        mapped = {
            line.split("=")[1].strip()
            for line in setup["options"]["package_dir"].split("\n")
            if line.strip()
        }
        self.assertLessEqual(
            {"setup.cfg", "pyproject.toml", "README.md"} | roots | mapped, sources
        )
        for source in sources:
            self.assertTrue((REPO / source).exists(), source)
        build = " ".join(rest for w, rest in self.all if w == "RUN")
        self.assertIn("pip wheel", build)
        self.assertIn("pip install --no-cache-dir /wheels/warden-", build)
        self.assertEqual(self.args("COPY"), ["--from=build /opt/warden /opt/warden"])

    def test_wheel_builds_from_the_copied_files(self) -> None:
        """
        pip builds the wheel from exactly what the build stage copies (laid out as
        COPY lays it out), with the twistd plugin, warden.ops and every schema
        file in it, under the name the stage installs.
        """
        source = Path(self.mktemp()).resolve()
        source.mkdir()
        for word, rest in self.all:
            if word == "COPY" and not rest.startswith("--from"):
                *items, target = rest.split()
                relative = target.removeprefix("/src").strip("/")
                for item in items:
                    destination = source / relative
                    if len(items) > 1 or target.endswith("/"):
                        destination = destination / item
                    if (REPO / item).is_dir():
                        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
                        shutil.copytree(REPO / item, destination, ignore=ignore)
                    else:
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(REPO / item, destination)
        wheels = source.parent / "wheels"
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "--wheel-dir", str(wheels), str(source)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        (wheel,) = wheels.glob("*.whl")
        self.assertTrue(fnmatch.fnmatch(wheel.name, "warden-*.whl"), wheel.name)
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
        schemas = {
            str(p.relative_to(REPO)) for p in (REPO / "warden" / "store" / "schema").rglob("*.sql")
        }
        self.assertTrue(schemas)
        expected = {"twisted/plugins/warden_plugins.py", "warden/tap.py", "warden/ops/__init__.py"}
        self.assertLessEqual(expected | schemas, names)

    def test_user_is_not_root(self) -> None:
        """The last USER of the final stage is a numeric uid that is not 0 (root)."""
        user = self.args("USER")[-1].split(":")
        self.assertTrue(user[0].isdigit(), "numeric, so runAsNonRoot can check it")
        self.assertNotIn(user[0], ("0", "root"))
        self.assertNotIn(user[-1], ("0", "root"))

    def test_no_secrets(self) -> None:
        """No ENV, ARG or LABEL holds a password, token or key; no key file or ./var is copied."""
        for word, rest in self.all:
            if word in ("ENV", "ARG", "LABEL"):
                self.assertIsNone(SECRET_WORDS.search(rest), rest)
            if word in ("COPY", "ADD"):
                self.assertIsNone(re.search(r"\.(pem|key|p12|pfx)\b|\bvar\b", rest), rest)
        text = CONTAINERFILE.read_text(encoding="utf-8")
        self.assertIsNone(re.search(r"BEGIN [A-Z ]*PRIVATE KEY", text))

    def test_copied_files_hold_no_key(self) -> None:
        """No file the build copies holds a private key (the image would carry it)."""
        copies = [rest.split() for w, rest in self.all if w == "COPY"]
        for source in (s for c in copies if not c[0].startswith("--from") for s in c[:-1]):
            path = REPO / source
            for item in [path] if path.is_file() else path.rglob("*"):
                if item.is_file() and "__pycache__" not in item.parts:
                    data = item.read_bytes()
                    self.assertNotIn(b"PRIVATE KEY-----", data, str(item))

    def test_runs_twistd_warden(self) -> None:
        """ENTRYPOINT + CMD is twistd -n warden, with options twistd warden accepts."""
        argv = exec_form(self.args("ENTRYPOINT")[-1]) + exec_form(self.args("CMD")[-1])
        self.assertEqual(argv[0], "/opt/warden/bin/twistd")
        data_dir = argv[argv.index("--data-dir") + 1]
        self.assertEqual(self.args("WORKDIR")[-1], data_dir)
        self.assertEqual(self.args("VOLUME")[-1], json.dumps([data_dir]))
        options = ServerOptions()
        options.parseOptions([self.mktemp() if a == data_dir else a for a in argv[1:]])
        self.assertEqual(options.subCommand, "warden")
        self.assertTrue(options["nodaemon"])
        self.assertEqual(options["logfile"], "-")
        self.assertEqual(self.args("STOPSIGNAL"), ["SIGTERM"])

    def test_exposed_ports_are_the_defaults(self) -> None:
        """EXPOSE lists the default SIP port per transport, admin port and media range."""
        exposed = {p for rest in self.args("EXPOSE") for p in rest.split()}
        sip, media = SipConfig(), MediaConfig()
        expected = {f"{sip.port}/{t}" for t in sip.transports}
        expected.add(f"{default_admin_port()}/tcp")
        expected.add(f"{media.port_min}-{media.port_max}/udp")
        self.assertEqual(exposed, expected)

    def test_healthcheck(self) -> None:
        """HEALTHCHECK runs /healthz on the default admin port, bounded in time."""
        check = self.args("HEALTHCHECK")[-1]
        options, _, command = check.partition(" CMD ")
        self.assertIn("--timeout=5s", options.split())
        argv = exec_form(command)
        self.assertEqual(argv[0], "/opt/warden/bin/python")
        self.assertIn(f"https://127.0.0.1:{default_admin_port()}/healthz", argv[-1])


class HealthcheckTests(IntegrationTestCase):
    """The HEALTHCHECK command against a real twistd warden."""

    async def test_healthy_then_unhealthy(self) -> None:
        """
        The HEALTHCHECK's Python one-liner (run by this virtualenv's Python, the admin
        port swapped for the test Warden's) exits 0 while Warden runs and non-zero
        once it has stopped.
        """
        check = [r for w, r in instructions(CONTAINERFILE.read_text()) if w == "HEALTHCHECK"]
        argv = exec_form(check[-1].partition(" CMD ")[2])
        self.assertEqual(argv[1], "-c")
        warden = await self.start_warden()
        code = argv[-1].replace(f":{default_admin_port()}/", f":{warden.admin_port}/")

        async def healthy() -> bool:
            return await utils.getProcessValue(sys.executable, ["-c", code]) == 0

        self.assertTrue(await poll_async(healthy, 10))
        await warden.stop()
        self.assertFalse(await healthy())
