"""
Voicemail under load: callers leaving messages at once while other calls are
relayed, and whether every message was recorded whole.

Run from the repository root (or through ``bench/voicemail.sh``)::

    python -m bench.voicemail            # 50 callers x 30 s messages + 200 relayed calls
    python -m bench.voicemail --quick    # 5 callers x 5 s + 10 relayed calls (smoke test)
    python -m bench.voicemail --callers 20 --message-seconds 10 --relayed 100

On 127.0.0.1, with Warden's default configuration (``twistd warden`` on a fresh
data directory, SQLite store, built-in relay, voicemail on; the test harness's
loopback addresses and free ports only):

- **Relayed calls.** As ``bench/calls.py --mode media``: a caller and a callee
  extension, a SIPp UAS registered as the callee that echoes RTP, and a SIPp UAC
  (``call_uac_media.xml``) setting up ``--relayed`` calls at ``--ramp-rate`` per
  second, each playing 20 ms G.711 A-law packets for as long as it is held.
  Each call is held until well after the last message ends.
- **Messages.** Once every relayed call is up, ``--callers`` more extensions
  call as many mailboxes at once (extensions nobody registered: Warden answers
  with the greeting and the beep). Each caller (``voicemail_uac.xml``) waits 9 s
  for the greeting and beep, sends ``--message-seconds`` of a 1 kHz tone (from
  the WAV file ``message.wav``, as a pcap of 20 ms A-law packets) and hangs up,
  which ends the recording.

Each stored message is read from the voicemail store (``voicemail_messages`` in
``data/warden.db``) and its audio from the data directory
(``data/voicemail/<mailbox>/<id>.wav``). Per message: the duration stored, the
length of the WAV file and its *audible* length (the 20 ms frames holding the
tone: a frame lost on the way is silence in the recording, and a late one lands
where it belongs), the frames lost (sent minus audible) and the errors of the
stored and audible durations against what was sent. The message target is met
when every caller's message is there and both errors are within 1%.

While every message is being recorded (from the last caller's first packet to
just before the first BYE) the step measures Warden's CPU, the SIPp processes'
CPU and what everything else on the machine used (``/proc/stat`` busy time
minus those processes, ``bench.calls.CpuMeter``). The step is *valid* only when
everything else stayed under ``--max-other-pct`` of one core
(``bench.compare.quiet_enough``); before starting, the script waits up to
``--quiet-wait`` seconds for a quiet machine. A throughput or CPU figure from an
invalid step must not be published; the duration check does not depend on load
as long as nothing was lost.

Progress goes to stderr; the result is one JSON document on stdout, whose
``verdict`` says in one line what happened. CPU is user + system time over wall
time, 100% = one core.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, task, threads

from bench.calls import (
    PCAP_TAIL,
    PTIME,
    SCENARIOS,
    CpuMeter,
    Rig,
    _read_only,
    attributed_loss,
    dispositions,
    max_rowid,
    media_summary,
    wait_for_records,
    write_rtp_pcap,
)
from bench.compare import wait_quiet
from bench.machine import MAX_OTHER_PCT, quiet_enough
from bench.register import failure_events, log, start_run
from tests.integration.clients import pause, poll, real_reactor
from tests.integration.harness import (
    Users,
    free_media_port,
    free_port,
    provision,
    sipp_command,
    spawn,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_stats
from warden.rtp import g711

#: The issue's figures: callers, message length, relayed calls, duration error.
TARGET = {"callers": 50, "message_seconds": 30.0, "relayed": 200, "duration_error_pct": 1.0}
QUICK = {"callers": 5, "message_seconds": 5.0, "relayed": 10}
#: What voicemail_uac.xml waits after the answer before the message (its first pause).
GREETING_WAIT = 9.0
#: The pause after the message's last packet before the BYE.
MESSAGE_TAIL = 0.5
TONE_HZ = 1000.0
#: Mean absolute amplitude above which a 20 ms frame is audible (the voicemail
#: plugin's speech level; the tone is about 5,000).
AUDIBLE_LEVEL = 500.0
FRAME_BYTES = 2 * 160
CALLERS_FROM = 4000


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.voicemail", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 callers x 5 s + 10 calls")
    parser.add_argument("--callers", type=int, help="simultaneous callers (default 50)")
    parser.add_argument("--message-seconds", type=float, help="message length (default 30)")
    parser.add_argument("--relayed", type=int, help="relayed calls meanwhile (default 200)")
    parser.add_argument("--ramp-rate", type=float, default=50.0, help="set-up rate /s")
    parser.add_argument(
        "--max-other-pct", type=float, default=MAX_OTHER_PCT,
        help="the step is valid when everything else used less (%% of one core)",
    )  # fmt: skip
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0,
        help="seconds to wait for a quiet machine before starting",
    )  # fmt: skip
    parser.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else TARGET
    for name in ("callers", "message_seconds", "relayed"):
        if getattr(args, name) is None:
            setattr(args, name, sizes[name])
    if args.callers < 1 or args.relayed < 0 or args.ramp_rate <= 0:
        parser.error("--callers must be >= 1, --relayed >= 0, --ramp-rate > 0")
    if not 2.0 <= args.message_seconds <= 170.0:
        parser.error("--message-seconds must be 2 to 170 (voicemail keeps 180 s at most)")
    return args


# -- measurements -------------------------------------------------------------------


def audible_frames(pcm: bytes) -> int:
    """The 20 ms frames of 16-bit PCM (counted from its start) louder than the speech level."""
    return sum(
        1
        for start in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)
        if g711.level(pcm[start : start + FRAME_BYTES]) >= AUDIBLE_LEVEL
    )


def error_pct(measured: float, sent: float) -> float:
    """``measured`` against ``sent``, in % (negative: shorter)."""
    return round(100 * (measured - sent) / sent, 3)


def measure_message(
    stored_seconds: float, pcm: bytes, sent_frames: int, tolerance_pct: float
) -> dict[str, Any]:
    """
    One message: the duration the store holds, the WAV file's length and its
    audible length, against the ``sent_frames`` 20 ms frames the caller sent;
    ``ok`` when no frame was lost beyond ``tolerance_pct`` of them and both
    durations are within ``tolerance_pct`` of what was sent.
    """
    sent = sent_frames * PTIME
    audible = audible_frames(pcm)
    out: dict[str, Any] = {
        "stored_seconds": stored_seconds,
        "file_seconds": round(len(pcm) / 2 / g711.SAMPLE_RATE, 3),
        "audible_seconds": round(audible * PTIME, 3),
        "lost_frames": max(0, sent_frames - audible),
        "duration_error_pct": error_pct(stored_seconds, sent),
        "audible_error_pct": error_pct(audible * PTIME, sent),
    }
    out["ok"] = (
        abs(out["duration_error_pct"]) <= tolerance_pct
        and abs(out["audible_error_pct"]) <= tolerance_pct
    )
    return out


def stored_messages(database: Path) -> list[dict[str, Any]]:
    """Every voicemail message in the store: mailbox, caller, duration, audio file."""
    with _read_only(database) as connection:
        rows = connection.execute(
            "SELECT message_id, mailbox, caller, duration, audio FROM voicemail_messages"
            " ORDER BY received_at"
        ).fetchall()
    names = ("message_id", "mailbox", "caller", "duration", "audio")
    return [dict(zip(names, row)) for row in rows]


def measure_messages(
    rows: Sequence[dict[str, Any]],
    audio_root: Path,
    expected: dict[str, str],
    sent_frames: int,
    tolerance_pct: float = TARGET["duration_error_pct"],
) -> dict[str, Any]:
    """
    The messages left for the ``expected`` mailboxes (mailbox -> caller), each
    measured (L{measure_message}; its WAV under ``audio_root``), and a summary:
    messages missing, out of tolerance, frames lost, error extremes.
    """
    measured: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in rows:
        mailbox = str(row["mailbox"])
        if mailbox not in expected:
            continue
        seen.add(mailbox)
        entry: dict[str, Any] = {"mailbox": mailbox, "caller": str(row["caller"])}
        try:
            pcm = g711.read_wav((audio_root / str(row["audio"])).read_bytes())
        except (OSError, ValueError) as e:
            measured.append({**entry, "ok": False, "problem": f"audio unreadable: {e}"})
            continue
        entry.update(measure_message(float(row["duration"]), pcm, sent_frames, tolerance_pct))
        if entry["caller"] != expected[mailbox]:
            entry.update(ok=False, problem=f"left by {entry['caller']}, not {expected[mailbox]}")
        measured.append(entry)
    missing = sorted(set(expected) - seen)
    errors = [m["audible_error_pct"] for m in measured if "audible_error_pct" in m]
    stored = [m["duration_error_pct"] for m in measured if "duration_error_pct" in m]
    within = sum(1 for m in measured if m["ok"])
    return {
        "sent_seconds": round(sent_frames * PTIME, 3),
        "sent_frames": sent_frames,
        "messages_expected": len(expected),
        "messages_stored": len(measured),
        "messages_missing": missing,
        "messages_within_tolerance": within,
        "messages_without_lost_frames": sum(1 for m in measured if m.get("lost_frames") == 0),
        "lost_frames_total": sum(int(m.get("lost_frames", 0)) for m in measured),
        "audible_error_pct_min": min(errors) if errors else None,
        "audible_error_pct_max": max(errors) if errors else None,
        "duration_error_pct_min": min(stored) if stored else None,
        "duration_error_pct_max": max(stored) if stored else None,
        "all_within_tolerance": not missing and within == len(expected),
        "messages": measured,
    }


def relayed_ok(relayed: dict[str, Any], planned: int) -> bool:
    """Every relayed call succeeded for SIPp and was answered with relay ports by Warden."""
    return bool(
        relayed["failed"] == 0
        and relayed["succeeded"] == planned
        and relayed["answered_with_relay_ports"] == planned
    )


def verdict(document: dict[str, Any]) -> str:
    """One line saying what the run showed and whether its figures may be published."""
    messages, relayed, window = document["messages"], document["relayed"], document["window"]
    parts = [
        f"{messages['messages_within_tolerance']}/{messages['messages_expected']} messages"
        f" within {TARGET['duration_error_pct']:g}% of the {messages['sent_seconds']:g} s sent"
        f" ({messages['lost_frames_total']} frames lost)",
        f"{relayed['succeeded']}/{relayed['planned']} relayed calls succeeded",
        f"Warden {window['warden_cpu_pct']}% of a core",
        f"everything else {window['other_cpu_pct']}%",
    ]
    if document["valid"]:
        tail = "VALID step (the machine was quiet enough)"
    else:
        tail = (
            f"INVALID step: everything else used >= {document['max_other_pct']:g}% of a core,"
            " so publish no CPU or throughput figure from it"
        )
    return "; ".join(parts) + " -> " + tail


# -- the run ------------------------------------------------------------------------------


def write_message(run_dir: Path, seconds: float) -> int:
    """
    The message the callers leave: ``message.wav`` (a 1 kHz tone) and, from it,
    ``message.pcap`` (20 ms A-law packets) next to a copy of ``voicemail_uac.xml``
    in ``run_dir``. Returns the number of packets.
    """
    wav = run_dir / "message.wav"
    wav.write_bytes(g711.wav_bytes(g711.tone(TONE_HZ, seconds)))
    alaw = g711.encode("PCMA", g711.read_wav(wav.read_bytes()))
    shutil.copy(SCENARIOS / "voicemail_uac.xml", run_dir)
    return write_rtp_pcap(run_dir / "message.pcap", seconds, alaw)


def check_greeting_fits() -> float:
    """The shipped greeting and beep must end before the callers start their message."""
    from warden.features.voicemail import BEEP, prompt

    seconds = (len(prompt("greeting")) + len(BEEP)) / 2 / g711.SAMPLE_RATE
    if seconds + 1.0 > GREETING_WAIT:
        raise SystemExit(
            f"the greeting and beep last {seconds:.2f} s: raise the first pause of"
            f" voicemail_uac.xml and GREETING_WAIT ({GREETING_WAIT:g} s)"
        )
    return seconds


def voicemail_uac_args(
    warden: tuple[str, int], run_dir: Path, inf: Path, callers: int, rate: float,
    message_seconds: float, local_port: int, media_port: int,
) -> list[str]:  # fmt: skip
    """SIPp arguments for ``callers`` callers leaving a message each (``write_message`` first)."""
    timeout = callers / rate + GREETING_WAIT + message_seconds + 60
    return [
        f"{warden[0]}:{warden[1]}",
        "-sf", str(run_dir / "voicemail_uac.xml"), "-inf", str(inf),
        "-i", warden[0], "-p", str(local_port), "-mp", str(media_port),
        "-m", str(callers), "-l", str(callers), "-r", f"{rate:g}", "-rp", "1000",
        "-d", str(round((message_seconds + MESSAGE_TAIL) * 1000)),
        "-timeout", f"{timeout:g}s", "-timeout_error", "-trace_stat", "-trace_err",
    ]  # fmt: skip


def write_callers(
    path: Path, users: Users, callers: Sequence[str], mailboxes: Sequence[str]
) -> None:
    """The injection file: caller;password;mailbox;[authentication ...] per line."""
    lines = ["SEQUENTIAL"]
    for caller, mailbox in zip(callers, mailboxes):
        pw = users.passwords[caller]
        lines.append(f"{caller};{pw};{mailbox};[authentication username={caller} password={pw}]")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def call_ids_to(database: Path, rowid: int, callees: Sequence[str]) -> set[str]:
    """The call records after row ``rowid`` of calls that reached one of ``callees``."""
    marks = ",".join("?" * len(callees))
    with _read_only(database) as connection:
        rows = connection.execute(
            f"SELECT call_id FROM call_records WHERE rowid > ? AND callee IN ({marks})",
            (rowid, *callees),
        ).fetchall()
    return {str(row[0]) for row in rows}


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start Warden, relay the calls, leave the messages, measure; the document's body."""
    greeting = check_greeting_fits()
    log(f"waiting up to {args.quiet_wait:g}s for a quiet machine")
    quiet = await threads.deferToThread(wait_quiet, args.max_other_pct, args.quiet_wait)
    log(f"  {quiet['load_before_pct']}% of a core busy after {quiet['quiet_wait_seconds']}s")
    rig = Rig(workdir, echo=True, media_range=None)
    try:
        await rig.start()
        body = await exchange(rig, args, workdir)
    finally:
        after = await rig.stop()
    return {"greeting_and_beep_seconds": round(greeting, 2), **quiet, **body, "after": after}


