"""
Qualify: OPTIONS keep-alives to the bindings of extensions that ask for it.

Every ``interval`` seconds Warden sends an OPTIONS request to each binding of an
extension with ``qualify`` on. Any response means the phone is reachable (and
keeps its NAT pinhole open, since the request goes to the address its REGISTER
came from); a transaction time-out (Timer F) or a transport failure marks the
binding unreachable. The call router skips unreachable bindings when it forks,
so a stale contact never swallows a call; the next answer marks it reachable
again. At most one OPTIONS per binding is in flight.
"""

from __future__ import annotations

from typing import Any

import attrs
from prometheus_client import Gauge
from twisted.internet import task
from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from warden.interfaces import IClientTransactionUser, IDirectory, ILocationService
from warden.model import Binding
from warden.sip.message import Response, out_of_dialog_request

# Up to this many qualified extensions a round reads their bindings one
# extension at a time (READ_BATCH reads in flight); past it, every binding in
# one read and keeps theirs.
BULK_READ = 2000
READ_BATCH = 100

UNREACHABLE = Gauge(
    "warden_registrar_unreachable_bindings", "Qualified bindings that stopped answering OPTIONS"
)


@attrs.define
class Health:
    """What qualify knows of one binding."""

    reachable: bool = True
    rtt: float | None = None
    checked_at: float = 0.0
    pending: bool = False


class Qualifier:
    """
    Args:
        clock: time source.
        transactions: the transaction layer (OPTIONS go through client transactions).
        location: the bindings.
        directory: which extensions have qualify on.
        addressing: how to reach a binding and what to put in Via.
        interval: seconds between rounds.
        domain: our domain, for From.
        node_id: this node's name: in a cluster each node qualifies the bindings
            registered through it (the others' phones may only be reachable
            through their node, which qualifies them).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        transactions: Any,
        location: ILocationService,
        directory: IDirectory,
        addressing: Any,
        interval: float,
        domain: str,
        node_id: str = "",
    ) -> None:
        self._clock = clock
        self._transactions = transactions
        self._location = location
        self._directory = directory
        self._addressing = addressing
        self.interval = interval
        self._domain = domain
        self._node_id = node_id
        self.health: dict[tuple[str, str], Health] = {}
        self._loop = task.LoopingCall(self.run_once)
        self._loop.clock = clock

    def start(self) -> None:
        """Start the periodic rounds."""
        d = self._loop.start(self.interval, now=False)
        d.addErrback(lambda f: self.log.failure("Qualify stopped", f))

    def stop(self) -> None:
        """Stop the rounds."""
        if self._loop.running:
            self._loop.stop()

    def is_reachable(self, binding: Binding) -> bool:
        """False only for a qualified binding that stopped answering."""
        health = self.health.get((binding.aor, binding.key))
        return health is None or health.reachable

    def run_once(self) -> Deferred[None]:
        """Ping every binding of every extension with qualify on."""
        return Deferred.fromCoroutine(self._run_once())

    async def _run_once(self) -> None:
        try:
            await self._round()
        except Exception:
            # The store may be back by the next round: a failed read must not end them.
            self.log.failure("Qualify round failed (next in {interval} s)", interval=self.interval)

    async def _round(self) -> None:
        now = self._clock.seconds()
        numbers = await self._directory.qualified_numbers()
        seen: set[tuple[str, str]] = set()
        for binding in await self._bindings_of(numbers, now):
            if self._node_id and binding.node_id not in ("", self._node_id):
                continue
            key = (binding.aor, binding.key)
            seen.add(key)
            health = self.health.setdefault(key, Health())
            if not health.pending:
                self._ping(binding, health)
        for key in set(self.health) - seen:
            del self.health[key]
        UNREACHABLE.set(sum(1 for h in self.health.values() if not h.reachable))

    async def _bindings_of(self, numbers: list[str], now: float) -> list[Binding]:
        """
        The bindings of the extensions ``numbers``: one read per extension, so
        a round costs what the qualified phones cost, however many others are
        registered (50,000 bindings read and decoded every round, by every
        worker, blocked Redis for everyone); past L{BULK_READ} extensions one
        read of every binding is cheaper.
        """
        if len(numbers) > BULK_READ:
            wanted = set(numbers)
            return [b for b in await self._location.all_bindings(now) if b.aor in wanted]
        found: list[Binding] = []
        for start in range(0, len(numbers), READ_BATCH):
            batch = numbers[start : start + READ_BATCH]
            reads = [self._location.bindings_for(number, now) for number in batch]
            try:
                answers = await gatherResults(reads, consumeErrors=True)
            except FirstError as error:
                error.subFailure.raiseException()
            for bindings in answers:
                found.extend(bindings)
        return found

    def _ping(self, binding: Binding, health: Health) -> None:
        flow = self._addressing.flow_for(binding)
        if flow is None:
            self.mark(binding, health, False, None)
            return
        request = out_of_dialog_request(
            "OPTIONS", binding.contact, flow.transport, self._addressing.via_for(flow),
            self._transactions.new_branch(), f"<sip:warden@{self._domain}>",
            f"<{binding.contact}>", self._domain,
        )  # fmt: skip
        health.pending = True
        self._transactions.send_request(
            request, flow, _Ping(self, binding, health, self._clock.seconds())
        )

    def mark(self, binding: Binding, health: Health, reachable: bool, rtt: float | None) -> None:
        """Record the outcome of one ping; log changes of state."""
        health.pending = False
        health.checked_at = self._clock.seconds()
        health.rtt = rtt
        if reachable != health.reachable:
            self.log.info(
                "Binding {contact} of {aor} is {state}",
                contact=binding.contact,
                aor=binding.aor,
                state="reachable again" if reachable else "unreachable",
            )
        health.reachable = reachable


@implementer(IClientTransactionUser)
class _Ping:
    """One OPTIONS in flight."""

    def __init__(
        self, qualifier: Qualifier, binding: Binding, health: Health, sent: float
    ) -> None:
        self.q = qualifier
        self.binding = binding
        self.health = health
        self.sent = sent
        self.done = False

    def response_received(self, transaction: Any, response: Response) -> None:
        if response.status >= 200 and not self.done:
            self.done = True
            rtt = self.q._clock.seconds() - self.sent
            self.q.mark(self.binding, self.health, True, rtt)

    def timed_out(self, transaction: Any) -> None:
        self._fail()

    def transport_failed(self, transaction: Any) -> None:
        self._fail()

    def _fail(self) -> None:
        if not self.done:
            self.done = True
            self.q.mark(self.binding, self.health, False, None)
