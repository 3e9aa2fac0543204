"""
CPU per registration of one ``warden-loadtest`` process, without sockets.

Runs the generator as a run does (L{warden.ops.loadtest.runner.LoadTest}: pacer,
agent, recorder; a ``registrations`` test of ``--users`` users; the garbage
collector set as the service sets it) on a manual
clock, against an in-process registrar that answers each REGISTER from its
bytes: 401 with a fresh digest challenge (``qop="auth"``), then, once the
``Authorization`` it carries is checked (RFC 7616 §3.4.1; a wrong answer gets
403), 200 with the contact and its expiry. Responses are delivered at once
(zero network latency); the clock moves 1 ms per step.

The figure is the process's CPU time (``time.process_time``) from the first
registration to the last of the measured phase, minus the CPU the registrar
spent (timed around each of its answers), divided by the registrations: it
depends little on what else runs on the machine. The unregistrations of the
tear-down are counted apart.

Usage::

    python bench/loadgen_cpu.py [--users 20000] [--rate 10000] [--profile FILE]

Prints one JSON object, with the load of the rest of the machine during the
measured run (``other_cpu_pct``, ``steal_pct``) and ``valid`` (together under
10% of a core, ``bench.machine``). To measure another revision, put its checkout first on
the path: ``PYTHONPATH=/path/to/old python bench/loadgen_cpu.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol

from bench.hotpath import HeapClock
from bench.machine import MachineMeter, invalid_note
from warden.ops.loadtest.options import Options
from warden.ops.loadtest.results import Account
from warden.ops.loadtest.runner import LoadTest
from warden.process import calm_collector

PBX = ("198.51.100.1", 5060)
LOCAL = ("127.0.0.1", 40000)
REALM = "bench.test"
#: Simulated seconds per step of the manual clock.
STEP = 0.001


def _password(user: str) -> str:
    return f"pw-{user}"


def _header(head: bytes, name: bytes) -> bytes:
    """The first header line ``name: ...`` of ``head`` (whole line, no CRLF)."""
    start = head.find(b"\r\n" + name + b":")
    if start < 0:
        raise ValueError(f"no {name.decode()} header")
    start += 2
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)]


class Registrar:
    """
    Answers REGISTER (and OPTIONS) datagrams from their bytes; checks every
    digest answer. ``cpu`` is the CPU time spent answering.
    """

    def __init__(self) -> None:
        self.cpu = 0.0
        self.nonces = 0
        self.checked = 0
        self.rejected = 0
        self._ha1: dict[str, str] = {}

    def answer(self, data: bytes) -> bytes:
        """The response to one request."""
        began = time.process_time()
        try:
            return self._answer(data)
        finally:
            self.cpu += time.process_time() - began

    def _answer(self, data: bytes) -> bytes:
        head = data.split(b"\r\n\r\n", 1)[0]
        via, from_, to, call_id, cseq = (
            _header(head, name) for name in (b"Via", b"From", b"To", b"Call-ID", b"CSeq")
        )
        common = b"\r\n".join((via, from_, to, call_id, cseq))
        if head.startswith(b"OPTIONS "):
            return b"SIP/2.0 200 OK\r\n" + common + b"\r\nContent-Length: 0\r\n\r\n"
        if b"\r\nAuthorization:" not in head:
            self.nonces += 1
            challenge = (
                f'WWW-Authenticate: Digest realm="{REALM}", nonce="n{self.nonces:016x}",'
                ' algorithm=MD5, qop="auth"'
            )
            return (
                b"SIP/2.0 401 Unauthorized\r\n" + common + b"\r\n" + challenge.encode()
                + b"\r\nContent-Length: 0\r\n\r\n"
            )  # fmt: skip
        if not self._valid(_header(head, b"Authorization").decode()):
            self.rejected += 1
            return b"SIP/2.0 403 Forbidden\r\n" + common + b"\r\nContent-Length: 0\r\n\r\n"
        self.checked += 1
        contact = _header(head, b"Contact")
        expires = _header(head, b"Expires").split(b":", 1)[1].strip()
        return (
            b"SIP/2.0 200 OK\r\n" + b"\r\n".join((via, from_, to + b";tag=reg", call_id, cseq))
            + b"\r\n" + contact + b";expires=" + expires
            + b"\r\nContent-Length: 0\r\n\r\n"
        )  # fmt: skip

    def _valid(self, line: str) -> bool:
        fields: dict[str, str] = {}
        for part in line.split(":", 1)[1].strip()[len("Digest ") :].split(","):
            key, _, value = part.strip().partition("=")
            fields[key] = value.strip('"')
        user = fields["username"]
        ha1 = self._ha1.get(user)
        if ha1 is None:
            ha1 = self._ha1[user] = _md5(f"{user}:{REALM}:{_password(user)}")
        ha2 = _md5(f"REGISTER:{fields['uri']}")
        expected = _md5(
            f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:{fields['qop']}:{ha2}"
        )
        return fields.get("response") == expected


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class Port:
    """A UDP port that queues what is written for the registrar."""

    def __init__(self, protocol: DatagramProtocol) -> None:
        self.protocol = protocol
        self.outbox: list[bytes] = []
        self.written = 0

    def write(self, data: bytes, addr: Any = None) -> None:
        """Send a datagram (to the registrar)."""
        self.written += 1
        self.outbox.append(data)

    def getHost(self) -> IPv4Address:
        """Where the socket is bound."""
        return IPv4Address("UDP", *LOCAL)

    def stopListening(self) -> None:
        """Close (nothing to close)."""

    def loseConnection(self) -> None:  # noqa: N802 (Twisted's name)
        """Close (nothing to close)."""


class BenchReactor(HeapClock):
    """A manual clock that opens L{Port}s."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[Port] = []

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> Port:
        """A queueing port for ``protocol``."""
        opened = Port(protocol)
        protocol.makeConnection(opened)  # type: ignore[arg-type]
        self.ports.append(opened)
        return opened

    def deliver(self, registrar: Registrar) -> int:
        """Answer everything written, until nothing more is (returns datagrams answered)."""
        answered = 0
        for port in self.ports:
            while port.outbox:
                batch, port.outbox = port.outbox, []
                for data in batch:
                    port.protocol.datagramReceived(registrar.answer(data), PBX)
                    answered += 1
        return answered