async def exchange(rig: Rig, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The relayed calls and, while they are up, the messages; every measurement."""
    users = await provision(rig.warden.config_path, 2 * args.callers, first=CALLERS_FROM)
    callers, mailboxes = users.numbers[: args.callers], users.numbers[args.callers :]
    vm_dir, relay_dir = workdir / "messages", workdir / "relayed"
    vm_dir.mkdir()
    relay_dir.mkdir()
    inf = vm_dir / "callers.csv"
    write_callers(inf, users, callers, mailboxes)
    sent_frames = write_message(vm_dir, args.message_seconds)
    relay_ramp = args.relayed / args.ramp_rate
    vm_rate = min(args.ramp_rate, args.callers)
    vm_ramp = args.callers / vm_rate
    hold = relay_ramp + 2 + vm_ramp + GREETING_WAIT + args.message_seconds + MESSAGE_TAIL + 5
    sent_per_call = write_rtp_pcap(relay_dir / "rtp.pcap", hold - PCAP_TAIL)
    shutil.copy(SCENARIOS / "call_uac_media.xml", relay_dir)
    database = rig.warden.database_path
    rowid, echo_drops = max_rowid(database), rig.echo_drops()

    relay = None
    if args.relayed:
        log(f"{args.relayed} relayed calls at {args.ramp_rate:g}/s, held {hold:.1f}s")
        relay_args = rig.uac_args(
            relay_dir / "call_uac_media.xml", args.relayed, args.ramp_rate, hold + relay_ramp + 60
        )
        relay_args += ["-l", str(args.relayed), "-d", str(round(hold * 1000))]
        relay = spawn(sipp_command(relay_args), relay_dir)
        await pause(relay_ramp + 2)
    log(
        f"{args.callers} callers leave {args.message_seconds:g}s messages"
        f" ({sent_frames} packets of a {TONE_HZ:g} Hz tone) at {vm_rate:g}/s"
    )
    vm_args = voicemail_uac_args(
        rig.warden.address, vm_dir, inf, args.callers, vm_rate, args.message_seconds,
        free_port(), free_media_port(),
    )  # fmt: skip
    vm = spawn(sipp_command(vm_args), vm_dir)
    running = [vm[1]] + ([relay[1]] if relay is not None else [])
    watchdog = real_reactor().callLater(
        hold + relay_ramp + 120, lambda: [p.signalProcess("KILL") for p in running]
    )
    try:
        await pause(vm_ramp + GREETING_WAIT + 0.5)
        pids = {"warden": rig.warden.pid, "sipp_uas": rig.uas_pid, "sipp_callers": vm[1].pid}
        if relay is not None:
            pids["sipp_relayed"] = relay[1].pid
        window_seconds = max(1.0, args.message_seconds - vm_ramp - 1.0)
        log(f"  every message is being recorded; measuring for {window_seconds:g}s")
        meter = CpuMeter(pids)
        await pause(window_seconds)
        window = meter.percentages()
        window["warden_rss_kib"] = rig.warden.rss_kib()
        vm_code = await vm[0].ended
        relay_code = await relay[0].ended if relay is not None else 0
    finally:
        if watchdog.active():
            watchdog.cancel()
    rig.check_uas()
    return await collect(
        rig, args, (rowid, echo_drops), window,
        {"callers": (vm_dir, vm_code), "relayed": (relay_dir, relay_code)},
        dict(zip(mailboxes, callers)), sent_frames, sent_per_call, hold,
    )  # fmt: skip


async def collect(
    rig: Rig, args: argparse.Namespace, before: tuple[int, int], window: dict[str, Any],
    runs: dict[str, tuple[Path, int]], expected: dict[str, str],
    sent_frames: int, sent_per_call: int, hold: float,
) -> dict[str, Any]:  # fmt: skip
    """
    SIPp's results, Warden's call records and the stored messages, measured;
    ``before``: the last call record's row id and the drops on the SIPp UAS's
    echo socket before the run.
    """
    rowid, echo_drops = before
    sipp: dict[str, Any] = {}
    for name, (run_dir, code) in runs.items():
        if name == "relayed" and not args.relayed:
            continue
        stats = read_sipp_stats(run_dir)
        sipp[name] = {"attempted": stats.created, "succeeded": stats.successful,
                      "failed": stats.failed, "retransmissions": stats.retransmissions,
                      "sipp_exit": code}  # fmt: skip
        if stats.failed or code != 0:
            for line in failure_events(read_sipp_errors(run_dir, 5_000_000)):
                log(f"  sipp {name}: {line}")
    total = sum(s["succeeded"] for s in sipp.values())
    records = await wait_for_records(rig.warden.database_path, rowid, total)
    to_mailboxes = call_ids_to(rig.warden.database_path, rowid, list(expected))
    relayed_records = [r for r in records if r["call_id"] not in to_mailboxes]
    message_records = [r for r in records if r["call_id"] in to_mailboxes]
    database = rig.warden.database_path
    await poll(
        lambda: (
            len({m["mailbox"] for m in stored_messages(database)} & set(expected))
            >= sipp["callers"]["succeeded"]
        ),
        30.0,
    )
    messages = measure_messages(
        stored_messages(database), rig.warden.data_dir / "voicemail", expected, sent_frames
    )
    relayed: dict[str, Any] = {
        "planned": args.relayed,
        "hold_seconds": round(hold, 1),
        "packets_sent_per_call": sent_per_call,
        **sipp.get("relayed", {"attempted": 0, "succeeded": 0, "failed": 0}),
        "call_records": len(relayed_records),
        "dispositions": dispositions(relayed_records),
    }
    relayed.update(media_summary(relayed_records, sent_per_call))
    relayed["sipp_echo_socket_drops"] = rig.echo_drops() - echo_drops
    relayed.update(attributed_loss(relayed))
    relayed["all_ok"] = relayed_ok(relayed, args.relayed)
    return {
        "callers": {
            "planned": args.callers,
            **sipp["callers"],
            "call_records": len(message_records),
            "dispositions": dispositions(message_records),
        },
        "messages": messages,
        "relayed": relayed,
        "window": window,
    }


async def main(reactor: Any, argv: Sequence[str]) -> None:
    """Run the benchmark and print the JSON document."""
    args = parse_args(argv)
    started = time.monotonic()
    workdir, document = start_run(["bench/voicemail.sh", *argv], args.workdir, "warden-voicemail-")
    document.update(
        {
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "target": {
                **TARGET,
                "met_requires": "every message within the error bound, every"
                " relayed call answered with relay ports, and a valid step",
            },
            "size": {
                "callers": args.callers,
                "message_seconds": args.message_seconds,
                "relayed": args.relayed,
            },
            "max_other_pct": args.max_other_pct,
        }
    )
    try:
        document.update(await run(args, workdir))
        document["valid"] = quiet_enough(document["window"], args.max_other_pct)
        document["target_met"] = bool(
            document["valid"]
            and document["messages"]["all_within_tolerance"]
            and document["relayed"]["all_ok"]
            and document["size"] == {k: TARGET[k] for k in ("callers", "message_seconds",
                                                            "relayed")}
        )  # fmt: skip
        document["verdict"] = verdict(document)
        document["duration_seconds"] = round(time.monotonic() - started, 1)
        log(document["verdict"])
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
