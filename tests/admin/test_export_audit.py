"""CDR exports through the admin API (``GET /api/v1/cdrs?format=csv``) are audited."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.admin.apihelper import ApiHarness


class CsvExportAuditTests(SynchronousTestCase):
    """A CSV export leaves an audit entry; a JSON page does not."""

    def test_csv_export_audited(self) -> None:
        """The entry names the token, the filters and the number of records exported."""
        h = ApiHarness()
        token = h.token("read")
        before = len(h.audit.entries)
        page = h.request("GET", "/api/v1/cdrs?extension=100", token=token)
        self.assertEqual((page.status, len(h.audit.entries)), (200, before))
        export = h.request("GET", "/api/v1/cdrs?format=csv&extension=100", token=token)
        self.assertEqual(export.status, 200)
        entry = h.audit.entries[-1]
        self.assertEqual((entry.action, entry.status), ("GET /api/v1/cdrs", 200))
        self.assertTrue(entry.actor.startswith("token:"))
        self.assertEqual(entry.detail["count"], 0)
        self.assertEqual(entry.detail["filters"]["extension"], "100")