def settings(users: int, rate: float, workdir: Path) -> Any:
    """The options of the run, parsed as the command line would be."""
    names = [str(100_000 + i) for i in range(users)]
    users_csv = workdir / "users.csv"
    users_csv.write_text("".join(f"{u};{_password(u)}\n" for u in names))
    options = Options()
    options.parse_strict(
        [
            "--pbx-host", PBX[0], "--sip-port", str(PBX[1]), "--local-ip", LOCAL[0],
            "--users", str(users), "--users-file", str(users_csv), "--register-rate",
            str(rate), "--max-pending", str(users), "--no-progress", "--timeout", "3600",
            "--save-report", str(workdir / "report.json"),
        ]
    )  # fmt: skip
    return options


def run(users: int, rate: float, profiler: cProfile.Profile | None) -> dict[str, Any]:
    """One run; the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        options = settings(users, rate, Path(tmp))
    reactor = BenchReactor()
    registrar = Registrar()
    accounts: list[Account] = options.accounts
    test = LoadTest(options.settings, accounts, reactor, err=io.StringIO())
    calm_collector()  # as the service does before the run
    finished = test.run()
    phase = test.recorder.phase("register")
    began = cpu_began = wall_began = registrar_began = None
    measured: dict[str, float] = {}
    steps = 0
    while not finished.called:
        if began is None and phase.attempted:
            began = steps
            cpu_began, wall_began = time.process_time(), time.perf_counter()
            registrar_began = registrar.cpu
            if profiler is not None:
                profiler.enable()
        reactor.advance(STEP)
        reactor.deliver(registrar)
        steps += 1
        if not measured and phase.succeeded + phase.failed >= users:
            if profiler is not None:
                profiler.disable()
            assert cpu_began is not None and wall_began is not None
            assert registrar_began is not None
            fake = registrar.cpu - registrar_began
            cpu = time.process_time() - cpu_began - fake
            measured = {
                "cpu_s": cpu,
                "wall_s": time.perf_counter() - wall_began - fake,
                "registrar_cpu_s": fake,
                "simulated_s": (steps - (began or 0)) * STEP,
            }
        if steps > 10_000_000:
            raise RuntimeError("the run did not end")
    outcome = finished.result
    unregister = test.recorder.phase("unregister")
    return {
        "users": users,
        "rate": rate,
        "exit_code": outcome.exit_code,
        "registered": phase.succeeded,
        "failed": phase.failed,
        "failures": dict(phase.causes),
        "unregistered": unregister.succeeded,
        "digest_answers_checked": registrar.checked,
        "digest_answers_rejected": registrar.rejected,
        **measured,
        "cpu_us_per_registration": 1e6 * measured["cpu_s"] / users,
        "wall_us_per_registration": 1e6 * measured["wall_s"] / users,
        "registrations_per_cpu_second": users / measured["cpu_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=10_000.0, help="offered /s (simulated)")
    parser.add_argument("--warmup", type=int, default=2_000, help="users of an untimed first run")
    parser.add_argument("--profile", help="write cProfile stats of the measured phase here")
    a = parser.parse_args()
    if a.warmup:
        run(a.warmup, a.rate, None)
    profiler = cProfile.Profile() if a.profile else None
    meter = MachineMeter()
    result = run(a.users, a.rate, profiler)
    load = meter.load()
    result.update(load)
    if not load["valid"]:
        sys.stderr.write(f"loadgen_cpu{invalid_note(result)}\n")
    if profiler is not None:
        profiler.dump_stats(a.profile)
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(25)
        sys.stderr.write(stream.getvalue())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
