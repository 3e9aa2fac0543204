"""
The command line of ``twistd warden-loadtest``: options with the names operators
know from other SIP load tools, checked into one frozen L{Settings}.

Any problem with the command line or the users file ends the program with exit
status 2 and one line naming the option (``--users-file: line 3: ...``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any

import attrs
from twisted.python import usage

from .results import Account
from .shares import Share, check_split

TEST_TYPES = ("registrations", "calls", "mixed")
TRANSPORTS = ("udp", "tcp")
#: Exit statuses.
EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


@attrs.frozen
class Settings:
    """Everything a run needs, checked (see L{Options} for each meaning)."""

    pbx_host: str
    sip_port: int
    transport: str
    domain: str
    local_ip: str
    test_type: str
    users: int
    users_file: str | None
    provision: bool
    admin_url: str | None
    admin_ca: str | None
    first_user: int
    register_rate: float
    expires: int
    concurrent_calls: int
    total_calls: int
    call_rate: float
    call_duration: float
    duration: float
    ramp_up: float
    rtp: bool
    max_pending: int
    min_success_rate: float
    max_p95_ms: float
    max_rtp_loss: float
    min_mos: float
    save_report: str | None
    html_report: str | None
    prometheus_port: int | None
    timeout: float
    probe_timeout: float
    progress: bool
    log_file: str | None = None
    workers: int = 1
    worker_index: int = 0
    worker_count: int = 1
    progress_fd: int | None = None

    def public(self) -> dict[str, Any]:
        """The settings for the report (no secrets live here)."""
        return attrs.asdict(self)


class _Number:
    """A coercer for a numeric option; its errors name the option (set after the table)."""

    def __init__(self, kind: type, low: float, high: float | None = None) -> None:
        self.kind = kind
        self.low = low
        self.high = high
        self.option = "option"
        self.coerceDoc = f"{kind.__name__}"

    def __call__(self, value: str) -> Any:
        try:
            number = self.kind(value)
        except ValueError:
            raise ValueError(f"--{self.option}: not a number: {value!r}") from None
        if number < self.low or (self.high is not None and number > self.high):
            bound = f"{self.low:g}..{self.high:g}" if self.high is not None else f">= {self.low:g}"
            raise ValueError(f"--{self.option}: must be {bound}, got {value}")
        return number


_number = _Number


def read_users_file(path: str) -> list[Account]:
    """
    Accounts from a CSV of ``user;password`` lines. Blank lines, ``#`` comments
    and a SIPp ``SEQUENTIAL``/``RANDOM`` first line are skipped; more fields
    after the password are ignored.

    Raises:
        usage.UsageError: unreadable file or a bad line (naming the line).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise usage.UsageError(f"--users-file: cannot read {path}: {e}") from None
    accounts: list[Account] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or line.upper() in ("SEQUENTIAL", "RANDOM", "USER"):
            continue
        fields = line.split(";")
        if len(fields) < 2 or not fields[0].strip() or not fields[1]:
            raise usage.UsageError(f"--users-file: {path} line {number}: expected 'user;password'")
        user = fields[0].strip()
        if user in seen:
            raise usage.UsageError(f"--users-file: {path} line {number}: user {user} repeated")
        seen.add(user)
        accounts.append(Account(user, fields[1]))
    if not accounts:
        raise usage.UsageError(f"--users-file: {path} has no 'user;password' lines")
    return accounts


