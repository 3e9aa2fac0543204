"""
Real processes on real sockets for Warden's integration tests and benchmarks.

Everything listens on and talks to 127.0.0.1 only:

- L{free_port}: a port free for both UDP and TCP; L{free_media_port}: one
  for SIPp's ``-mp``, with the three ports above it free as well.
- L{WardenProcess}: ``twistd -n warden`` on a fresh configuration and data
  directory; started, probed with OPTIONS until it answers, stopped with SIGTERM.
- L{provision}: writes a SIPp injection file and imports the same extensions
  with ``wardenctl extension import``.
- L{run_sipp}, L{sipp_register_args}: SIPp runs (their trace files are read by
  L{tests.integration.sipp_traces}).
- L{IntegrationTestCase}: starts Wardens and SIP clients
  (L{tests.integration.clients}) that are cleaned up with the test, and prints
  the Warden log of a failed test.

Waiting is always polling on the real reactor with ``task.deferLater``, bounded
in the number of attempts; nothing sleeps.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from twisted.internet import defer, protocol
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.integration.clients import LOCALHOST, RawTcpClient, SipUdpClient, poll, real_reactor
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_messages
from warden.ops.drtest.scratch import (
    free_control_port,
    free_media_port,
    free_port,
    render_toml,
)

REALM = "warden.test"
REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTER_SCENARIO = REPO_ROOT / "bench" / "scenarios" / "register.xml"

# ``twistd`` has no ``__main__`` module: run its entry point, as the console script does.
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
WARDENCTL = [sys.executable, "-m", "warden.ctl"]


def require_binary(testcase: unittest.TestCase, name: str, package: str) -> str:
    """
    The path of executable ``name``. When it is missing the test is skipped, except
    under ``CI=true``, where it fails: CI must run every integration test.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    if os.environ.get("CI") == "true":
        testcase.fail(
            f"{name} is not installed, and CI=true requires it (apt-get install {package})"
        )
    raise unittest.SkipTest(f"{name} is not installed (apt-get install {package})")


def require_sipp(testcase: unittest.TestCase) -> str:
    """The path of ``sipp`` (skip locally, fail under CI, when it is missing)."""
    return require_binary(testcase, "sipp", "sip-tester")


# -- child processes -------------------------------------------------------------


class ProcessResult(NamedTuple):
    """How a child process ended: exit code (-N for signal N), stdout, stderr."""

    code: int
    stdout: str
    stderr: str


