"""
Backup and restore-drill benchmark: a realistic data set, backed up under SIP
load and proven with ``twistd warden-drtest``, on SQLite and on PostgreSQL.

For each store:

1. Generate the data set in a temporary directory (never committed): 10,000
   extensions, 1,000,000 call records, and voicemail files (2 GiB by default,
   512 KiB each, every file different).
2. Start ``twistd warden`` on it; measure registration latency with SIPp at a
   steady rate (idle), then again while ``wardenctl backup`` (full) runs.
3. Time a database-only backup (``wardenctl backup --type database``); with
   ``--database-loop``, measure registrations again while database backups run
   back to back (the full backup spends most of its time on voicemail).
4. Run ``twistd -n warden-drtest`` on the full backup and read its report (RTO,
   RPO, step durations).

Each timed phase (the registration runs, the backups, the drill) records the load
of the rest of the machine (L{bench.machine}: all but the bench, its children,
Warden's processes and PostgreSQL's, plus stolen time) and is invalid when that
reached 10% of a core; the p95 ratio and the targets come only from valid phases.

Prints one JSON document on stdout (progress on stderr)::

    python -m bench.dr [--voicemail-mib 2048] [--cdrs 1000000] [--stores sqlite,postgresql]
                       [--database-loop]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task

from bench.machine import MachineMeter, invalid_note, server_pids
from bench.register import warden_processes
from tests.integration.harness import (
    TWISTD,
    WardenProcess,
    run_process,
    run_sipp,
    sipp_register_args,
    wardenctl,
    write_user_files,
)
from tests.integration.sipp_traces import percentile, read_sipp_rtts, read_sipp_stats
from warden.backup.restore import migrate_sqlite_file
from warden.store.credentials import make_extension

if TYPE_CHECKING:
    from warden.testing.servers import PostgreSQLServer

REALM = "warden.test"
FILE_BYTES = 512 * 1024


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"[dr] {message}", file=sys.stderr, flush=True)


def extension_rows(count: int) -> list[tuple[Any, ...]]:
    """Extensions 100000.. with the test passwords of the integration harness."""
    rows = []
    base = make_extension("0", "", REALM, "x")
    for i in range(count):
        number = str(100000 + i)
        e = make_extension(number, f"User {number}", REALM, f"pw-{number}-secret")
        rows.append((e.number, e.name, e.realm, e.ha1_md5, e.ha1_sha256, "", 1, 0))
    del base
    return rows


def cdr_rows(count: int, now: float, first: int, size: int) -> list[tuple[Any, ...]]:
    """``size`` call records from index ``first``, one every 2.5 s back from ``now``."""
    rows = []
    for i in range(first, min(first + size, count)):
        ended = now - i * 2.5
        caller, callee = str(100000 + i % 10000), str(100000 + (i * 7 + 1) % 10000)
        rows.append(
            (f"bench-{i}@dr", caller, "", callee, callee, ended - 95, ended - 90, ended,
             "ANSWERED", "", "caller", "PCMU", '{"a": {}, "b": {}}', "bench")
        )  # fmt: skip
    return rows


_CDR_COLUMNS = (
    "call_id, caller, caller_name, callee, dialled, started_at, answered_at, ended_at,"
    " disposition, hangup_cause, hangup_side, codec, media, node_id"
)


def make_sqlite(path: Path, extensions: int, cdrs: int, now: float) -> None:
    """The SQLite data set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    migrate_sqlite_file(path)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executemany(
        "INSERT INTO extensions (number, name, realm, ha1_md5, ha1_sha256, algorithms,"
        " enabled, qualify) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        extension_rows(extensions),
    )
    marks = ", ".join("?" * 14)
    for first in range(0, cdrs, 100_000):
        connection.executemany(
            f"INSERT INTO call_records ({_CDR_COLUMNS}) VALUES ({marks})",
            cdr_rows(cdrs, now, first, 100_000),
        )
    connection.commit()
    connection.close()


def make_postgresql(url: str, extensions: int, cdrs: int, now: float) -> None:
    """The PostgreSQL data set (the schema was made by Warden at its first start)."""
    import psycopg2
    from psycopg2.extras import execute_values

    from warden.store.url import parse_store_url

    connection = psycopg2.connect(**parse_store_url(url).connect_kwargs(None))
    with connection.cursor() as cursor:
        rows = [(*r[:6], bool(r[6]), bool(r[7])) for r in extension_rows(extensions)]
        execute_values(
            cursor,
            "INSERT INTO extensions (number, name, realm, ha1_md5, ha1_sha256, algorithms,"
            " enabled, qualify) VALUES %s",
            rows,
            page_size=5000,
        )
        for first in range(0, cdrs, 100_000):
            execute_values(
                cursor,
                f"INSERT INTO call_records ({_CDR_COLUMNS}) VALUES %s",
                cdr_rows(cdrs, now, first, 100_000),
                page_size=5000,
            )
    connection.commit()
    connection.close()