def route_source(host: str) -> str:
    """The local address the kernel would use to reach ``host`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class Options(usage.Options):
    """Options of ``twistd warden-loadtest``."""

    synopsis = "[options]"
    longdesc = (
        "Drive a SIP PBX with digest-authenticated registrations and calls (with "
        "G.711 RTP), measure setup times, RTP loss, jitter, latency and MOS, check "
        "pass/fail criteria and write a JSON (and HTML) report. Exit status: 0 all "
        "criteria passed, 1 a criterion failed, 2 usage error, 3 PBX unreachable. "
        "Every run stops by itself (--timeout); Ctrl-C hangs up, unregisters and "
        "still writes the report."
    )

    optFlags = [  # noqa: RUF012
        ["rtp", None, "Send and receive G.711 RTP (20 ms) both ways on every call."],
        ["provision", None, "Create the users through the admin API and delete them after."],
        ["no-progress", None, "No progress line on stderr."],
    ]

    optParameters = [  # noqa: RUF012
        ["pbx-host", "H", "127.0.0.1", "IP address of the PBX under test."],
        ["sip-port", "p", 5060, "SIP port of the PBX.", _number(int, 1, 65535)],
        ["transport", "t", "udp", "SIP transport: udp or tcp (one connection)."],
        ["domain", None, None, "Domain of the users' addresses. Default: --pbx-host."],
        ["local-ip", None, None, "Local address to use. Default: the route to the PBX."],
        ["test-type", "T", "registrations", "registrations, calls, or mixed (both at once)."],
        ["users", "u", 10, "Users (extensions) to register; calls use half as callers, "
         "half as callees answered by this generator.", _number(int, 1)],
        ["users-file", "f", None, "CSV of 'user;password' lines (SIPp injection files work)."],
        ["admin-url", None, None, "Admin API base URL for --provision, e.g. "
         "https://127.0.0.1:8443 (token from $WARDEN_ADMIN_TOKEN)."],
        ["admin-ca", None, None, "PEM certificate to trust for the admin API's HTTPS."],
        ["first-user", None, 700000, "First extension number --provision creates.",
         _number(int, 1)],
        ["register-rate", "R", 50.0, "Registrations started per second.", _number(float, 0.01)],
        ["expires", None, 300, "Requested registration expiry (s); refreshed within runs "
         "longer than half of it.", _number(int, 30)],
        ["concurrent-calls", "l", 10, "Most calls in progress at once.", _number(int, 1)],
        ["total-calls", "m", 100, "Calls to place in all.", _number(int, 1)],
        ["call-rate", "r", 5.0, "Calls started per second.", _number(float, 0.01)],
        ["call-duration", "d", 5.0, "Seconds each answered call is held.", _number(float, 0)],
        ["duration", "D", 0.0, "Seconds to keep going (mixed, soak; registrations repeat as "
         "refreshes). 0: one pass of --users / --total-calls.", _number(float, 0)],
        ["ramp-up", None, 0.0, "Seconds over which rates rise linearly to their target.",
         _number(float, 0)],
        ["max-pending", None, 1000, "Most registrations in flight at once.", _number(int, 1)],
        ["min-success-rate", None, 95.0, "Criterion: percent of operations that must succeed.",
         _number(float, 0, 100)],
        ["max-p95-ms", None, 2000.0, "Criterion: p95 of registration time and call setup "
         "time, milliseconds.", _number(float, 0)],
        ["max-p95", None, None, "The same criterion in seconds (older name; --max-p95-ms "
         "is preferred).", _number(float, 0)],
        ["max-rtp-loss", None, 1.0, "Criterion with --rtp: highest RTP loss, percent.",
         _number(float, 0, 100)],
        ["min-mos", None, 3.6, "Criterion with --rtp: lowest mean estimated MOS (G.107).",
         _number(float, 1, 4.5)],
        ["save-report", "o", "warden-loadtest-report.json", "Write the JSON report to this "
         "file ('-': stdout)."],
        ["html-report", None, None, "Write a self-contained HTML report with charts."],
        ["prometheus-port", None, None, "Serve live metrics for Prometheus on this port "
         "(on 127.0.0.1)", _number(int, 0, 65535)],
        ["timeout", None, None, "Hard limit on the whole run (s). Default: from the load",
         _number(float, 1)],
        ["log-file", None, None, "Keep Twisted's own log (sockets opened and closed, "
         "internal events) in this file. Without it (or twistd's --logfile) only its "
         "warnings and errors are shown, on stderr, beside the progress line."],
        ["probe-timeout", None, 5.0, "Seconds to wait for the PBX to answer OPTIONS before "
         "giving up with exit status 3.", _number(float, 0.1)],
        ["workers", "w", 1, "Generator processes this run spawns, each with its share of the "
         "users, rates and calls; one merged report and progress line.", _number(int, 1, 64)],
        ["worker-index", None, 0, "Run only share I (0-based) of --worker-count (one run "
         "spread over machines; merge the reports with 'merge').", _number(int, 0, 1023)],
        ["worker-count", None, 1, "How many shares the whole run is split into.",
         _number(int, 1, 1024)],
        ["progress-fd", None, None, "(Used by --workers) write progress as JSON lines to "
         "this file descriptor instead of the progress line.", _number(int, 3, 1023)],
    ]  # fmt: skip

    subCommands = [  # noqa: RUF012
        ["merge", None, lambda: _merge_options(), "Merge the JSON reports of the shares of "
         "one run (--worker-index/--worker-count) into one report on stdout."],
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.settings: Settings | None = None
        self.accounts: list[Account] = []
        self.share: Share | None = None

    def parseOptions(self, options: Any = None) -> None:
        """Parse; a usage error ends the program with status 2 (not twistd's 1)."""
        try:
            self.parse_strict(options)
        except usage.UsageError as e:
            sys.stderr.write(f"{self}\nwarden-loadtest: error: {e}\n")
            raise SystemExit(EXIT_USAGE) from None

    def parse_strict(self, options: Any = None) -> None:
        """Parse, raising UsageError for any problem (what tests call)."""
        super().parseOptions(options)  # type: ignore[no-untyped-call]

    def opt_version(self) -> None:
        """Print the version and exit."""
        from warden import __version__

        print(f"warden-loadtest {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        """Check the options together and load the users (this process's share of them)."""
        if self.subCommand is not None:
            return
        self.settings = self._settings()
        self._check_shares(self.settings)
        settings = self.settings
        self.share = Share.of(settings, settings.worker_index, settings.worker_count)
        accounts = self._accounts(settings)
        if settings.workers == 1:
            self.accounts = accounts[self.share.user_start : self.share.user_end]

    def _check_shares(self, settings: Settings) -> None:
        if settings.worker_index >= settings.worker_count:
            raise usage.UsageError(
                f"--worker-index: must be below --worker-count ({settings.worker_count}), "
                f"got {settings.worker_index}"
            )
        if settings.workers > 1 and settings.worker_count > 1:
            raise usage.UsageError("--workers: give it alone, not with --worker-count")
        if settings.workers > 1 and settings.prometheus_port is not None:
            raise usage.UsageError("--prometheus-port: one process's metrics; not with --workers")
        if settings.workers > 1 and settings.progress_fd is not None:
            raise usage.UsageError("--progress-fd: for the processes --workers spawns")
        problem = check_split(settings, max(settings.workers, settings.worker_count))
        if problem is not None:
            raise usage.UsageError(problem)

    def _settings(self) -> Settings:
        transport = str(self["transport"]).lower()
        if transport not in TRANSPORTS:
            raise usage.UsageError(f"--transport: must be udp or tcp, got {self['transport']!r}")
        test_type = str(self["test-type"]).lower()
        if test_type not in TEST_TYPES:
            raise usage.UsageError(
                f"--test-type: must be one of {', '.join(TEST_TYPES)}, got {self['test-type']!r}"
            )
        host = str(self["pbx-host"])
        local_ip = self["local-ip"] or route_source(host)
        for option, value in (("--pbx-host", host), ("--local-ip", local_ip)):
            try:
                if ipaddress.ip_address(value).version != 4:
                    raise ValueError
            except ValueError:
                raise usage.UsageError(
                    f"{option}: must be an IPv4 address, got {value!r}"
                ) from None
        if test_type != "registrations" and self["users"] < 2:
            raise usage.UsageError("--users: calls need at least 2 (a caller and a callee)")
        if self["provision"] == bool(self["users-file"]):
            raise usage.UsageError("give exactly one of --users-file and --provision")
        if self["provision"] and not self["admin-url"]:
            raise usage.UsageError("--provision needs --admin-url")
        if self["provision"] and not os.environ.get("WARDEN_ADMIN_TOKEN"):
            raise usage.UsageError("--provision needs an API token in $WARDEN_ADMIN_TOKEN")
        return Settings(
            pbx_host=host,
            sip_port=self["sip-port"],
            transport=transport,
            domain=self["domain"] or host,
            local_ip=local_ip,
            test_type=test_type,
            users=self["users"],
            users_file=self["users-file"],
            provision=bool(self["provision"]),
            admin_url=self["admin-url"],
            admin_ca=self["admin-ca"],
            first_user=self["first-user"],
            register_rate=self["register-rate"],
            expires=self["expires"],
            concurrent_calls=self["concurrent-calls"],
            total_calls=self["total-calls"],
            call_rate=self["call-rate"],
            call_duration=self["call-duration"],
            duration=self["duration"],
            ramp_up=self["ramp-up"],
            rtp=bool(self["rtp"]),
            max_pending=self["max-pending"],
            min_success_rate=self["min-success-rate"],
            max_p95_ms=self._max_p95_ms(),
            max_rtp_loss=self["max-rtp-loss"],
            min_mos=self["min-mos"],
            save_report=self["save-report"],
            html_report=self["html-report"],
            prometheus_port=self["prometheus-port"],
            timeout=self["timeout"] or default_timeout(self),
            probe_timeout=self["probe-timeout"],
            progress=not self["no-progress"],
            log_file=self["log-file"],
            workers=self["workers"],
            worker_index=self["worker-index"],
            worker_count=self["worker-count"],
            progress_fd=self["progress-fd"],
        )

    def _max_p95_ms(self) -> float:
        seconds = self["max-p95"]
        if seconds is None:
            return float(self["max-p95-ms"])
        if self["max-p95-ms"] != 2000.0:
            raise usage.UsageError("--max-p95: give the limit once, as --max-p95-ms")
        return float(seconds) * 1000.0

    def _accounts(self, settings: Settings) -> list[Account]:
        if settings.users_file is None:
            prefix = settings.first_user
            return [Account(str(prefix + i), os.urandom(12).hex()) for i in range(settings.users)]
        accounts = read_users_file(settings.users_file)
        if len(accounts) < settings.users:
            raise usage.UsageError(
                f"--users: {settings.users} asked for, but {settings.users_file} "
                f"has only {len(accounts)}"
            )
        return accounts[: settings.users]


def _merge_options() -> usage.Options:
    from .merge import MergeOptions

    return MergeOptions()


#: Options a spawned worker does not inherit from ``--workers``' command line.
_NOT_INHERITED = {
    "workers", "worker-index", "worker-count", "progress-fd", "save-report", "html-report",
    "prometheus-port", "log-file", "max-p95", "max-p95-ms", "users-file",
}  # fmt: skip


def worker_arguments(options: Options, index: int, report: str, log_file: str | None) -> list[str]:
    """
    The ``warden-loadtest`` arguments of worker ``index`` spawned by ``--workers``:
    the options as parsed (so short and long forms alike), its share, a report
    file and the progress channel on file descriptor 3.
    """
    settings = options.settings
    assert settings is not None
    args: list[str] = []
    flag: Any
    for flag in options.optFlags:
        if options[flag[0]]:
            args.append(f"--{flag[0]}")
    parameter: Any
    for parameter in options.optParameters:
        name, value = parameter[0], options[parameter[0]]
        if name not in _NOT_INHERITED and value is not None:
            args.append(f"--{name}={value}")
    if settings.users_file is not None:
        args.append(f"--users-file={os.path.abspath(settings.users_file)}")
    args += [f"--max-p95-ms={settings.max_p95_ms!r}", f"--worker-index={index}"]
    args += [f"--worker-count={settings.workers}", "--progress-fd=3", f"--save-report={report}"]
    if log_file is not None:
        args.append(f"--log-file={log_file}")
    return args


_parameter: Any
for _parameter in Options.optParameters:
    if len(_parameter) > 4 and isinstance(_parameter[4], _Number):
        _parameter[4].option = _parameter[0]


def default_timeout(options: Options) -> float:
    """
    A bound generous enough for the load asked for: the time to start everything
    at the target rates, plus the holding time, plus two minutes of slack.
    """
    registering = options["users"] / options["register-rate"]
    calling = 0.0
    if options["test-type"] != "registrations":
        calling = options["total-calls"] / options["call-rate"] + options["call-duration"]
    return float(120.0 + options["ramp-up"] + max(options["duration"], registering + calling) * 2)
