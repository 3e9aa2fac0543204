"""
Random hex for SIP identifiers: tags, branches, nonce salts, Call-IDs.

Each of them must be unpredictable (RFC 3261 §19.3: tags "cryptographically
random with at least 32 bits of randomness"; a branch must be unique; a nonce's
salt must not be guessable), so they come from the kernel's CSPRNG
(``os.urandom``). A REGISTER draws two of them (the 401's To-tag and its nonce's
salt) and a call a dozen: one ``getrandom`` system call each cost about 1% of a
SIP worker's time. L{random_hex} instead draws L{POOL_BYTES} bytes at a time and
hands out each byte once. The pool holds nothing an attacker who can read the
process's memory could not read anyway (the nonce secret is beside it), and it
is emptied in a child after ``fork``, so two processes never hand out the same
bytes.
"""

from __future__ import annotations

import os
import threading

__all__ = ["POOL_BYTES", "random_hex"]

#: Bytes drawn from the kernel at a time.
POOL_BYTES = 4096

_lock = threading.Lock()
_pool = b""
_at = 0


def random_hex(nbytes: int) -> str:
    """``nbytes`` bytes from the kernel's CSPRNG, as ``2 * nbytes`` hex digits."""
    global _pool, _at
    if not 0 < nbytes <= POOL_BYTES:
        raise ValueError(f"random_hex takes 1 to {POOL_BYTES} bytes, not {nbytes}")
    with _lock:
        end = _at + nbytes
        if end > len(_pool):
            _pool, _at, end = os.urandom(POOL_BYTES), 0, nbytes
        chunk = _pool[_at:end]
        _at = end
    return chunk.hex()


def _forget() -> None:
    """Empty the pool (in a child after fork: its bytes are the parent's too)."""
    global _pool, _at, _lock
    _lock = threading.Lock()
    _pool, _at = b"", 0


os.register_at_fork(after_in_child=_forget)
