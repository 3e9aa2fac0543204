"""
``--admin-port``: how the command line overrides ``[admin] listen`` (the admin
plugin itself is L{warden.plugins.admin}).
"""

from __future__ import annotations

import attrs

from warden.admin.service import with_port
from warden.config import WardenConfig
from warden.errors import ConfigError


def override_port(config: WardenConfig, port: int | None) -> WardenConfig:
    """
    ``config`` with ``--admin-port`` applied to ``[admin] listen``; port 0 turns
    the admin API off (as ``[admin] enabled = false``).
    """
    if port is None:
        return config
    if port == 0:
        return attrs.evolve(config, admin=attrs.evolve(config.admin, enabled=False))
    try:
        listen = with_port(config.admin.listen, port)
    except ValueError as e:
        raise ConfigError("admin.listen", str(e), "command line") from None
    return attrs.evolve(config, admin=attrs.evolve(config.admin, listen=listen))
