"""
The restore drill behind ``twistd warden-drtest``.

Steps (each timed and recorded in the report):

1. ``backup`` (only with ``--create-backup``): take a fresh backup.
2. ``open``: find the backup (``latest`` in the backup directory, or a path),
   unpack it into scratch when it is encrypted.
3. ``verify-backup``: the manifest, every size and SHA-256, the schema version.
4. ``restore-database`` / ``restore-files`` / ``restore-config``: into a
   scratch directory (SQLite) or a scratch PostgreSQL database; call records
   that were pending in the CDR spool go into the scratch data directory's
   spool. The RTO clock starts here.
5. ``verify-restore``: schema version, row counts equal to the manifest (the
   database copy alone), SQLite's integrity and foreign-key checks, the
   restored spool (its hash and as many records as the manifest says), every
   file present with its hash; in a full drill, every voicemail message the
   restored database (SQLite or PostgreSQL) lists plays (its restored WAV reads
   as the plugin's audio and lasts the recorded duration); a restored
   configuration must load.
6. ``start-scratch-warden``: ``twistd warden`` on the restored data, on free
   loopback ports, without the live registrations (so no real phone rings).
   ``replay-spool`` (only when records were pending): the scratch Warden has
   stored every spooled record in its database.
7. ``prove-call``: two extensions of the backup register with their stored
   credentials and one calls the other. The RTO clock stops at the answered
   call.
8. ``cleanup``: stop the scratch Warden, drop the scratch database and delete
   the scratch directory (unless ``--keep-scratch``).

RPO is the backup's age at the end of the drill: the window of data a disaster
now would lose.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import attrs
from twisted.internet import task, threads

from warden.backup import restore
from warden.backup.backup import BackupSources, create_backup, latest_backup
from warden.backup.database import (
    PostgresTarget,
    SQLiteTarget,
    Target,
    check_sqlite,
    inspect_sqlite,
    newest_schema_version,
    sqlite_schema_version,
    stored_call_ids,
    voicemail_messages,
)
from warden.backup.manifest import BackupError, Manifest, sha256_file
from warden.backup.signing import ManifestKeys, signing_key_path
from warden.backup.spool import read_spool_copy, restore_spool
from warden.config import WardenConfig, load_config
from warden.errors import ConfigError
from warden.store.spool import default_spool_path

from .probe import Identity, ProbeFailed, prove_call
from .report import Report, Step
from .scratch import ScratchWarden

TEST_TYPES = ("full", "database-only", "config-only", "files-only")
_NEEDS = {
    "full": ("full",),
    "database-only": ("full", "database"),
    "config-only": ("full", "config"),
    "files-only": ("full", "files"),
}
_T = TypeVar("_T")


@attrs.frozen
class DrillSettings:
    """What ``twistd warden-drtest`` was asked to do (see its ``--help``)."""

    test_type: str
    backup: str
    backup_dir: Path
    sources: BackupSources
    create_backup: bool = False
    dry_run: bool = False
    target_rto: float = 900.0
    target_rpo: float = 300.0
    report_path: str | None = None
    keep_scratch: bool = False
    key: bytes | None = None
    scratch_root: str | None = None
    signing_key_file: str = ""

    @property
    def keys(self) -> ManifestKeys:
        """The keys manifests are authenticated with (see L{signing})."""
        return ManifestKeys(
            self.key, signing_key_path(self.signing_key_file, self.sources.data_dir)
        )


class _StepFailed(Exception):
    pass


class Drill:
    """
    One run of the drill.

    Args:
        reactor: the clock, threads and processes.
        settings: what to do.
        out: where the plan and summary go.
    """

    def __init__(self, reactor: Any, settings: DrillSettings, out: TextIO) -> None:
        self._reactor = reactor
        self.settings = settings
        self._out = out
        self.report = Report(
            settings.test_type, settings.target_rto, settings.target_rpo,
            reactor.seconds(), dry_run=settings.dry_run,
        )  # fmt: skip
        self._scratch: Path | None = None
        self._warden: ScratchWarden | None = None
        self._pg_scratch: str | None = None
        self._restore_started: float | None = None
        self._spooled: list[str] = []

    def _thread(self, f: Callable[..., _T], *args: Any) -> Awaitable[_T]:
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    async def _step(self, name: str, action: Callable[[], Awaitable[str]]) -> None:
        started = self._reactor.seconds()
        try:
            detail = await action()
        except (BackupError, ProbeFailed, ConfigError, OSError, sqlite3.Error) as e:
            elapsed = self._reactor.seconds() - started
            self.report.steps.append(Step(name, False, elapsed, str(e)))
            self.report.fail(f"{name}: {e}")
            raise _StepFailed() from None
        self.report.steps.append(Step(name, True, self._reactor.seconds() - started, detail))

    # -- the drill -------------------------------------------------------------------

    async def run(self) -> Report:
        """Run the drill (or print the plan); returns the finished report."""
        if self.settings.dry_run:
            self._plan()
        else:
            try:
                await self._drill()
            except _StepFailed:
                pass
            finally:
                await self._cleanup()
            self.report.judge()
        self.report.finished_at = self._reactor.seconds()
        if self.settings.report_path and not self.settings.dry_run:
            self.report.save(self.settings.report_path)
        print(self.report.summary(), file=self._out)
        return self.report

    def _plan(self) -> None:
        s = self.settings
        print(f"warden-drtest plan ({s.test_type}, dry run: nothing is touched)", file=self._out)
        if s.create_backup:
            print(
                f"  1. take a {_NEEDS[s.test_type][0]} backup into {s.backup_dir}", file=self._out
            )
            self.report.backup = "(a new backup)"
        else:
            try:
                path = (
                    latest_backup(s.backup_dir, s.keys) if s.backup == "latest" else Path(s.backup)
                )
                if not path.exists():
                    raise BackupError(f"{path}: no such backup")
            except BackupError as e:
                self.report.fail(str(e))
                print(f"  problem: {e}", file=self._out)
                return
            self.report.backup = str(path)
            print(f"  1. use the backup {path}", file=self._out)
        steps = ["verify the manifest and every SHA-256"]
        if s.test_type in ("full", "database-only"):
            steps.append(
                f"restore the database into scratch ({s.sources.database.dialect}) and the"
                " call records pending in the CDR spool into the scratch data directory"
            )
        if s.test_type in ("full", "files-only"):
            steps.append("restore voicemail and recordings into a scratch directory")
        if s.test_type in ("full", "config-only"):
            steps.append("restore the configuration and load it")
        steps.append("verify schema version, row counts, foreign keys and file hashes")
        if s.test_type != "files-only":
            steps.append("start a scratch Warden on free loopback ports")
        if s.test_type in ("full", "database-only"):
            steps.append("register two extensions with their stored credentials and call")
        steps.append(
            f"compare RTO to {s.target_rto:g}s and RPO to {s.target_rpo:g}s, then clean up"
        )
        for number, text in enumerate(steps, start=2):
            print(f"  {number}. {text}", file=self._out)

    async def _drill(self) -> None:
        s = self.settings
        self._scratch = Path(tempfile.mkdtemp(prefix="warden-drtest-", dir=s.scratch_root))
        path: list[Path] = []
        if s.create_backup:

            async def take() -> str:
                kind = _NEEDS[s.test_type][0]
                made = await self._thread(
                    create_backup, s.sources, kind, s.backup_dir, self._reactor.seconds(), s.key
                )
                path.append(made)
                return str(made)

            await self._step("backup", take)
        root: list[tuple[Path, bytes]] = []

        async def open_it() -> str:
            if not path:
                path.append(
                    await self._thread(latest_backup, s.backup_dir, s.keys)
                    if s.backup == "latest"
                    else Path(s.backup)
                )
            self.report.backup = str(path[0])
            assert self._scratch is not None
            root.append(await self._thread(restore.open_backup, path[0], s.keys, self._scratch))
            return str(path[0])

        await self._step("open", open_it)
        manifest = await self._verify_backup(*root[0])
        self._restore_started = self._reactor.seconds()
        data_dir = self._scratch / "data"
        data_dir.mkdir()
        target: Target | None = None
        backup = root[0][0]
        if s.test_type in ("full", "database-only"):
            target = await self._restore_database(backup, manifest, data_dir)
        if s.test_type in ("full", "files-only"):
            await self._step(
                "restore-files", lambda: self._restore_files(backup, manifest, data_dir)
            )
        config: list[WardenConfig] = []
        if s.test_type in ("full", "config-only"):
            await self._step(
                "restore-config", lambda: self._restore_config(backup, manifest, config)
            )
        await self._step(
            "verify-restore", lambda: self._verify_restore(manifest, target, data_dir)
        )
        if s.test_type != "files-only":
            await self._serve(target, data_dir, config[0] if config else None)
        finished = self._reactor.seconds()
        if self.report.rto is None:
            self.report.rto = finished - self._restore_started
        self.report.rpo = finished - manifest.created_at

    async def _verify_backup(self, root: Path, key: bytes) -> Manifest:
        found: list[Manifest] = []

        async def verify() -> str:
            manifest, problems = await self._thread(restore.check_backup, root, key)
            if manifest is not None:
                self.report.backup_created_at = manifest.created_at
                self.report.newest_data_at = manifest.newest_data_at
                if manifest.type not in _NEEDS[self.settings.test_type]:
                    problems.append(
                        f"a {manifest.type} backup cannot serve a {self.settings.test_type} test"
                    )
            if problems:
                raise BackupError("; ".join(problems[:10]))
            assert manifest is not None
            found.append(manifest)
            return f"{len(manifest.files)} files, schema {manifest.schema_version}"

        await self._step("verify-backup", verify)
        return found[0]

    async def _restore_database(self, root: Path, manifest: Manifest, data_dir: Path) -> Target:
        live = self.settings.sources.database
        target: Target
        if isinstance(live, PostgresTarget):
            from warden.backup import postgres

            self._pg_scratch = await self._thread(postgres.create_scratch, live.url)
            target = PostgresTarget(self._pg_scratch)
        else:
            target = SQLiteTarget(str(data_dir / "warden.db"))

        async def run() -> str:
            applied = await self._thread(restore.restore_database, root, manifest, target, False)
            spooled = await self._thread(restore_spool, root, manifest, data_dir)
            return (
                f"into {target.describe()}"
                + (f", migrated {', '.join(applied)}" if applied else "")
                + (f", {spooled} pending call records into the CDR spool" if spooled else "")
            )

        await self._step("restore-database", run)
        return target

    async def _restore_files(self, root: Path, manifest: Manifest, data_dir: Path) -> str:
        count = await self._thread(restore.restore_files, root, manifest, data_dir, False)
        return f"{count} files"

    async def _restore_config(
        self, root: Path, manifest: Manifest, config: list[WardenConfig]
    ) -> str:
        assert self._scratch is not None
        written = await self._thread(
            restore.restore_config, root, manifest, self._scratch / "config"
        )
        if not written:
            raise BackupError("the backup holds no configuration file")
        config.append(load_config(str(written[0])))
        excluded = (manifest.config or {}).get("excluded_keys") or []
        note = f" ({len(excluded)} private keys were excluded)" if excluded else ""
        return f"{len(written)} files; {written[0].name} loads{note}"

    async def _verify_restore(
        self, manifest: Manifest, target: Target | None, data_dir: Path
    ) -> str:
        problems: list[str] = []
        details = []
        if target is not None:
            problems += await self._thread(_verify_database, manifest, target)
            details.append("database ok")
            spool_problems, self._spooled = await self._thread(
                _verify_restored_spool, manifest, data_dir
            )
            problems += spool_problems
            if self._spooled:
                details.append(f"{len(self._spooled)} pending call records in the CDR spool")
        if self.settings.test_type in ("full", "files-only"):
            problems += await self._thread(_verify_restored_files, manifest, data_dir)
            count = sum(1 for f in manifest.files if f.path.startswith("files/"))
            details.append(f"{count} files match")
        if self.settings.test_type == "full" and target is not None:
            played, voicemail_problems = await self._thread(
                verify_voicemail_plays, target, data_dir
            )
            problems += voicemail_problems
            if played:
                details.append(f"{played} voicemail messages play")
        if problems:
            raise BackupError("; ".join(problems[:10]))
        return ", ".join(details)

    async def _serve(
        self, target: Target | None, data_dir: Path, config: WardenConfig | None
    ) -> None:
        assert self._scratch is not None
        sections: dict[str, dict[str, object]] = {"server": {"data_dir": str(data_dir)}}
        identities: list[Identity] = []
        if config is not None:
            sections["server"]["realm"] = config.realm
            sections["registrar"] = {"digest_algorithms": list(config.registrar.digest_algorithms)}
        if target is not None:
            identities = await self._thread(_prepare_scratch_database, target)
            if identities:
                sections["server"]["realm"] = identities[0].realm
        if isinstance(target, PostgresTarget):
            sections["store"] = {"url": target.url}
        warden = self._warden = ScratchWarden(self._reactor, self._scratch, sections)

        async def start() -> str:
            await warden.start()
            return f"listening on {warden.address[0]}:{warden.address[1]}"

        await self._step("start-scratch-warden", start)
        if target is None:
            return
        if self._spooled:
            await self._step("replay-spool", lambda: self._replayed(target))

        async def call() -> str:
            if len(identities) < 2:
                raise ProbeFailed(
                    "the backup has fewer than two enabled extensions; no call can prove it"
                )
            caller, callee = identities[0], identities[1]
            try:
                await prove_call(self._reactor, warden.address, caller, callee)
            except ProbeFailed as e:
                raise ProbeFailed(
                    f"{e}\nscratch Warden log (end):\n{warden.log_tail(10)}"
                ) from None
            assert self._restore_started is not None
            self.report.rto = self._reactor.seconds() - self._restore_started
            return f"{caller.number} called {callee.number}: answered and hung up"

        await self._step("prove-call", call)

    async def _replayed(self, target: Target, timeout: float = 15.0) -> str:
        """Wait until the scratch Warden has stored every spooled call record."""
        missing = set(self._spooled)
        for _ in range(int(timeout / 0.25)):
            missing -= await self._thread(_stored_call_ids, target, sorted(missing))
            if not missing:
                return f"{len(self._spooled)} spooled call records are in the database"
            await task.deferLater(self._reactor, 0.25, lambda: None)
        shown = ", ".join(sorted(missing)[:5])
        count = len(missing)
        raise BackupError(f"{count} spooled call records not stored in {timeout:g}s: {shown}")

    async def _cleanup(self) -> None:
        started = self._reactor.seconds()
        notes = []
        if self._warden is not None:
            await self._warden.stop()
        if self._pg_scratch is not None and self.settings.keep_scratch:
            notes.append(f"scratch database kept: {self._pg_scratch}")
        elif self._pg_scratch is not None:
            from warden.backup import postgres

            try:
                await self._thread(postgres.drop_scratch, self._pg_scratch)
            except BackupError as e:
                self.report.fail(f"cleanup: {e}")
        if self._scratch is not None:
            if self.settings.keep_scratch:
                notes.append(f"scratch kept in {self._scratch}")
            else:
                await self._thread(shutil.rmtree, self._scratch, True)
        self.report.steps.append(
            Step("cleanup", True, self._reactor.seconds() - started, "; ".join(notes))
        )


def _verify_database(manifest: Manifest, target: Target) -> list[str]:
    """Compare the restored database with the manifest."""
    assert manifest.database is not None
    if isinstance(target, PostgresTarget):
        from warden.backup import postgres

        info, version, problems = postgres.inspect(target.url)
        newest = newest_schema_version("postgresql")
    else:
        info = inspect_sqlite(target.path)
        version = sqlite_schema_version(target.path)
        problems = check_sqlite(target.path)
        newest = newest_schema_version("sqlite")
    if version != newest:
        problems.append(f"schema version {version} after restore, expected {newest}")
    migrated = manifest.schema_version != version
    for table, count in manifest.database.row_counts.items():
        if migrated and table == "schema_version":
            continue
        restored = info.row_counts.get(table)
        if restored != count:
            problems.append(f"table {table}: {restored} rows restored, the manifest says {count}")
    return problems


def _verify_restored_spool(manifest: Manifest, data_dir: Path) -> tuple[list[str], list[str]]:
    """
    Compare the restored CDR spool with the backup's copy; returns the problems
    and the call_ids of the records it holds.
    """
    assert manifest.database is not None
    spool = manifest.database.spool
    if spool.file is None:
        return [], []
    path = Path(default_spool_path(str(data_dir)))
    if not path.is_file():
        return [f"{spool.file}: not restored into {path}"], []
    expected = {f.path: f.sha256 for f in manifest.files}.get(spool.file)
    problems = []
    if sha256_file(path)[0] != expected:
        problems.append(f"{spool.file}: restored with another SHA-256")
    records, unreadable = read_spool_copy(path)
    problems += [f"{path}: {problem}" for problem in unreadable]
    if len(records) != spool.records:
        problems.append(
            f"{path}: {len(records)} pending call records restored, the manifest says"
            f" {spool.records}"
        )
    return problems, [record.call_id for record in records]


def _stored_call_ids(target: Target, call_ids: list[str]) -> set[str]:
    if isinstance(target, PostgresTarget):
        from warden.backup import postgres

        return postgres.stored_call_ids(target.url, call_ids)
    return stored_call_ids(target.path, call_ids)


def _verify_restored_files(manifest: Manifest, data_dir: Path) -> list[str]:
    problems = []
    for entry in manifest.files:
        if not entry.path.startswith("files/"):
            continue
        path = data_dir / entry.path.removeprefix("files/")
        if not path.is_file():
            problems.append(f"{entry.path}: not restored")
        elif sha256_file(path)[0] != entry.sha256:
            problems.append(f"{entry.path}: restored with another SHA-256")
    return problems


def verify_voicemail_plays(target: Target, data_dir: Path) -> tuple[int, list[str]]:
    """
    Every voicemail message the restored database (SQLite or PostgreSQL) lists
    must play: its WAV file under ``<data_dir>/voicemail`` is restored, reads as
    the 8 kHz audio the voicemail plugin plays, and lasts the recorded duration.
    Returns the messages that play and the problems found.

    Raises:
        BackupError: the database could not be read.
    """
    from warden.features.voicemail import VoicemailAudio
    from warden.rtp.g711 import WavError, read_wav

    if isinstance(target, PostgresTarget):
        from warden.backup import postgres

        rows = postgres.voicemail_messages(target.url)
    else:
        rows = voicemail_messages(target.path)
    audio = VoicemailAudio(data_dir / "voicemail")
    played, problems = 0, []
    for message_id, name, duration in rows:
        try:
            pcm = read_wav(audio.path(name).read_bytes())
        except (OSError, ValueError, WavError) as e:
            problems.append(f"voicemail {message_id}: does not play ({e})")
            continue
        seconds = len(pcm) / 16000
        if abs(seconds - duration) > 0.1:
            problems.append(f"voicemail {message_id}: {seconds:.2f} s of audio, not {duration} s")
            continue
        played += 1
    return played, problems


def _prepare_scratch_database(target: Target) -> list[Identity]:
    """
    Forget the live registrations and calls in the scratch copy (the scratch
    Warden must never reach a real phone), and return the first two enabled
    extensions' credentials.
    """
    if isinstance(target, PostgresTarget):
        from warden.backup import postgres

        return [identity_of(row) for row in postgres.prepare_scratch(target.url)]
    connection = sqlite3.connect(target.path)
    try:
        connection.execute("DELETE FROM bindings")
        connection.execute("DELETE FROM live_calls")
        connection.commit()
        rows = connection.execute(
            "SELECT number, realm, ha1_md5, ha1_sha256 FROM extensions WHERE enabled = 1"
            " ORDER BY length(number), number LIMIT 2"
        ).fetchall()
    finally:
        connection.close()
    return [identity_of(row) for row in rows]


def identity_of(row: tuple[Any, ...]) -> Identity:
    """An L{Identity} from ``(number, realm, ha1_md5, ha1_sha256)``."""
    number, realm, md5, sha256 = row
    return Identity(str(number), str(realm), {"MD5": str(md5), "SHA-256": str(sha256)})
