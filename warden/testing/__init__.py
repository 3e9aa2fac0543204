"""
Fakes for tests: in-memory implementations of Warden's interfaces.

Every fake here passes ``verifyObject`` and the same conformance suite as the real
implementation (``tests/store/conformance.py``).
"""

from warden.testing.memory import (
    MemoryCallRecordStore,
    MemoryDirectory,
    MemoryLiveCalls,
    MemoryLocationService,
)

__all__ = ["MemoryCallRecordStore", "MemoryDirectory", "MemoryLiveCalls", "MemoryLocationService"]
