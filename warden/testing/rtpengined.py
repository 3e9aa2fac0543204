"""
A throwaway rtpengine daemon for tests (ADR 0025).

L{RtpengineServer} runs Debian's ``rtpengine`` in userspace (``--table=-1``, no
kernel module), in the foreground, without any configuration file (so nothing
of ``/etc/rtpengine`` nor a system daemon's ``localhost:2223`` is used), with
its ng control socket on a free UDP port of 127.0.0.1 and media on the given
port range. ``start()`` returns once it answers an ng ``ping``; ``stop()`` ends
it. A missing binary skips the test locally and fails it under ``CI=true``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from warden.rtp import bencode
from warden.testing.servers import LOCALHOST, ChildServer, ServerError, _missing

__all__ = ["RtpengineServer", "free_udp_port"]

# Readiness: up to _ATTEMPTS pings, each waiting _INTERVAL for the pong.
_ATTEMPTS = 200
_INTERVAL = 0.05


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


class RtpengineServer(ChildServer):
    """
    One rtpengine on 127.0.0.1.

    Args:
        port_range: the lowest and highest media port, inclusive.
        timeout: rtpengine's own ``--timeout`` (seconds without media before it
            drops a call).

    Attributes:
        ng: the ng control address (``127.0.0.1``, a free UDP port).
        directory: its temporary directory (holds ``rtpengine.log``).
    """

    def __init__(self, port_range: tuple[int, int], timeout: int = 60) -> None:
        found = shutil.which("rtpengine")
        if found is None:
            raise _missing("rtpengine", "rtpengine-daemon")
        self._binary = found
        self.port_range = port_range
        self.timeout = timeout
        self.ng = (LOCALHOST, free_udp_port())
        self.directory = Path(tempfile.mkdtemp(prefix="warden-rtpengine-"))
        self.log = self.directory / "rtpengine.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start rtpengine; returns when it answers ``ping``."""
        if self._process is not None:
            return
        low, high = self.port_range
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(
                [
                    self._binary,
                    "--config-file=none",
                    "--table=-1",
                    "--foreground",
                    "--log-stderr",
                    "--log-level=6",
                    f"--interface={LOCALHOST}",
                    f"--listen-ng={LOCALHOST}:{self.ng[1]}",
                    f"--port-min={low}",
                    f"--port-max={high}",
                    f"--timeout={self.timeout}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        for _ in range(_ATTEMPTS):
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise ServerError(f"rtpengine exited with {code} (log: {self.log})")
            if self.ping():
                return
        self.stop()
        raise ServerError(f"rtpengine did not answer within {_ATTEMPTS} pings (log: {self.log})")

    @property
    def pid(self) -> int | None:
        """rtpengine's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def ping(self) -> bool:
        """Whether rtpengine answers an ng ``ping`` within a short wait."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(_INTERVAL)
            try:
                sock.sendto(b"ready " + bencode.encode({"command": "ping"}), self.ng)
                reply = sock.recv(256)
            except OSError:  # refused (not bound yet) or timed out
                time.sleep(_INTERVAL)
                return False
        return reply.startswith(b"ready ") and b"pong" in reply
