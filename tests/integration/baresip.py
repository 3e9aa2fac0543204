"""
baresip as a real phone for Warden's integration tests.

Each L{BaresipPhone} is one headless ``baresip -s -f DIR`` process (Debian's
``baresip-core``, baresip 1.0.0) with a configuration directory of its own:

- SIP over UDP on 127.0.0.1 only (``net_interface``, ``sip_listen``); baresip 1.0
  also listens on TCP at the next port for TLS, hence L{sip_port_pair}. ``-s``
  traces every SIP message on stdout (L{parse_sip_trace}).
- Audio: the source is a WAV file (``aufile``); the player is an ``aubridge``
  device no source is bridged to, so received audio is discarded without a
  sound card (ALSA's ``null`` device would do too, but spins a CPU per phone);
  the ``sndfile`` filter records what the phone sends (``*-enc.wav``) and
  receives (``*-dec.wav``) into ``recordings/``. G.711 only; RFC 4733
  ``telephone-event`` is always offered.
- Control: ``ctrl_tcp`` on 127.0.0.1, JSON in netstrings. The ``menu`` module's
  commands (``dial``, ``accept``, ``hangup``, ``hold``, ``resume``, ``sndcode``,
  ``transfer``, ``reginfo``, ``audio_debug``, ``quit``) get a response each;
  events (``CALL_INCOMING``, ``CALL_ESTABLISHED``, ``CALL_DTMF_START``,
  ``CALL_CLOSED``, ...) are pushed and kept in L{BaresipPhone.events}.

What baresip 1.0 cannot do, and how the tests live with it:

- Its digest code (libre 1.0) gives up on a challenge whose algorithm is not MD5
  ("Register: Function not implemented"), even when an MD5 challenge is offered
  too. Warden offers MD5 only by default, so the phones register with a Warden
  on its defaults.
- When the audio file ends the call is hung up: tone files outlast the tests.
- After a re-INVITE the receive recording stops (the receive filter chain is
  flushed and not rebuilt): later media is counted with ``audio_debug``
  (L{BaresipPhone.rtp_received}) instead of recorded.

Waiting is polling on the real reactor, bounded; nothing sleeps.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import sys
from pathlib import Path
from typing import Any, NamedTuple

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import NetstringReceiver
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.integration.baresip_audio import read_samples
from tests.integration.clients import LOCALHOST, pause, poll, real_reactor
from tests.integration.harness import (
    IntegrationTestCase,
    WardenProcess,
    free_port,
    require_binary,
    spawn,
)

PACKAGE = "baresip-core"
MODULE_DIRS = (
    Path("/usr/lib/baresip/modules"),
    Path("/usr/local/lib/baresip/modules"),
    Path("/usr/lib/x86_64-linux-gnu/baresip/modules"),
)
MODULES = ("g711", "aufile", "sndfile", "aubridge", "account", "menu", "ctrl_tcp")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# menu's call status, printed again and again during a call.
_STATUS = re.compile(r"\[\d+:\d\d:\d\d\] audio=\d+/\d+ \(bit/s\)\s*")
_TRACE = re.compile(r"#\n(UDP|TCP|TLS) (\S+) -> (\S+)\n(.*?)\x1b\[;m", re.DOTALL)


def require_baresip(testcase: unittest.TestCase) -> tuple[str, Path]:
    """
    The ``baresip`` executable and its module directory. Skips when baresip is
    missing (fails under ``CI=true``); fails when it lacks a module the tests use.
    """
    binary = require_binary(testcase, "baresip", PACKAGE)
    for directory in MODULE_DIRS:
        if (directory / "g711.so").exists():
            missing = [m for m in MODULES if not (directory / f"{m}.so").exists()]
            if missing:
                testcase.fail(f"baresip modules missing from {directory}: {missing}")
            return binary, directory
    testcase.fail(f"no baresip module directory among {[str(d) for d in MODULE_DIRS]}")


def sip_port_pair() -> int:
    """A port free for UDP and TCP whose successor is free for TCP (baresip's TLS)."""
    for _ in range(100):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tls:
            try:
                tls.bind((LOCALHOST, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no pair of free ports on 127.0.0.1")


def render_config(
    sip_port: int, control_port: int, source: Path, recordings: Path, modules: Path,
    srtp: bool = False,
) -> str:  # fmt: skip
    """
    A baresip 1.0 ``config``: loopback only, WAV in, nothing out, recorded;
    ``srtp`` loads the ``srtp`` media encryption module (SDES, RFC 4568).
    """
    extra = ["module srtp.so"] if srtp else []
    return "\n".join(
        [
            "poll_method epoll",
            f"net_interface {LOCALHOST}",
            f"sip_listen {LOCALHOST}:{sip_port}",
            f"dns_server {LOCALHOST}:53",
            "call_local_timeout 60",
            "call_max_calls 4",
            f"audio_source aufile,{source}",
            "audio_player aubridge,discard-call",
            "audio_alert aubridge,discard-alert",
            "ausrc_srate 8000",
            "auplay_srate 8000",
            "ausrc_channels 1",
            "auplay_channels 1",
            "rtp_ports 20000-29999",
            "ringback_disabled yes",
            f"module_path {modules}",
            "module g711.so",
            "module aufile.so",
            "module sndfile.so",
            "module aubridge.so",
            *extra,
            "module_tmp account.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen {LOCALHOST}:{control_port}",
            f"snd_path {recordings}",
            "",
        ]
    )


def render_account(
    number: str, password: str, registrar: tuple[str, int], codec: str,
    transport: str = "udp", mediaenc: str = "",
) -> str:  # fmt: skip
    """
    A baresip 1.0 ``accounts`` line: digest password, manual answer, one codec;
    ``transport`` for SIP (``udp`` or ``tls``), ``mediaenc`` e.g. ``srtp-mand``
    (RTP/SAVP with ``a=crypto``).
    """
    host, port = registrar
    uri_params = "" if transport == "udp" else f";transport={transport}"
    encryption = f";mediaenc={mediaenc}" if mediaenc else ""
    return (
        f"<sip:{number}@{host}:{port}{uri_params}>;auth_pass={password};regint=600"
        f";answermode=manual;audio_codecs={codec}{encryption}\n"
    )


class TracedMessage(NamedTuple):
    """One SIP message of a ``baresip -s`` trace."""

    transport: str
    source: str
    destination: str
    text: str

    @property
    def start_line(self) -> str:
        """``INVITE sip:... SIP/2.0`` or ``SIP/2.0 200 OK``."""
        return self.text.split("\r\n", 1)[0]

    @property
    def body(self) -> str:
        """The body ("" when there is none)."""
        parts = self.text.split("\r\n\r\n", 1)
        return parts[1] if len(parts) == 2 else ""

    def header(self, name: str) -> str:
        """The first value of header ``name`` (long form), or ""."""
        match = re.search(rf"^{re.escape(name)}:[ \t]*(.*?)\r?$", self.text, re.M | re.I)
        return match.group(1) if match else ""


def parse_sip_trace(output: str) -> list[TracedMessage]:
    """The SIP messages ``baresip -s`` printed, in order."""
    return [TracedMessage(*match.groups()) for match in _TRACE.finditer(output)]


def clean_output(raw: str) -> str:
    """baresip's stdout without colours and call status lines."""
    return _STATUS.sub("", _ANSI.sub("", raw))


class BaresipTimeout(AssertionError):
    """A phone did not do what the test expected in time (a test failure)."""


class _Control(NetstringReceiver):
    """``ctrl_tcp``: commands with a token, their responses, and pushed events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._waiting: dict[str, defer.Deferred[dict[str, Any]]] = {}
        self._tokens = 0

    def stringReceived(self, string: bytes) -> None:
        """A response resolves its command; an event is kept."""
        message = json.loads(string)
        if message.get("response"):
            waiting = self._waiting.pop(str(message.get("token")), None)
            if waiting is not None:
                waiting.callback(message)
        elif message.get("event"):
            self.events.append(message)

    def command(self, name: str, params: str) -> defer.Deferred[dict[str, Any]]:
        """Send a command; the Deferred fires with its response."""
        self._tokens += 1
        token = f"t{self._tokens}"
        waiting: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._waiting[token] = waiting
        self.sendString(json.dumps({"command": name, "params": params, "token": token}).encode())
        return waiting

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Commands still waiting fail with the reason."""
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(reason)


class BaresipPhone:
    """
    One baresip registered as extension ``number`` of a Warden.

    Args:
        name: a label for messages ("A").
        directory: a fresh directory for its configuration and recordings.
        binary, modules: from L{require_baresip}.
        number, password: the extension.
        registrar: Warden's SIP address.
        source: the WAV file it plays into calls (8 kHz mono 16-bit).
        codec: ``PCMU`` or ``PCMA``.
        transport: SIP transport to the registrar, ``udp`` or ``tls``.
        mediaenc: baresip's media encryption (``srtp-mand``), or "" for plain RTP.

    Ports are chosen in L{start}: start phones one after another.
    """

    def __init__(
        self,
        name: str,
        directory: Path,
        binary: str,
        modules: Path,
        number: str,
        password: str,
        registrar: tuple[str, int],
        source: Path,
        codec: str = "PCMU",
        transport: str = "udp",
        mediaenc: str = "",
    ) -> None:
        self.name = name
        self.transport = transport
        self.mediaenc = mediaenc
        self.directory = directory
        self.recordings = directory / "recordings"
        self.number = number
        self.registrar = registrar
        self._binary = binary
        self._modules = modules
        self._password = password
        self._source = source
        self._codec = codec
        self.sip_port = 0
        self._child: Any = None
        self._process: Any = None
        self._control: _Control | None = None

    @property
    def aor(self) -> str:
        """``sip:NUMBER@host:port``: what to dial to reach this phone."""
        return f"sip:{self.number}@{self.registrar[0]}:{self.registrar[1]}"

    def dial_uri(self, number: str) -> str:
        """What this phone dials to call ``number`` through its registrar (and transport)."""
        uri_params = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:{number}@{self.registrar[0]}:{self.registrar[1]}{uri_params}"

    @property
    def running(self) -> bool:
        """True between start and the process's exit."""
        return self._child is not None and self._child.running

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event received so far, oldest first."""
        return self._control.events if self._control is not None else []

    # -- life cycle ---------------------------------------------------------------

    async def start(self, timeout: float = 15.0) -> None:
        """Write the configuration, start baresip and connect to ``ctrl_tcp``."""
        self.recordings.mkdir(parents=True, exist_ok=True)
        self.sip_port = sip_port_pair()
        control_port = free_port()
        while control_port in (self.sip_port, self.sip_port + 1):
            control_port = free_port()
        # Relative to baresip's working directory: baresip 1.0 truncates file
        # names in 128-byte buffers, and trial's directories are deep.
        source = Path(os.path.relpath(self._source, self.directory))
        recordings = Path(os.path.relpath(self.recordings, self.directory))
        (self.directory / "config").write_text(
            render_config(
                self.sip_port, control_port, source, recordings, self._modules,
                srtp=bool(self.mediaenc),
            )
        )  # fmt: skip
        (self.directory / "accounts").write_text(
            render_account(
                self.number, self._password, self.registrar, self._codec, self.transport,
                self.mediaenc,
            )
        )  # fmt: skip
        command = [self._binary, "-s", "-f", str(self.directory)]
        self._child, self._process = spawn(command, self.directory)
        endpoint = TCP4ClientEndpoint(real_reactor(), LOCALHOST, control_port, timeout=1)
        for _ in range(int(timeout / 0.2)):
            if not self.running:
                raise BaresipTimeout(self.describe("exited during start-up"))
            try:
                self._control = await connectProtocol(endpoint, _Control())
                return
            except ConnectError:
                await pause(0.2)
        raise BaresipTimeout(self.describe(f"no ctrl_tcp on port {control_port} in {timeout:g}s"))

    async def stop(self, timeout: float = 10.0) -> None:
        """
        ``quit`` (it unregisters), then SIGKILL if it is still running; the output
        is saved as ``baresip.log`` in the phone's directory.
        """
        if self.running and self._control is not None:
            self._control.command("quit", "").addErrback(lambda _: None)
            await poll(lambda: not self.running, timeout)
        if self.running:
            try:
                self._process.signalProcess("KILL")
            except OSError:
                pass
            await self._child.ended
        if self._control is not None and self._control.transport is not None:
            self._control.transport.loseConnection()
        # The whole output, for a look after the test (trial keeps its directory).
        (self.directory / "baresip.log").write_text(self.output())

    # -- control ------------------------------------------------------------------

    async def command(self, name: str, params: str = "", timeout: float = 10.0) -> str:
        """
        Run a command; returns its text.

        Raises:
            BaresipTimeout: no response in time, or the command failed.
        """
        assert self._control is not None, "not started"
        waiting = self._control.command(name, params)
        waiting.addTimeout(timeout, real_reactor())
        try:
            response = await waiting
        except defer.TimeoutError:
            raise BaresipTimeout(
                self.describe(f"no response to {name!r} in {timeout:g}s")
            ) from None
        if not response.get("ok"):
            raise BaresipTimeout(self.describe(f"{name} {params!r} failed: {response}"))
        return clean_output(str(response.get("data", "")))

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        """The events of type ``kind`` so far."""
        return [e for e in self.events if e.get("type") == kind]

    async def wait_event(self, kind: str, count: int = 1, timeout: float = 15.0) -> dict[str, Any]:
        """
        The ``count``-th event of type ``kind``, waiting up to ``timeout`` seconds.

        Raises:
            BaresipTimeout: it did not come.
        """
        if not await poll(lambda: len(self.events_of(kind)) >= count, timeout):
            seen = [e.get("type") for e in self.events]
            raise BaresipTimeout(
                self.describe(f"{count} x {kind} not seen in {timeout:g}s; events: {seen}")
            )
        return self.events_of(kind)[count - 1]

    async def wait_registered(self, timeout: float = 15.0) -> None:
        """Wait until ``reginfo`` says the account is registered (200 OK)."""
        registered = re.compile(rf"sip:{re.escape(self.number)}@\S+\s+OK\b")
        for _ in range(int(timeout / 0.25)):
            if registered.search(await self.command("reginfo")):
                return
            await pause(0.25)
        raise BaresipTimeout(self.describe(f"not registered within {timeout:g}s"))

    async def audio_debug(self) -> str:
        """The ``audio_debug`` text of the current call."""
        return await self.command("audio_debug")

    async def rtp_received(self) -> int:
        """RTP packets received in the current call (RTCP member ``rcvd`` counts)."""
        return sum(int(n) for n in re.findall(r"\brcvd=(\d+)", await self.audio_debug()))

    async def remote_media(self) -> tuple[str, int]:
        """Where the phone sends its RTP in the current call."""
        match = re.search(r"remote: ([0-9.]+):(\d+)", await self.audio_debug())
        if match is None:
            raise BaresipTimeout(self.describe("audio_debug names no remote RTP address"))
        return match.group(1), int(match.group(2))

    async def wait_rtp_received(self, packets: int, timeout: float = 15.0) -> int:
        """Wait until the current call has received ``packets`` RTP packets."""
        received = 0
        for _ in range(int(timeout / 0.25)):
            received = await self.rtp_received()
            if received >= packets:
                return received
            await pause(0.25)
        raise BaresipTimeout(
            self.describe(f"received {received} RTP packets, not {packets}, in {timeout:g}s")
        )

    # -- results ------------------------------------------------------------------

    async def received_audio(self, timeout: float = 10.0) -> list[int]:
        """
        The samples this phone received in its first call, from its recording
        (complete once that call's audio stopped: on hangup or re-INVITE).
        """
        samples: list[int] = []

        def complete() -> bool:
            nonlocal samples
            files = sorted(self.recordings.glob("*-dec.wav"))
            try:
                samples = read_samples(files[0]) if files else []
            except (EOFError, OSError, ValueError):
                return False
            return bool(samples)

        if not await poll(complete, timeout):
            found = sorted(p.name for p in self.recordings.iterdir())
            raise BaresipTimeout(self.describe(f"no complete receive recording: {found}"))
        return samples

    def sip_trace(self) -> list[TracedMessage]:
        """The SIP messages sent and received so far."""
        return parse_sip_trace(self._child.output()[0] if self._child else "")

    def received_requests(self, method: str) -> list[TracedMessage]:
        """The ``method`` requests this phone received, in order."""
        return [
            m
            for m in self.sip_trace()
            if m.destination.endswith(f":{self.sip_port}")
            and m.start_line.startswith(method + " ")
        ]

    def output(self) -> str:
        """stdout and stderr, cleaned (L{clean_output})."""
        if self._child is None:
            return ""
        out, err = self._child.output()
        return clean_output(out + err)

    def describe(self, what: str = "", lines: int = 80) -> str:
        """``what`` and the last ``lines`` lines of the phone's output."""
        tail = "\n".join(self.output().splitlines()[-lines:])
        return (
            f"baresip {self.name} ({self.number}, SIP port {self.sip_port}) {what}\n"
            f"--- baresip {self.name} output (tail) ---\n{tail}\n--- end ---"
        )


def free_port_range(size: int = 20, low: int = 30000, high: int = 32600) -> tuple[int, int]:
    """
    ``(first, last)``: ``size`` consecutive UDP ports on 127.0.0.1, starting even,
    between ``low`` and ``high`` (below Linux's ephemeral ports), all free now.
    A random block each time, so that tests running in parallel rarely meet.
    """
    for _ in range(100):
        first = random.randrange(low, high - size, 2)
        last = first + size - 1
        if not held_ports((first, last)):
            return first, last
    raise RuntimeError(f"no {size} free UDP ports between {low} and {high}")


def held_ports(port_range: tuple[int, int]) -> list[int]:
    """Ports of ``port_range`` that cannot be bound on 127.0.0.1 (someone holds them)."""
    held = []
    for port in range(port_range[0], port_range[1] + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((LOCALHOST, port))
            except OSError:
                held.append(port)
    return held


class BaresipTestCase(IntegrationTestCase):
    """
    An L{IntegrationTestCase} with baresip phones: they are stopped when the test
    ends, and a failed test prints the end of each phone's output (after the
    Warden logs).
    """

    def setUp(self) -> None:
        """baresip and its modules are needed."""
        super().setUp()
        self._phones: list[BaresipPhone] = []
        self.baresip, self.baresip_modules = require_baresip(self)

    async def start_phone(
        self, name: str, warden: WardenProcess, number: str, password: str, source: Path,
        codec: str = "PCMU", registrar: tuple[str, int] | None = None, transport: str = "udp",
        mediaenc: str = "",
    ) -> BaresipPhone:  # fmt: skip
        """
        Start a phone for extension ``number``; it is stopped when the test ends.
        ``registrar``: where it registers (default Warden's UDP address).
        """
        phone = BaresipPhone(
            name, self.workdir(), self.baresip, self.baresip_modules, number, password,
            registrar or warden.address, source, codec, transport, mediaenc,
        )  # fmt: skip
        self._phones.append(phone)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(phone.stop()))
        await phone.start()
        return phone

    def run(self, result: Any) -> None:
        """Run the test; if it failed, print the end of every phone's output too."""
        before = len(getattr(result, "errors", ())) + len(getattr(result, "failures", ()))
        super().run(result)
        after = len(getattr(result, "errors", ())) + len(getattr(result, "failures", ()))
        if after > before:
            for phone in getattr(self, "_phones", ()):
                sys.stderr.write(f"\n===== {self.id()}: {phone.describe(lines=150)}\n")