def make_voicemail(directory: Path, mib: int) -> int:
    """``mib`` MiB of voicemail files, 512 KiB each, each different; returns the count."""
    block = os.urandom(FILE_BYTES)
    count = mib * 1024 * 1024 // FILE_BYTES
    for i in range(count):
        box = directory / str(100000 + i % 10000)
        box.mkdir(parents=True, exist_ok=True)
        header = i.to_bytes(8, "big") * 8
        (box / f"msg{i:06d}.wav").write_bytes(header + block[len(header) :])
    return count


async def registration_p95(warden: WardenProcess, users_csv: Path, workdir: Path,
                           calls: int, rate: float) -> dict[str, Any]:  # fmt: skip
    """SIPp registrations at ``rate``: success counts and response-time percentiles."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir, prefix="sipp-"))
    result = await run_sipp(
        sipp_register_args(warden.address, users_csv, calls, rate), run_dir, timeout=300
    )
    stats = read_sipp_stats(run_dir)
    rtts = read_sipp_rtts(run_dir)
    return {
        "exit": result.code, "successful": stats.successful, "failed": stats.failed,
        "p50_ms": percentile(rtts, 0.5) if rtts else None,
        "p95_ms": percentile(rtts, 0.95) if rtts else None,
        "p99_ms": percentile(rtts, 0.99) if rtts else None,
        # SIPp's times come in 4 ms ticks; their mean still resolves finer changes.
        "mean_ms": round(sum(rtts) / len(rtts), 2) if rtts else None,
    }  # fmt: skip


async def registrations_during_database_backups(
    warden: WardenProcess, users_csv: Path, workdir: Path, calls: int, rate: float
) -> dict[str, Any]:
    """
    SIPp registrations while database backups run back to back, so that every
    registration meets the database copy (on PostgreSQL: pg_dump and the
    server process streaming rows to it) rather than the voicemail copy.
    """
    stop: list[bool] = []
    durations: list[float] = []
    directory = workdir / "loop-backups"

    async def backups() -> None:
        while not stop:
            result = await wardenctl(
                warden.config_path, "backup", "--type", "database", "--to", str(directory)
            )
            if result.code != 0:
                raise RuntimeError(f"database backup failed: {result.stderr}")
            durations.append(made_in(result.stdout))
            shutil.rmtree(directory, ignore_errors=True)

    running = defer.ensureDeferred(backups())
    try:
        during = await registration_p95(warden, users_csv, workdir, calls, rate)
    finally:
        stop.append(True)
        await running
    return {**during, "backups": len(durations), "backup_seconds": durations}


def made_in(stdout: str) -> float:
    """The backup's own duration from ``wardenctl backup``'s "made in 1.23s" line."""
    return float(stdout.rsplit("made in ", 1)[1].split("s")[0])


async def timed(coroutine: Any) -> tuple[Any, float]:
    """Await and time it (wall clock)."""
    started = time.perf_counter()
    result = await coroutine
    return result, time.perf_counter() - started


async def store_phase(store: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build the data set on ``store``, back it up under load, run the drill."""
    now = time.time()
    settings: dict[str, dict[str, object]] = {"backup": {"directory": str(workdir / "backups")}}
    server: PostgreSQLServer | None = None
    if store == "postgresql":
        from warden.testing.servers import postgresql

        server = postgresql()
        url = server.create_database("warden_bench_dr")
        settings["store"] = {"url": url}
    warden = WardenProcess(workdir / "pbx", settings=settings)
    users, _ = write_user_files(workdir, args.register_users, first=100000)
    log(f"{store}: generating {args.extensions} extensions, {args.cdrs} CDRs")
    started = time.perf_counter()
    if store == "sqlite":
        make_sqlite(warden.database_path, args.extensions, args.cdrs, now)
        await warden.start()
    else:
        await warden.start()
        await wardenctl(warden.config_path, "extension", "list")  # schema in place
        make_postgresql(url, args.extensions, args.cdrs, now)
    log(f"{store}: database ready in {time.perf_counter() - started:.1f}s")
    if not (warden.data_dir / "voicemail").exists():
        vm = make_voicemail(warden.data_dir / "voicemail", args.voicemail_mib)
        log(f"{store}: {vm} voicemail files")

    def own() -> list[int]:
        # A phase's processes besides the bench and the SIPp and wardenctl it reaps.
        database = [] if server is None else server_pids(server)
        return [*warden_processes(warden.pid).values(), *database]

    try:
        calls = int(args.register_rate * args.register_seconds)
        meter = MachineMeter(own)
        idle = await registration_p95(warden, users.sipp_csv, workdir, calls, args.register_rate)
        idle.update(meter.load())
        log(f"{store}: idle registrations {idle}{invalid_note(idle)}")
        meter = MachineMeter(own)
        load = defer.ensureDeferred(
            registration_p95(warden, users.sipp_csv, workdir, calls, args.register_rate)
        )
        full, full_seconds = await timed(wardenctl(warden.config_path, "backup"))
        during = await load
        # One phase: the full backup's figures share the registrations' load.
        during.update(meter.load())
        log(
            f"{store}: full backup {full_seconds:.1f}s; registrations during it {during}"
            + invalid_note(during)
        )
        if full.code != 0:
            raise RuntimeError(f"backup failed: {full.stderr}")
        meter = MachineMeter(own)
        database, database_seconds = await timed(
            wardenctl(warden.config_path, "backup", "--type", "database")
        )
        database_load = meter.load()
        if database.code != 0:
            raise RuntimeError(f"database backup failed: {database.stderr}")
        log(
            f"{store}: database backup {database_seconds:.1f}s, the rest of the machine"
            f" {database_load['other_cpu_pct']}%, steal {database_load['steal_pct']}%"
            + invalid_note(database_load)
        )
        looped = None
        if args.database_loop:
            meter = MachineMeter(own)
            looped = await registrations_during_database_backups(
                warden, users.sipp_csv, workdir, calls, args.register_rate
            )
            looped.update(meter.load())
            log(
                f"{store}: registrations during back-to-back database backups {looped}"
                + invalid_note(looped)
            )
        report_path = workdir / f"drtest-{store}.json"
        meter = MachineMeter(own)
        drill, drill_seconds = await timed(
            run_process(
                [*TWISTD, "-n", "--pidfile=", f"--logfile={workdir / 'drtest.log'}",
                 "warden-drtest", "--config", str(warden.config_path),
                 "--backup", full.stdout.split()[1], "--target-rto", "60",
                 "--save-report", str(report_path)],
                workdir, 900,
            )
        )  # fmt: skip
        drill_load = meter.load()
        report = json.loads(report_path.read_text())
        rto = report["rto_seconds"]
        log(
            f"{store}: drill exit {drill.code} in {drill_seconds:.1f}s: RTO {rto}, the rest of"
            f" the machine {drill_load['other_cpu_pct']}%, steal {drill_load['steal_pct']}%"
            + invalid_note(drill_load)
        )
        size = sum(
            f.stat().st_size for f in Path(full.stdout.split()[1]).rglob("*") if f.is_file()
        )
    finally:
        await warden.stop(60)
    ratio = (
        during["p95_ms"] / idle["p95_ms"]
        if during["p95_ms"] is not None and idle["p95_ms"] and idle["valid"] and during["valid"]
        else None
    )
    phases = [idle, during, database_load, drill_load] + ([looped] if looped else [])
    # A target is None when its phase was invalid.
    rto_ok = report["rto_seconds"] is not None and report["rto_seconds"] < 60
    database_ok = made_in(database.stdout) < 30
    p95_ok = ratio is not None and ratio <= 2.0
    return {
        "store": store,
        "full_backup_seconds": made_in(full.stdout),
        "full_backup_wall_seconds": round(full_seconds, 2),
        "full_backup_bytes": size,
        "database_backup_seconds": made_in(database.stdout),
        "database_backup_wall_seconds": round(database_seconds, 2),
        "database_backup_load": database_load,
        "registration_idle": idle,
        "registration_during_backup": during,
        "p95_ratio": ratio,
        "registration_during_database_backups": looped,
        "drill_exit": drill.code,
        "drill_wall_seconds": round(drill_seconds, 2),
        "drill_load": drill_load,
        "rto_seconds": report["rto_seconds"],
        "rpo_seconds": report["rpo_seconds"],
        "steps": {s["name"]: s["seconds"] for s in report["steps"]},
        "invalid_steps": sum(not phase["valid"] for phase in phases),
        "targets_met": {
            "rto_under_60s": rto_ok if drill_load["valid"] else None,
            "database_backup_under_30s": database_ok if database_load["valid"] else None,
            "p95_within_2x_idle": p95_ok if idle["valid"] and during["valid"] else None,
        },
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="bench.dr", description=__doc__)
    parser.add_argument("--extensions", type=int, default=10_000)
    parser.add_argument("--cdrs", type=int, default=1_000_000)
    parser.add_argument("--voicemail-mib", type=int, default=2048)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--register-users", type=int, default=1000)
    parser.add_argument("--register-rate", type=float, default=100.0)
    parser.add_argument("--register-seconds", type=float, default=20.0)
    parser.add_argument("--workdir", default=None, help="default: a new directory in $TMPDIR")
    parser.add_argument(
        "--database-loop",
        action="store_true",
        help="also measure registrations while database backups run back to back",
    )
    return parser.parse_args(argv)


async def main(reactor: Any, argv: Sequence[str]) -> None:
    """Run every store's phase and print the JSON results."""
    args = parse_args(argv)
    free = shutil.disk_usage(tempfile.gettempdir()).free
    need = args.voicemail_mib * 1024 * 1024 * 4
    if free < need:
        raise SystemExit(
            f"need {need >> 30} GiB free in {tempfile.gettempdir()}, have {free >> 30}"
        )
    results = []
    for store in args.stores.split(","):
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"warden-bench-dr-{store}-"))
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            results.append(await store_phase(store, args, workdir))
        finally:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    document = {
        "benchmark": "dr",
        "nproc": os.cpu_count(),
        "results": results,
        "invalid_steps": sum(result["invalid_steps"] for result in results),
    }
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
