"""
Where the tests find the RFC 4475 / RFC 5118 torture corpus.

The corpus ships with the tests in ``tests/data/conformance`` (see its README for
its origin and licence); ``$WARDEN_CONFORMANCE_DIR`` points the tests at another
copy. Nothing here reads outside the repository unless told to.
"""

from __future__ import annotations

import os
from pathlib import Path

BUNDLED = Path(__file__).resolve().parent / "data" / "conformance"


def conformance_dir() -> Path:
    """The corpus directory: ``$WARDEN_CONFORMANCE_DIR`` or the copy in ``tests/data``."""
    configured = os.environ.get("WARDEN_CONFORMANCE_DIR")
    if configured:
        return Path(configured)
    return BUNDLED


def torture_message(rfc: str, name: str) -> bytes:
    """The raw bytes of corpus message ``name`` of ``rfc`` (``"rfc4475"`` or ``"rfc5118"``)."""
    return (conformance_dir() / rfc / f"{name}.dat").read_bytes()
