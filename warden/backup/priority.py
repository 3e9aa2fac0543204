"""
Backup work yields to SIP handling: the CPU and I/O priority of the PostgreSQL
server processes that serve a backup.

``pg_dump`` runs at L{BACKUP_NICENESS} (it inherits the backup thread's
niceness), but most of a dump's CPU is spent by the server process at the other
end of its connection, which formats every row for ``COPY``. When that server
runs on this host and we may (same user, or root), L{lower_server_process}
lowers that process's CPU priority (``setpriority``) and puts it in the idle
I/O class (``ionice -c3``). A backend serves exactly one connection and exits
with it, so nothing needs to be undone after the dump.

A process is only touched once it is proven to be the right one: it must be
named ``postgres`` and must have started when PostgreSQL says that backend
started (``pg_stat_activity.backend_start``), so a server on another host (or in
another PID namespace) whose backend happens to share a PID with a local process
is never confused with it. Anything not permitted or not found is skipped
silently: a backup never fails for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from twisted.logger import Logger

#: The CPU niceness of backup work: SIP handling always comes first.
BACKUP_NICENESS = 10
#: How far a process's start may be from the backend_start PostgreSQL reports
#: (/proc has whole-second boot time and clock-tick start times).
_START_TOLERANCE = 2.0


def process_started_at(pid: int, proc: str = "/proc") -> tuple[str, float] | None:
    """
    The name (``comm``) and start time (seconds since the epoch) of local
    process ``pid``, or None when it does not exist or cannot be read.
    """
    try:
        with open(f"{proc}/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
        with open(f"{proc}/stat", encoding="ascii") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    name = stat[stat.find("(") + 1 : stat.rfind(")")]
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        ticks = int(fields[19])  # field 22 of proc(5), counted from field 3
    except (IndexError, ValueError):
        return None
    return name, boot + ticks / os.sysconf("SC_CLK_TCK")


def lower_server_process(
    pid: int,
    started_at: float,
    niceness: int = BACKUP_NICENESS,
    ionice: str | None = None,
    name: str = "postgres",
    proc: str = "/proc",
) -> str | None:
    """
    Lower the CPU priority of local process ``pid`` to ``niceness`` and its I/O
    priority to the idle class, if it is the server process PostgreSQL
    describes (``name``, started at ``started_at``) and we are allowed to.

    Args:
        ionice: the ``ionice`` program (None: the CPU priority only).

    Returns:
        What was done (``"nice 10, CPU idle, I/O idle"``), or None when nothing was:
        not a local process, not that process, or not permitted.
    """
    found = process_started_at(pid, proc)
    if found is None or found[0] != name or abs(found[1] - started_at) > _START_TOLERANCE:
        return None
    done = []
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < niceness:
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
        done.append(f"nice {os.getpriority(os.PRIO_PROCESS, pid)}")
    except OSError:
        pass
    try:
        # The idle scheduling class: the backend only runs when nothing else
        # wants the core (root, or the postgres user itself, may do this).
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        done.append("CPU idle")
    except (OSError, AttributeError):
        pass
    if ionice is not None:
        try:
            result = subprocess.run(
                [ionice, "-c3", "-p", str(pid)], capture_output=True, check=False, timeout=5
            )
        except (OSError, subprocess.TimeoutExpired):
            result = None
        if result is not None and result.returncode == 0:
            done.append("I/O idle")
    return ", ".join(done) or None


class ServerPriority:
    """
    Lowers the priority of the server processes serving a backup (see the module
    docstring) and logs what it did, once per Warden process.

    Args:
        niceness: the CPU niceness to give them.
        ionice: the ``ionice`` program; found on ``$PATH`` unless given ("" for none).
    """

    log = Logger()
    _reported = False

    def __init__(self, niceness: int = BACKUP_NICENESS, ionice: str | None = None) -> None:
        self.niceness = niceness
        self.ionice = shutil.which("ionice") if ionice is None else (ionice or None)

    def lower(self, pid: int, started_at: float, role: str) -> str | None:
        """
        Lower server process ``pid`` (``role`` names it in the log); returns
        what was done, or None.
        """
        done = lower_server_process(pid, started_at, self.niceness, self.ionice)
        if done is not None and not ServerPriority._reported:
            ServerPriority._reported = True
            self.log.info(
                "Backups lower the priority of the local PostgreSQL server processes that"
                " serve them (here {role}, pid {pid}: {done})",
                role=role,
                pid=pid,
                done=done,
            )
        return done