class _Child(protocol.ProcessProtocol):
    """Collects a child's output and fires ``ended`` with its exit code."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: Deferred[int] = Deferred()
        self.code: int | None = None

    def connectionMade(self) -> None:
        """Nothing is ever typed at a child."""
        self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        """Keep stdout."""
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        """Keep stderr."""
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        """Record the exit code, or minus the signal that killed the child."""
        value = reason.value
        if isinstance(value, ProcessDone | ProcessTerminated):
            code = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        else:
            code = -1
        self.code = code
        self.ended.callback(code)

    @property
    def running(self) -> bool:
        return self.code is None

    def output(self) -> tuple[str, str]:
        return (
            b"".join(self.out).decode("utf-8", "replace"),
            b"".join(self.err).decode("utf-8", "replace"),
        )


def spawn(args: Sequence[str], cwd: Path) -> tuple[_Child, Any]:
    """Start ``args`` in ``cwd`` with this environment; returns (protocol, process)."""
    child = _Child()
    process = real_reactor().spawnProcess(
        child, args[0], list(args), env=dict(os.environ), path=str(cwd)
    )
    return child, process


async def stop_spawned(child: _Child, process: Any, timeout: float = 15.0) -> None:
    """Kill a child L{spawn} started if it still runs, and wait for its end (pipes closed)."""
    if child.running:
        _kill_quietly(process)
    await poll(lambda: not child.running, timeout)


async def run_process(args: Sequence[str], cwd: Path, timeout: float) -> ProcessResult:
    """
    Run ``args`` to completion; a child still running after ``timeout`` seconds is
    killed (its code is then -9).
    """
    child, process = spawn(args, cwd)
    watchdog = real_reactor().callLater(timeout, _kill_quietly, process)
    try:
        code = await child.ended
    finally:
        if watchdog.active():
            watchdog.cancel()
    return ProcessResult(code, *child.output())


def _kill_quietly(process: Any) -> None:
    try:
        process.signalProcess("KILL")
    except OSError:
        pass


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


# -- Warden ------------------------------------------------------------------------


class WardenFailed(Exception):
    """Warden did not start, or did not stop, as expected."""


class WardenProcess:
    """
    ``twistd -n warden`` in ``workdir``: its configuration ``warden.toml``, data
    directory ``data/`` (database ``data/warden.db``) and log ``warden.log``.

    Args:
        workdir: a fresh directory owned by the caller.
        port: the SIP port (UDP and TCP); a free one by default.
        settings: configuration values merged over the defaults, by section
            (a list of tables is an array of tables, ``[[ringgroups]]``).
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config_path = workdir / "warden.toml"
        self.log_path = workdir / "warden.log"
        self.port = port if port is not None else free_port()
        self.admin_port = free_port()
        sections: dict[str, Any] = {
            "server": {
                "data_dir": str(self.data_dir),
                "realm": REALM,
                "node_id": "integration",
                "domains": [LOCALHOST],
            },
            "sip": {"interface": LOCALHOST, "port": self.port},
            # The admin API on a port of its own; SIGTERM hangs up at once unless
            # a test asks for a drain timeout.
            "admin": {
                "listen": f"tcp:{self.admin_port}:interface={LOCALHOST}",
                "drain_timeout": 0.0,
            },
        }
        for name, table in (settings or {}).items():
            if isinstance(table, list):
                sections[name] = table
            else:
                sections.setdefault(name, {}).update(table)
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_toml(sections))
        self._child: _Child | None = None
        self._process: Any = None

    @property
    def address(self) -> tuple[str, int]:
        """Where Warden's SIP listeners are."""
        return (LOCALHOST, self.port)

    @property
    def database_path(self) -> Path:
        """The SQLite database."""
        return self.data_dir / "warden.db"

    @property
    def pid(self) -> int:
        """The process id (only while running)."""
        assert self._process is not None and self._process.pid is not None
        return int(self._process.pid)

    @property
    def running(self) -> bool:
        """True between start and the process's exit."""
        return self._child is not None and self._child.running

    def command(self) -> list[str]:
        """The command line that runs this Warden."""
        return [
            *TWISTD,
            "-n",
            "--pidfile=",
            f"--logfile={self.log_path}",
            "warden",
            "--config",
            str(self.config_path),
        ]

    async def start(self, timeout: float = 15.0) -> None:
        """
        Start Warden and wait until it answers OPTIONS over UDP with 200.

        Raises:
            WardenFailed: it exited, or did not answer within ``timeout`` seconds
                (it is killed then); the message ends with the log.
        """
        assert not self.running, "already running"
        self._child, self._process = spawn(self.command(), self.workdir)
        client = await self.probe_client()
        try:
            for _ in range(max(1, int(timeout / 0.25))):
                if not self.running:
                    raise WardenFailed(self._describe("exited during start-up"))
                try:
                    response = await client.options(timeout=0.25, retransmit=False)
                except defer.TimeoutError:
                    continue
                if response.status == 200:
                    return
                raise WardenFailed(self._describe(f"answered OPTIONS with {response.status}"))
        finally:
            await client.close()
        await self.kill()
        raise WardenFailed(self._describe(f"did not answer OPTIONS within {timeout:g}s"))

    async def probe_client(self) -> SipUdpClient:
        """The client whose OPTIONS tell when Warden has started."""
        return await SipUdpClient.open(self.address)

    async def stop(self, timeout: float = 15.0) -> int:
        """
        SIGTERM, then wait for the exit; returns the exit code.

        Raises:
            WardenFailed: still running after ``timeout`` seconds (then killed).
        """
        if not self.running:
            return self._child.code if self._child and self._child.code is not None else 0
        self._process.signalProcess("TERM")
        if not await poll(lambda: not self.running, timeout):
            await self.kill()
            raise WardenFailed(self._describe(f"still running {timeout:g}s after SIGTERM"))
        assert self._child is not None and self._child.code is not None
        return self._child.code

    async def kill(self) -> None:
        """SIGKILL and wait for the exit."""
        if self.running:
            _kill_quietly(self._process)
            assert self._child is not None
            await self._child.ended

    async def cleanup(self) -> None:
        """For ``addCleanup``: stop if still running, killing it if it does not stop."""
        try:
            await self.stop()
        except WardenFailed:
            pass

    def rss_kib(self) -> int:
        """Resident memory, KiB."""
        return process_rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        """CPU time used so far (user + system), seconds."""
        return process_cpu_seconds(self.pid)

    def log_text(self) -> str:
        """The whole log so far ("" before it exists)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 150) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _describe(self, what: str) -> str:
        out, err = self._child.output() if self._child else ("", "")
        return (
            f"Warden on port {self.port} {what}.\n--- stdout/stderr ---\n{out}{err}"
            f"\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
        )

    def count_bindings(self) -> int:
        """Rows in the ``bindings`` table (read-only; safe while Warden runs)."""
        connection = sqlite3.connect(f"file:{self.database_path}?mode=ro", uri=True)
        try:
            (count,) = connection.execute("SELECT count(*) FROM bindings").fetchone()
        finally:
            connection.close()
        return int(count)


# -- provisioning -----------------------------------------------------------------


class Users(NamedTuple):
    """Provisioned extensions: numbers and passwords, and the SIPp injection file."""

    numbers: list[str]
    passwords: dict[str, str]
    sipp_csv: Path


def user_password(number: str) -> str:
    """The (test-only) password of extension ``number``."""
    return f"pw-{number}-secret"


def write_user_files(directory: Path, count: int, first: int = 100000) -> tuple[Users, Path]:
    """
    Write ``count`` extensions starting at ``first``: ``users.csv`` for SIPp and
    ``extensions.csv`` for ``wardenctl extension import``.

    SIPp 3.6 cannot nest ``[field0]`` inside ``[authentication ...]``; it does
    expand an ``[authentication ...]`` keyword that comes from an injection field,
    so each SIPp line carries one as its third field:
    ``number;password;[authentication username=number password=password]``.
    wardenctl reads a third field as the display name, hence the second file.
    """
    numbers = [str(first + i) for i in range(count)]
    passwords = {n: user_password(n) for n in numbers}
    sipp_csv = directory / "users.csv"
    extensions_csv = directory / "extensions.csv"
    with (
        open(sipp_csv, "w", encoding="ascii") as sipp,
        open(extensions_csv, "w", encoding="ascii") as ctl,
    ):
        sipp.write("SEQUENTIAL\n")
        ctl.write("SEQUENTIAL\n")
        for n in numbers:
            p = passwords[n]
            sipp.write(f"{n};{p};[authentication username={n} password={p}]\n")
            ctl.write(f"{n};{p}\n")
    return Users(numbers, passwords, sipp_csv), extensions_csv


async def wardenctl(
    config: Path, *args: str, timeout: float = 300.0, prefix: Sequence[str] = ()
) -> ProcessResult:
    """Run ``wardenctl --config <config> <args>`` (under ``prefix``, e.g. ``ip netns exec``)."""
    command = [*prefix, *WARDENCTL, "--config", str(config), *args]
    return await run_process(command, config.parent, timeout)


async def provision(
    config: Path, count: int, first: int = 100000, prefix: Sequence[str] = ()
) -> Users:
    """
    Create ``count`` extensions with ``wardenctl extension import`` (run under
    ``prefix``) and write the matching SIPp injection file next to ``config``.

    Raises:
        RuntimeError: the import failed (the message has wardenctl's output).
    """
    users, extensions_csv = write_user_files(config.parent, count, first)
    result = await wardenctl(config, "extension", "import", str(extensions_csv), prefix=prefix)
    if result.code != 0:
        raise RuntimeError(
            f"wardenctl import failed ({result.code}): {result.stderr}{result.stdout}"
        )
    return users


# -- SIPp ---------------------------------------------------------------------------


def sipp_command(args: Sequence[str]) -> list[str]:
    """
    The full ``sipp`` command line for ``args``: unattended (``-nostdin``) and with
    a free control port, so that several SIPp instances can run at once.
    """
    sipp = shutil.which("sipp")
    if sipp is None:
        raise FileNotFoundError("sipp")
    return [sipp, *args, "-nostdin", "-cp", str(free_control_port())]


async def run_sipp(args: Sequence[str], cwd: Path, timeout: float = 120.0) -> ProcessResult:
    """Run ``sipp <args>`` in ``cwd`` (where its trace files land); killed after ``timeout`` s."""
    return await run_process(sipp_command(args), cwd, timeout)


def sipp_register_args(
    server: tuple[str, int],
    users_csv: Path,
    calls: int,
    rate: float,
    transport: str = "u1",
    local_port: int = 0,
    timeout: float = 60.0,
    scenario: Path = REGISTER_SCENARIO,
) -> list[str]:
    """
    SIPp arguments running ``scenario`` (by default L{REGISTER_SCENARIO}) for
    ``calls`` users of ``users_csv`` at ``rate`` per second, tracing statistics,
    errors and response times into the working directory.
    """
    return [
        f"{server[0]}:{server[1]}",
        "-sf", str(scenario),
        "-inf", str(users_csv),
        "-t", transport,
        "-i", LOCALHOST,
        "-p", str(local_port),
        "-m", str(calls),
        "-r", f"{rate:g}",
        "-rp", "1000",
        "-l", str(max(100, int(rate * 5))),
        "-timeout", f"{timeout:g}s",
        "-timeout_error",
        "-trace_stat",
        "-trace_err",
        "-trace_rtt",
        "-rtt_freq", "1",
    ]  # fmt: skip


async def register_sipp_phone(
    server: tuple[str, int], number: str, password: str, local_port: int, run_dir: Path
) -> tuple[ProcessResult, str]:
    """
    Register extension ``number`` with SIPp from ``local_port`` (where a SIPp UAS
    will then answer its calls); returns SIPp's result and its error trace.
    """
    users_csv = run_dir / "callee.csv"
    users_csv.write_text(
        f"SEQUENTIAL\n{number};{password};[authentication username={number} password={password}]\n"
    )
    result = await run_sipp(
        sipp_register_args(server, users_csv, 1, 10, local_port=local_port), run_dir
    )
    return result, read_sipp_errors(run_dir)


def write_sipp_caller(run_dir: Path, caller: str, password: str, number: str) -> Path:
    """
    The injection file of a SIPp UAC in which extension ``caller`` dials
    ``number`` (the fields of bench/scenarios/call_uac.xml), in ``run_dir``.
    """
    path = run_dir / "caller.csv"
    path.write_text(
        f"SEQUENTIAL\n{caller};{password};{number};"
        f"[authentication username={caller} password={password}]\n"
    )
    return path


def sipp_uac_args(
    server: tuple[str, int],
    scenario: Path,
    fields: Path,
    *more: str,
    calls: int = 1,
    host: str = LOCALHOST,
    timeout: float = 60.0,
) -> list[str]:
    """
    SIPp arguments running the UAC ``scenario`` against ``server`` from
    ``host`` for ``calls`` calls with the injection file ``fields`` (for
    example L{write_sipp_caller}'s), media on a free port, a call failing
    after ``timeout`` seconds, statistics and errors traced into the working
    directory; then ``more``.
    """
    return [
        f"{server[0]}:{server[1]}",
        "-sf", str(scenario),
        "-inf", str(fields),
        "-i", host,
        "-mp", str(free_media_port()),
        "-m", str(calls),
        "-timeout", f"{timeout:g}s",
        "-timeout_error",
        "-trace_stat",
        "-trace_err",
        *more,
    ]  # fmt: skip


# -- trial -------------------------------------------------------------------------


class IntegrationTestCase(unittest.TestCase):
    """
    A trial TestCase on the real reactor that prints the log of every Warden it
    started when the test fails or errors.
    """

    timeout = 300

    def setUp(self) -> None:
        """Nothing started yet."""
        self._wardens: list[WardenProcess] = []

    def workdir(self) -> Path:
        """A fresh directory under trial's temporary directory."""
        path = Path(self.mktemp()).resolve()
        path.mkdir(parents=True)
        return path

    #: Added to every started Warden's ``[media]`` section (see start_warden).
    media_settings: ClassVar[dict[str, Any]] = {}

    async def start_warden(
        self,
        settings: dict[str, Any] | None = None,
        workdir: Path | None = None,
        config_text: str = "",
    ) -> WardenProcess:
        """
        Start a Warden in a fresh directory; it is stopped when the test ends.
        ``media_settings`` (a class attribute) is added to its ``[media]``: a
        subclass runs the same tests with another relay (ADR 0033).
        ``config_text`` is TOML added at the end of its configuration (tables
        ``settings`` cannot express, such as ``[ivr.digits]``).
        """
        if self.media_settings:
            settings = dict(settings or {})
            settings["media"] = {**settings.get("media", {}), **self.media_settings}
        warden = WardenProcess(workdir or self.workdir(), settings=settings)
        if config_text:
            warden.config_path.write_text(warden.config_path.read_text() + "\n" + config_text)
        self._wardens.append(warden)
        self.addCleanup(lambda: Deferred.fromCoroutine(warden.cleanup()))
        await warden.start()
        return warden

    def spawn_sipp(self, args: Sequence[str], run_dir: Path) -> Any:
        """``sipp <args>`` left running in ``run_dir`` (L{spawn}'s child); stopped at the end."""
        child, process = spawn(sipp_command(args), run_dir)
        self.addCleanup(lambda: Deferred.fromCoroutine(stop_spawned(child, process)))
        return child

    async def sipp_finished(self, child: Any, run_dir: Path) -> None:
        """A SIPp of L{spawn_sipp} ran every call it was given, and all succeeded."""
        done = await poll(lambda: not child.running, 60)
        context = (
            f"{child.output()}\n{read_sipp_errors(run_dir)}\n{read_sipp_messages(run_dir)[-4000:]}"
        )
        self.assertTrue(done, context)
        self.assertEqual(child.code, 0, context)

    async def sipp_callee(
        self,
        warden: WardenProcess,
        number: str,
        password: str,
        scenario: Path,
        calls: int = 1,
        more: Sequence[str] = (),
    ) -> tuple[Any, Path]:
        """
        A SIPp UAS registered as extension ``number`` and running ``scenario``
        for ``calls`` calls (``more``: further SIPp arguments); killed at the
        end. Returns it (L{spawn}'s child) and its directory.
        """
        phone_dir, phone_port = self.workdir(), free_port()
        reg, errors = await register_sipp_phone(
            warden.address, number, password, phone_port, phone_dir
        )
        self.assertEqual(reg.code, 0, reg.stderr + errors)
        args = [
            "-sf", str(scenario), "-i", LOCALHOST, "-p", str(phone_port),
            "-mp", str(free_media_port()), "-m", str(calls), "-trace_err", "-trace_msg", *more,
            f"{warden.address[0]}:{warden.address[1]}",
        ]  # fmt: skip
        return self.spawn_sipp(args, phone_dir), phone_dir

    async def sip_client(self, warden: WardenProcess) -> SipUdpClient:
        """A SIP client for ``warden``, closed when the test ends."""
        client = await SipUdpClient.open(warden.address)
        self.addCleanup(lambda: Deferred.fromCoroutine(client.close()))
        return client

    async def tcp_client(self, address: tuple[str, int]) -> RawTcpClient:
        """A raw TCP connection to ``address``, closed when the test ends."""
        client = await RawTcpClient.connect(address)
        self.addCleanup(lambda: Deferred.fromCoroutine(client.close()))
        return client

    def run(self, result: Any) -> None:
        """Run the test; if it added a failure or error, print the Warden logs."""
        before = _problems(result)
        super().run(result)
        if _problems(result) > before:
            for warden in getattr(self, "_wardens", ()):
                sys.stderr.write(
                    f"\n===== {self.id()}: {warden.log_path} (last lines) =====\n"
                    f"{warden.log_tail(200)}\n===== end of log =====\n"
                )


def _problems(result: Any) -> int:
    return len(getattr(result, "errors", ())) + len(getattr(result, "failures", ()))
