"""
A scratch Warden: ``twistd -n warden`` on restored data, on free loopback ports.

L{ScratchWarden} writes a configuration for the restored database and data
directory, starts the process, waits (polling with OPTIONS, a bounded number of
times) until it answers, and stops it with SIGTERM.
"""

from __future__ import annotations

import os
import random
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import protocol, task
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure

from warden.config import WardenConfig
from warden.sip.message import new_tag

from .probe import LOCALHOST, Identity, ProbeAgent, ProbeFailed, open_agent

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_port() -> int:
    """A port on 127.0.0.1 free for both UDP and TCP right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOCALHOST, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOCALHOST, port))
                except OSError:
                    continue
                return port
    raise OSError("no port free for both TCP and UDP on 127.0.0.1")


def port_in_use(port: int, transport: str) -> bool:
    """True when something is bound to ``port`` on 127.0.0.1 (``"udp"`` or ``"tcp"``)."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((LOCALHOST, port))
        except OSError:
            return True
    return False


def free_port_run(count: int) -> int:
    """A port ``p`` such that ``p .. p + count - 1`` are free for UDP and TCP."""
    for _ in range(100):
        first = free_port()
        if first + count <= 65535 and _run_free(first, count):
            return first
    raise OSError(f"no {count} consecutive ports free on 127.0.0.1")


def _run_free(first: int, count: int) -> bool:
    """Whether ``first .. first + count - 1`` are all free for UDP and TCP."""
    return not any(port_in_use(first + i, t) for i in range(count) for t in ("udp", "tcp"))


#: Where L{free_media_port} looks: below Linux's ephemeral ports (32768 up), so
#: that no port L{free_port} hands out (or a connection picks) falls in a run;
#: above Warden's default media ports (10000-20000) and below the tests' relay
#: ranges (30000 up).
MEDIA_PORTS = (20002, 29996)
_media_random = random.Random()


def free_media_port() -> int:
    """
    An even port for SIPp's ``-mp``: SIPp binds it and the three above it
    (RTCP, video RTP and RTCP), so all four must be free, not just the first.
    Picked at random in L{MEDIA_PORTS}, so that tests running at once rarely meet.
    """
    for _ in range(200):
        first = _media_random.randrange(MEDIA_PORTS[0], MEDIA_PORTS[1], 2)
        if _run_free(first, 4):
            return first
    raise OSError(f"no 4 consecutive ports free in {MEDIA_PORTS} on 127.0.0.1")


#: Where L{free_control_port} looks: above Linux's ephemeral ports (32768-60999
#: by default, ``net.ipv4.ip_local_port_range``), so that no socket bound to
#: port 0 (an outgoing connection, a client's socket, a port L{free_port} is
#: probing) can take a control port between its pick and the bind.
CONTROL_PORTS = (61000, 65000)
_control_random = random.Random()


def free_control_port() -> int:
    """
    A port for SIPp's remote-control socket (``-cp``, UDP), free now and
    outside the ephemeral range: L{free_port}'s pick could be handed to any
    socket bound to port 0 before SIPp binds it (seen in CI: "Unable to bind
    remote control socket ... Address already in use", SIPp exit 254).
    """
    for _ in range(200):
        port = _control_random.randrange(*CONTROL_PORTS)
        if not port_in_use(port, "udp"):
            return port
    raise OSError(f"no port free in {CONTROL_PORTS} on 127.0.0.1")


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def render_toml(
    sections: Mapping[str, Mapping[str, object] | Sequence[Mapping[str, object]]],
) -> str:
    """A TOML document of plain ``[section]`` tables and ``[[section]]`` arrays of tables."""
    lines: list[str] = []
    for name, value in sections.items():
        tables = [value] if isinstance(value, Mapping) else list(value)
        header = f"[{name}]" if isinstance(value, Mapping) else f"[[{name}]]"
        for table in tables:
            lines.append(header)
            lines.extend(f"{key} = {_toml(v)}" for key, v in table.items())
            lines.append("")
    return "\n".join(lines)


class _Child(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[int] = Deferred()
        self.code: int | None = None
        self.output = bytearray()

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self.output += data[-65536:]

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessDone | ProcessTerminated):
            self.code = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        else:
            self.code = -1
        self.ended.callback(self.code)


