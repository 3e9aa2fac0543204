"""What the feature plugins' admin API endpoints share (L{warden.model.admin.PluginEndpoint})."""

from __future__ import annotations

from warden.errors import ApiError
from warden.interfaces import IDirectory

__all__ = ["NUMBER_PARAMS", "require_extension"]

#: The path parameter of ``extensions/{number}/...`` endpoints.
NUMBER_PARAMS = {"number": "[0-9]{1,32}"}


async def require_extension(directory: IDirectory, number: str) -> None:
    """A 404 unless extension ``number`` exists."""
    if await directory.get_extension(number) is None:
        raise ApiError(404, "not_found", f"no extension {number}")
