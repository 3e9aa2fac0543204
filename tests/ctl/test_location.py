"""``wardenctl location`` and ``extension set --location`` on memory stores."""

from __future__ import annotations

import io
import json

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warden.config import WardenConfig
from warden.ctl.audit import CliAudit
from warden.ctl.location import run_location
from warden.ctl.main import build_parser, run_command
from warden.model.emergency import CivicLocation
from warden.store.credentials import make_extension
from warden.testing.admin import MemoryAuditLog
from warden.testing.civic import MemoryCivicLocationStore
from warden.testing.memory import MemoryDirectory

EXAMPLE = "country=US,A1=CA,A3=San Jose,RD=Main St,HNO=100,FLR=2,ROOM=201"


class LocationCommandTests(SynchronousTestCase):
    """The location commands change the store and are audited."""

    def setUp(self) -> None:
        self.store = MemoryCivicLocationStore()
        self.audit_log = MemoryAuditLog()

    def run_ctl(self, *argv: str) -> tuple[int, str, str]:
        args = build_parser().parse_args(["location", *argv])
        out, err = io.StringIO(), io.StringIO()
        audit = CliAudit(self.audit_log, Clock())
        d = Deferred.fromCoroutine(run_location(args, self.store, audit, out, err))
        return self.successResultOf(d), out.getvalue(), err.getvalue()

    def test_add_list_remove(self) -> None:
        """add stores the checked civic address; list shows it; remove forgets it."""
        code, out, err = self.run_ctl("add", "hq-floor2", "--civic", EXAMPLE)
        self.assertEqual((code, err), (0, ""))
        self.assertIn("100 Main St, Floor 2, Room 201, San Jose, CA, US", out)
        location = self.store.locations["hq-floor2"]
        self.assertEqual(location.civic["A3"], "San Jose")
        code, out, _ = self.run_ctl("list", "--json")
        self.assertEqual(json.loads(out)["locations"][0]["civic"]["ROOM"], "201")
        code, out, _ = self.run_ctl("list")
        self.assertIn("hq-floor2", out)
        self.assertEqual(self.run_ctl("remove", "hq-floor2")[0], 0)
        code, _, err = self.run_ctl("remove", "hq-floor2")
        self.assertEqual((code, err), (1, "wardenctl: no location hq-floor2\n"))
        entries = self.successResultOf(self.audit_log.list())
        self.assertEqual(
            [(e.action, e.target, e.status) for e in entries],
            [("wardenctl location add", "hq-floor2", 0),
             ("wardenctl location remove", "hq-floor2", 0),
             ("wardenctl location remove", "hq-floor2", 1)],
        )  # fmt: skip

    def test_bad_civic_refused(self) -> None:
        """An unknown element, or a bad name, is exit 2 with the reason; nothing stored."""
        code, _, err = self.run_ctl("add", "hq", "--civic", "country=US,FLOOR=2")
        self.assertEqual(code, 2)
        self.assertIn("unknown civic address element 'FLOOR'", err)
        code, _, err = self.run_ctl("add", "h q", "--civic", "country=US")
        self.assertEqual(code, 2)
        self.assertEqual(self.store.locations, {})

    def test_map_unmap(self) -> None:
        """Networks are stored canonical; host bits or unknown locations are refused."""
        self.run_ctl("add", "lobby", "--civic", "country=US")
        self.assertEqual(self.run_ctl("map", "10.1.2.0/24", "lobby")[0], 0)
        self.assertEqual(self.store.networks, {"10.1.2.0/24": "lobby"})
        self.assertEqual(self.run_ctl("map", "10.1.2.1/24", "lobby")[0], 2)
        self.assertEqual(self.run_ctl("map", "10.9.0.0/16", "nowhere")[0], 1)
        self.assertEqual(self.run_ctl("unmap", "10.1.2.0/24")[0], 0)
        self.assertEqual(self.run_ctl("unmap", "10.1.2.0/24")[0], 1)


class ExtensionLocationTests(SynchronousTestCase):
    """``extension set NUMBER --location NAME``."""

    def setUp(self) -> None:
        self.store = MemoryCivicLocationStore()
        self.successResultOf(self.store.put_location(CivicLocation("lobby", {"country": "US"})))
        self.directory = MemoryDirectory()
        self.successResultOf(
            self.directory.add_extension(make_extension("1001", "Alice", "pbx", "pw1001"))
        )

    def ctl(self, *argv: str) -> tuple[int, str, str]:
        args = build_parser().parse_args(["extension", "set", *argv])
        out, err = io.StringIO(), io.StringIO()
        d = run_command(
            args, WardenConfig(), self.directory, Clock(), out, err,
            civic_locations=self.store,
        )  # fmt: skip
        return self.successResultOf(d), out.getvalue(), err.getvalue()

    def test_set_and_clear(self) -> None:
        """The location is assigned, then cleared with ''."""
        self.assertEqual(self.ctl("1001", "--location", "lobby")[:2],
                         (0, "extension 1001 is at location lobby\n"))  # fmt: skip
        self.assertEqual(self.store.extensions, {"1001": "lobby"})
        self.assertEqual(self.ctl("1001", "--location", "")[0], 0)
        self.assertEqual(self.store.extensions, {})

    def test_refused(self) -> None:
        """An unknown location or extension is exit 1, nothing assigned."""
        code, _, err = self.ctl("1001", "--location", "nowhere")
        self.assertEqual(code, 1)
        self.assertIn("no location nowhere", err)
        code, _, err = self.ctl("1002", "--location", "lobby")
        self.assertEqual(code, 1)
        self.assertEqual(self.store.extensions, {})

    def test_with_other_changes(self) -> None:
        """--location with --name changes both."""
        self.assertEqual(self.ctl("1001", "--location", "lobby", "--name", "Al")[0], 0)
        self.assertEqual(self.store.extensions, {"1001": "lobby"})
        extension = self.successResultOf(self.directory.get_extension("1001"))
        self.assertEqual(extension.name, "Al")
