"""
A shared state (Redis) or a database (PostgreSQL, during a failover) that fails
or times out: RequestDispatcher answers the request 503 Service Unavailable with
Retry-After (RFC 3261 §21.5.4) instead of 500, and the next request, once the
backend answers again, succeeds.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_registrar import register
from warden.errors import StateUnavailable, StoreError, StoreUnavailable
from warden.model import Binding
from warden.sip.auth import answer_challenge
from warden.sip.message import Response
from warden.testing.memory import MemoryLocationService
from warden.testing.sipstack import REALM, FakeSipStack


class FlakyLocation(MemoryLocationService):
    """A location service that fails like an unreachable Redis while ``down``."""

    down = True
    error: type[StoreError] = StateUnavailable

    def bindings_for(self, aor: str, now: float) -> Deferred[list[Binding]]:
        if self.down:
            return defer.fail(self.error("bindings_for: no answer within 1 s"))
        return super().bindings_for(aor, now)

    def apply(
        self, aor: str, upserts: Sequence[Binding], removals: Sequence[str]
    ) -> Deferred[None]:
        if self.down:
            return defer.fail(self.error("apply: no answer within 1 s"))
        return super().apply(aor, upserts, removals)


class StateUnavailableTests(SynchronousTestCase):
    """REGISTER while the shared state is down, then back."""

    def setUp(self) -> None:
        self.stack = FakeSipStack()
        self.location = FlakyLocation()
        self.stack.registrar._location = self.location

    def authenticated_register(self, cseq: int) -> Response:
        (challenge,) = self.stack.send_udp(register(cseq=cseq, call_id=f"c{cseq}").to_bytes())
        assert isinstance(challenge, Response)
        self.assertEqual(challenge.status, 401)
        authz = answer_challenge(
            challenge.get_all("WWW-Authenticate")[0], "1001", "secret1001", "REGISTER",
            f"sip:{REALM}",
        )  # fmt: skip
        again = register(cseq=cseq + 1, call_id=f"c{cseq}", authorization=authz)
        (final,) = self.stack.send_udp(again.to_bytes())
        assert isinstance(final, Response)
        return final

    def test_503_with_retry_after_then_recovery(self) -> None:
        """Down: 503 with a Retry-After in seconds. Back: 200 and the binding stored."""
        response = self.authenticated_register(1)
        self.assertEqual((response.status, response.reason), (503, "Service Unavailable"))
        self.assertEqual(response.get("Retry-After"), "5")
        self.location.down = False
        response = self.authenticated_register(3)
        self.assertEqual(response.status, 200)
        bindings = self.successResultOf(self.location.bindings_for("1001", 0.0))
        self.assertEqual(len(bindings), 1)

    def test_database_unavailable_is_503_too(self) -> None:
        """
        The database out of reach after the store's retries (StoreUnavailable,
        as during a PostgreSQL failover): 503 with Retry-After, not 500.
        Another store error still is 500.
        """
        self.location.error = StoreUnavailable
        response = self.authenticated_register(1)
        self.assertEqual((response.status, response.reason), (503, "Service Unavailable"))
        self.assertEqual(response.get("Retry-After"), "5")
        self.location.error = StoreError
        response = self.authenticated_register(3)
        self.assertEqual(response.status, 500)
        self.flushLoggedErrors(StoreError)
