"""Scheduled backups as a plugin (``[backup] interval``)."""

from __future__ import annotations

from types import MappingProxyType

from warden.backup.schedule import backup_service
from warden.config import BackupConfig
from warden.plugin import BuildContext, BuiltinPlugin


class BackupPlugin(BuiltinPlugin):
    """``[backup]``: backups taken by the running PBX, with retention."""

    name = "backup"
    description = "scheduled backups with retention ([backup] interval)"
    section_classes = MappingProxyType({"backup": BackupConfig})

    def make(self, context: BuildContext) -> None:
        """Run the backup schedule when ``[backup] interval`` is set."""
        backups = backup_service(context.config, context.config_path, context.reactor)
        if backups is not None:
            context.add_service(backups)


plugin = BackupPlugin()