class ScratchWarden:
    """
    ``twistd -n warden`` in ``workdir`` on the restored ``data_dir``.

    Args:
        reactor: spawns the process and times the polling.
        workdir: a scratch directory (configuration and log go there).
        sections: the configuration (server.data_dir and the SIP listener are
            filled in here).
    """

    def __init__(
        self, reactor: Any, workdir: Path, sections: dict[str, dict[str, object]]
    ) -> None:
        self._reactor = reactor
        self.workdir = workdir
        self.port = 0
        self.config_path = workdir / "scratch-warden.toml"
        self.log_path = workdir / "scratch-warden.log"
        sections = {name: dict(table) for name, table in sections.items()}
        sections.setdefault("server", {}).setdefault("node_id", "drtest")
        sections["server"]["domains"] = [LOCALHOST]
        if "admin" in attrs.fields_dict(WardenConfig):
            # No admin API: its fixed default port belongs to the live PBX.
            sections["admin"] = {"enabled": False}
        self._sections = sections
        self._child: _Child | None = None
        self._process: Any = None

    def _configure(self) -> None:
        """Pick free ports and write the configuration."""
        self.port = free_port()
        sections = self._sections
        sections.setdefault("sip", {}).update({"interface": LOCALHOST, "port": self.port})
        media_low = free_port() & ~1
        sections.setdefault("media", {}).update(
            {"address": LOCALHOST, "port_min": max(1024, media_low - 100),
             "port_max": max(1024, media_low - 100) + 199}
        )  # fmt: skip
        self.config_path.write_text(render_toml(sections), encoding="utf-8")

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens for SIP."""
        return (LOCALHOST, self.port)

    def log_tail(self, lines: int = 30) -> str:
        """The end of its log, for failure reports."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = bytes(self._child.output if self._child else b"").decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """
        Start it and wait until it answers OPTIONS with 200 and its log says it
        listens on its port (so the answer is its own, not another process's
        that took the port first). Another free port is tried when it does not
        get its own, up to ``attempts`` times.

        Raises:
            ProbeFailed: it exited or did not answer within ``timeout`` seconds.
        """
        for attempt in range(attempts):
            self._configure()
            try:
                await self._start_once(timeout)
                return
            except ProbeFailed:
                await self.stop()
                if attempt == attempts - 1:
                    raise

    def _listening(self) -> bool:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return False
        return f"SIP listening on UDP {LOCALHOST}:{self.port}," in text

    async def _start_once(self, timeout: float) -> None:
        self._child = _Child()
        args = [*TWISTD, "-n", "--pidfile=", f"--logfile={self.log_path}", "warden",
                "--config", str(self.config_path)]  # fmt: skip
        self._process = self._reactor.spawnProcess(
            self._child, args[0], args, env=dict(os.environ), path=str(self.workdir)
        )
        agent, port = await open_agent(self._reactor, self.address, Identity("drtest", "", {}))
        try:
            for _ in range(int(timeout / 0.25)):
                if self._child.code is not None:
                    raise ProbeFailed(
                        f"the scratch Warden exited with {self._child.code}:\n{self.log_tail()}"
                    )
                if await self._options(agent) and self._listening():
                    return
        finally:
            port.stopListening()
        raise ProbeFailed(f"the scratch Warden did not answer within {timeout:g}s")

    async def _options(self, agent: ProbeAgent) -> bool:
        host, port = self.address
        headers = [
            ("From", f"<sip:drtest@{LOCALHOST}>;tag={new_tag()}"),
            ("To", f"<sip:{host}:{port}>"),
            ("Call-ID", new_tag()),
            ("CSeq", "1 OPTIONS"),
        ]
        try:
            response = await agent._send("OPTIONS", f"sip:{host}:{port}", headers, timeout=0.25)
        except TimeoutError:
            return False
        return response.status == 200

    async def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM and wait; SIGKILL after ``timeout`` seconds."""
        if self._child is None or self._child.code is not None:
            return
        self._process.signalProcess("TERM")
        for _ in range(int(timeout / 0.1)):
            if self._child.code is not None:
                return
            await task.deferLater(self._reactor, 0.1, lambda: None)
        try:
            self._process.signalProcess("KILL")
        except OSError:
            pass
        await self._child.ended
