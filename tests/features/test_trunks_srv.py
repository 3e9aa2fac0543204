"""
Trunks whose host has several servers (RFC 3263, ADR 0034) on a memory
reactor and a fake resolver: a call moves to the next SRV target of the same
trunk on 503 or silence before the route's next trunk, REGISTER moves to the
next target when one does not answer, and the state shows the target in use.
"""

from __future__ import annotations

import random
from typing import Any

from tests.features.test_trunks import ITSP, PASSWORD, TrunkCallTestCase
from tests.sip.test_b2bua import only
from tests.sip.test_locate import FakeResolver, a, srv
from warden.features.trunk_config import parse_routes, parse_trunks
from warden.features.trunks import TrunkService
from warden.sip.locate import ServerLocator
from warden.sip.message import Request

FIRST = ("192.0.2.81", 5071)
SECOND = ("192.0.2.82", 5072)
SERVICE = "_sip._udp.pbx.itsp.test"


class SrvTrunkTests(TrunkCallTestCase):
    """Trunk ``pool`` (host pbx.itsp.test: two SRV targets), then the UDP trunk ``itsp``."""

    def configure(self, inbound: object = None, register: bool = False) -> None:
        records = [
            srv(SERVICE, 10, 0, FIRST[1], "one.itsp.test"),
            srv(SERVICE, 20, 0, SECOND[1], "two.itsp.test"),
            a("one.itsp.test", FIRST[0]),
            a("two.itsp.test", SECOND[0]),
        ]
        self.resolver = FakeResolver(records)
        pool: dict[str, Any] = {"name": "pool", "host": "pbx.itsp.test", "timeout": 2}
        if register:
            pool.update(username="acct", password_env="X")
        else:
            pool["register"] = False
        trunks = parse_trunks([pool, {"name": "itsp", "host": ITSP[0], "register": False}])
        routes = parse_routes(
            {"outbound": [{"pattern": "_9NXXNXXXXXX", "strip": 1, "prefix": "1",
                           "trunks": ["pool", "itsp"]}]}
        )  # fmt: skip
        locator = ServerLocator(self.resolver, random.Random(1))
        self.plugin.service = TrunkService(
            self.stack.clock, self.stack.sip, self.stack.directory, trunks,
            {"pool": PASSWORD}, routes, locator=locator,
        )  # fmt: skip
        self.service = self.plugin.service

    def start(self) -> None:
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def state(self) -> dict[str, Any]:
        return next(t for t in self.service.status() if t["name"] == "pool")

    def test_next_target_on_503(self) -> None:
        """
        The first target answers 503: the same call goes to the second target
        (Request-URI with the domain, no port), which becomes the one in use.
        """
        self.start()
        self.assertEqual(self.state()["target"], "one.itsp.test")
        mark = self.stack.mark()
        self.alice.call("95552345678")
        invite = only(self.stack.sent_since(mark), FIRST, "INVITE")
        assert isinstance(invite, Request)
        self.assertEqual(invite.uri_text, "sip:15552345678@pbx.itsp.test")
        sent = self.stack.deliver(self.itsp.answer(invite, 503), FIRST)
        second = only(sent, SECOND, "INVITE")
        assert isinstance(second, Request)
        self.assertEqual(second.uri_text, "sip:15552345678@pbx.itsp.test")
        state = self.state()
        self.assertEqual((state["target"], state["address"], state["port"]),
                         ("two.itsp.test", SECOND[0], SECOND[1]))  # fmt: skip
        self.assertEqual(state["targets"], ["192.0.2.81:5071", "192.0.2.82:5072"])

    def test_silence_then_next_trunk(self) -> None:
        """Neither target answers within the timeout: then the route's next trunk."""
        self.start()
        mark = self.stack.mark()
        self.alice.call("95552345678")
        only(self.stack.sent_since(mark), FIRST, "INVITE")
        self.stack.clock.advance(2.01)
        only(self.stack.sent_since(mark), SECOND, "INVITE")
        self.stack.clock.advance(2.01)
        only(self.stack.sent_since(mark), ITSP, "INVITE")

    def test_register_moves_to_next_target(self) -> None:
        """REGISTER that the first target never answers goes to the second (§4.3)."""
        self.configure(register=True)
        mark = self.stack.mark()
        self.start()
        only(self.stack.sent_since(mark), FIRST, "REGISTER")
        mark = self.stack.mark()
        self.stack.clock.advance(32.1)  # Timer F: 64 * T1
        register = only(self.stack.sent_since(mark), SECOND, "REGISTER")
        assert isinstance(register, Request)
        self.assertEqual(str(register.uri), "sip:pbx.itsp.test")
        self.assertEqual(self.state()["target"], "two.itsp.test")

    def test_inbound_from_any_target(self) -> None:
        """A call from the second target's address is the trunk's."""
        self.start()
        from warden.sip.flow import Flow

        found = self.service.trunk_at(Flow("udp", SECOND[0], 5060))
        assert found is not None
        self.assertEqual(found.config.name, "pool")

    def test_re_resolution_after_ttl(self) -> None:
        """The host is looked up again once its records' TTL (bounded) is over."""
        self.start()
        asked = len(self.resolver.asked)
        self.stack.clock.advance(299)
        self.assertEqual(len(self.resolver.asked), asked)
        self.stack.clock.advance(31)
        self.assertGreater(len(self.resolver.asked), asked)
