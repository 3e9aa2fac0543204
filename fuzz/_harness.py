"""
What Warden's atheris harnesses share: where the seed corpus is, how each
harness writes its seeds, and how it hands a target to libFuzzer.

Each harness module defines ``check(data)`` (the fuzz target: any exception
other than the parser's documented error is a crash) and ``seeds()`` (the
inputs it starts from, derived from the RFC 4475 / RFC 5118 torture corpus).
Run one with ``python fuzz/<name>.py [libFuzzer options]``, or all of them for a
bounded time with ``python fuzz/run.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout, as tox and CI do
    sys.path.insert(0, str(ROOT))

#: Tokens libFuzzer splices into inputs: numbers Python reads differently from
#: the protocols (non-ASCII digits, signs, underscores, huge values), and the
#: separators SIP and SDP parse on.
DICTIONARY = Path(__file__).resolve().parent / "sip.dict"


def corpus_dir() -> Path:
    """
    The torture corpus: ``tests/data/conformance`` in the checkout when present,
    else ``$WARDEN_CONFORMANCE_DIR``, else ``../shared/conformance`` beside it.
    """
    bundled = ROOT / "tests" / "data" / "conformance"
    if bundled.is_dir():
        return bundled
    configured = os.environ.get("WARDEN_CONFORMANCE_DIR")
    if configured:
        return Path(configured)
    return ROOT.parent / "shared" / "conformance"


def corpus_messages() -> list[bytes]:
    """Every torture message of the corpus, as raw bytes (none when it is missing)."""
    base = corpus_dir()
    paths = sorted(base.glob("rfc4475/*.dat")) + sorted(base.glob("rfc5118/*.dat"))
    return [path.read_bytes() for path in paths]


def split_message(data: bytes) -> tuple[list[bytes], bytes]:
    """The start and header lines of a raw message, and its body."""
    for blank, eol in ((b"\r\n\r\n", b"\r\n"), (b"\n\n", b"\n")):
        head, found, body = data.partition(blank)
        if found:
            return head.split(eol), body
    return data.split(b"\n"), b""


def run(check: Callable[[bytes], None], seeds: Iterable[bytes]) -> None:
    """
    Fuzz ``check`` from ``seeds`` with the command line's libFuzzer options. The
    seeds go into a scratch directory that libFuzzer uses as its corpus.
    """
    import atheris

    with tempfile.TemporaryDirectory(prefix="warden-fuzz-") as scratch:
        for number, seed in enumerate(seeds):
            (Path(scratch) / f"seed-{number:04d}").write_bytes(seed)
        argv = [*sys.argv, f"-dict={DICTIONARY}", scratch]
        atheris.Setup(argv, check)
        atheris.Fuzz()
