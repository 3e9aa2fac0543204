"""Tests for L{warden.randomness}."""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from warden import randomness
from warden.randomness import POOL_BYTES, random_hex


class RandomHexTests(SynchronousTestCase):
    def setUp(self) -> None:
        randomness._forget()
        self.addCleanup(randomness._forget)

    def test_length_and_digits(self) -> None:
        """n bytes give 2n lower-case hex digits."""
        for n in (1, 6, 8, 12, POOL_BYTES):
            text = random_hex(n)
            self.assertEqual(len(text), 2 * n)
            self.assertRegex(text, re.compile(r"\A[0-9a-f]+\Z"))

    def test_bad_sizes(self) -> None:
        """Zero, negative and more than a pool are refused."""
        for n in (0, -1, POOL_BYTES + 1):
            self.assertRaises(ValueError, random_hex, n)

    def test_bytes_handed_out_once(self) -> None:
        """The kernel's bytes come out in order, each once, across refills."""
        draws = iter([b"\x01" * POOL_BYTES, b"\x02" * POOL_BYTES, b"\x03" * POOL_BYTES])
        calls: list[int] = []

        def urandom(n: int) -> bytes:
            calls.append(n)
            return next(draws)

        self.patch(randomness.os, "urandom", urandom)
        texts = [random_hex(1000) for _ in range(4)]
        self.assertEqual(texts[:4], ["01" * 1000] * 4)
        # 96 bytes are left: a draw of 100 takes a new pool, not the rest.
        self.assertEqual(random_hex(100), "02" * 100)
        self.assertEqual(calls, [POOL_BYTES, POOL_BYTES])
        self.assertEqual(random_hex(POOL_BYTES - 100), "02" * (POOL_BYTES - 100))
        self.assertEqual(random_hex(1), "03")

    def test_distinct(self) -> None:
        """Ten thousand 6-byte tags: no two alike."""
        tags = {random_hex(6) for _ in range(10_000)}
        self.assertEqual(len(tags), 10_000)

    def test_fork_empties_pool(self) -> None:
        """A child after fork draws its own bytes, never the parent's next ones."""
        random_hex(1)  # the parent has a pool
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.write(write, random_hex(64).encode("ascii"))
            finally:
                os._exit(0)
        os.close(write)
        child = b""
        while chunk := os.read(read, 4096):
            child += chunk
        os.close(read)
        os.waitpid(pid, 0)
        parent = random_hex(64)
        self.assertEqual(len(child), 128)
        self.assertNotEqual(child.decode("ascii"), parent)
