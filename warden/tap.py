"""
``twistd warden``: command-line options and the composition root.

``Options`` reads the configuration with the installed plugins
(L{warden.plugin}); ``makeService`` builds Warden through
L{warden.server.build_server}.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from twisted.application import service
from twisted.python import usage

from warden.admin.wiring import override_port
from warden.config import COMMAND_LINE, WardenConfig, load_effective_config
from warden.digits import parse_uint
from warden.errors import ConfigError, StoreError
from warden.filemodes import private_directories, private_umask, secure_directories
from warden.interfaces import IWardenPlugin, IWardenReactor
from warden.plugin import discover, enabled_plugins, list_lines
from warden.plugins.sip import tls_settings
from warden.runlock import LockFailed
from warden.server import build_server, warden_reactor
from warden.sip.tls import sip_certificate_files
from warden.store.backend import check_store
from warden.tls import install_sighup
from warden.workers import (
    WorkerSupervisor,
    install_worker_sighup,
    process_spawner,
    worker_config,
)


def _port_option(option: str) -> Callable[[str], int]:
    """A coercer of ``--option``'s value to a port number (a bad one names the option)."""

    def coerce(value: str) -> int:
        port = parse_uint(value, 65535)
        if port is None:
            raise usage.UsageError(f"--{option}: must be a port number 0..65535, got {value!r}")
        return port

    return coerce


_port = _port_option("sip-port")


def _worker_index(value: str) -> int:
    index = parse_uint(value, 63)
    if index is None:
        raise usage.UsageError(f"--worker: must be a worker number 0..63, got {value!r}")
    return index


class Options(usage.Options):
    """Options of ``twistd warden``; each overrides the configuration file."""

    optParameters = [  # noqa: RUF012
        ["config", "c", None, "Configuration file (TOML). Default: embedded defaults."],
        ["data-dir", "d", None, "Data directory (database, keys). Default: ./var"],
        ["sip-port", "p", None, "SIP port for UDP and TCP. Default: 5060", _port],
        [
            "sip-tls-port",
            None,
            None,
            "SIP-over-TLS port (with tls in [sip] transports). Default: 5061",
            _port_option("sip-tls-port"),
        ],
        ["sip-interface", "i", None, "Address to listen on. Default: all interfaces"],
        [
            "admin-port",
            None,
            None,
            "Admin HTTPS port (overrides [admin] listen); 0 turns the admin API off",
            _port_option("admin-port"),
        ],
        [
            "worker",
            None,
            None,
            "Internal: run as SIP worker I of [sip] workers (the supervisor passes it)",
            _worker_index,
        ],
    ]

    optFlags = [  # noqa: RUF012
        ["list-plugins", None, "Print the installed plugins (enabled or not) and exit."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["domain"] = []
        self.config: WardenConfig | None = None
        #: The enabled plugins, in build order.
        self.plugins: list[IWardenPlugin] = []

    def opt_domain(self, name: str) -> None:
        """A domain served by this PBX (repeatable)."""
        self["domain"].append(name)

    def postOptions(self) -> None:
        """Load the configuration now, so a bad one stops start-up with one line."""
        if self["worker"] is not None:  # as early as can be: a SIGHUP may come soon
            from twisted.internet import reactor

            install_worker_sighup(install_sighup(reactor), self["worker"])
        private_umask()  # before check_store creates the data directory
        try:
            available = discover()
            self.config = load_effective_config(
                self["config"],
                data_dir=self["data-dir"],
                sip_port=self["sip-port"],
                sip_tls_port=self["sip-tls-port"],
                sip_interface=self["sip-interface"],
                domains=self["domain"],
                plugins=available,
            )
            self.plugins = enabled_plugins(self.config.plugins.enabled, available)
            if self["list-plugins"]:
                for line in list_lines(available, self.config.plugins.enabled):
                    print(line, file=sys.stdout)
                raise SystemExit(0)
            self.config = override_port(self.config, self["admin-port"])
            if self["worker"] is not None:
                if self["worker"] >= self.config.sip.workers:
                    raise ConfigError(
                        "sip.workers",
                        f"{self.config.sip.workers}, so there is no worker {self['worker']}",
                        COMMAND_LINE,
                    )
                self.config = worker_config(self.config, self["worker"])
            # A wrong store URL, password or database stops start-up with one line.
            check_store(self.config.store_url, self.config.store.password_file)
        except (ConfigError, StoreError) as e:
            raise usage.UsageError(str(e)) from None


def _twistd_logfile(options: Options) -> str | None:
    """twistd's ``--logfile`` (None when not run by twistd, or without one)."""
    parent = getattr(options, "parent", None)
    value = parent.get("logfile") if isinstance(parent, dict) else None
    return value if isinstance(value, str) else None


def _shared_certificate(reactor: IWardenReactor, config: WardenConfig) -> None:
    """
    The SIP TLS certificate every worker serves: generated (when ``[tls]``
    names none) by the supervisor, before the workers start, not by each.
    """
    if "tls" not in config.sip.transports:
        return
    private_umask()
    os.makedirs(config.server.data_dir, exist_ok=True)
    try:
        sip_certificate_files(tls_settings(config), config.sip.interface, reactor)
    except (OSError, ValueError) as e:
        raise SystemExit(f"twistd warden: the SIP TLS certificate cannot be made: {e}") from None


def makeService(options: Options, reactor: IWardenReactor | None = None) -> service.IService:
    """Build Warden from parsed options (on the global reactor unless given one)."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = warden_reactor(global_reactor)
    config = options.config
    assert config is not None
    if config.sip.workers > 1 and config.worker < 0:
        _shared_certificate(reactor, config)
        return WorkerSupervisor(
            reactor,
            config.sip.workers,
            process_spawner(reactor, dict(options), _twistd_logfile(options)),
            install_sighup(reactor),
        )
    private_umask()  # the database, spool and backups hold password equivalents
    os.makedirs(config.server.data_dir, exist_ok=True)
    secure_directories(private_directories(config))
    try:  # held while Warden runs: a restore refuses to write under it (warden.runlock)
        root = build_server(reactor, config, options.plugins, options["config"])
    except (LockFailed, ConfigError) as e:  # a plugin's secret that cannot be read
        raise SystemExit(f"twistd warden: {e}") from None
    return root
