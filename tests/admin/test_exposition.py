"""
``/metrics`` declares each family once: Prometheus' text parser refuses an
exposition with a second ``# HELP`` or ``# TYPE`` line for a name, and with it
every sample of the scrape.
"""

from __future__ import annotations

from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from tests.admin.apihelper import ApiHarness

# Every module defining families, loaded as in a running Warden (whose CDR spool
# is always in use) even where this test runs alone.
from warden.store import spool  # noqa: F401


class FamiliesDeclaredOnceTests(SynchronousTestCase):
    """No family is declared twice in the served exposition."""

    def test_each_family_once(self) -> None:
        """Every ``# TYPE`` and ``# HELP`` line names a different family."""
        h = ApiHarness()
        body = h.request("GET", "/metrics", token=h.token("read")).body.decode()
        for kind in ("# TYPE ", "# HELP "):
            names = Counter(line.split()[2] for line in body.splitlines() if line.startswith(kind))
            self.assertEqual([n for n, count in names.items() if count > 1], [], kind)
        self.assertIn("# TYPE warden_cdr_spool_depth gauge", body)
