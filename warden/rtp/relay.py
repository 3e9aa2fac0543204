"""
The built-in media relay (L{warden.interfaces.IMediaRelay}).

``allocate(call_id)`` binds two RTP/RTCP port pairs, chosen at random from the
configured range (L{warden.rtp.ports}), on the media interface and returns a
L{warden.rtp.session.MediaSession}; see that module for how packets are relayed
and how each side latches to its phone (symmetric RTP, within the rules of
L{warden.rtp.policy.MediaPolicy}). A port that cannot be bound (taken by another program, or not
yet closed) is skipped and tried again later; when no pair can be had the
allocation fails with L{MediaError}. Sockets and ports are given back on every
path: release, a failed allocation, ``close()``.

While sessions exist a ``LoopingCall`` on the injected clock checks them every
``check_interval`` seconds: a session whose media stopped ``media_timeout``
seconds ago and that is not on hold has its ``on_timeout`` called, once. The same
tick exports the sessions' packet counters to Prometheus (counted per packet in
plain integers, exported in batches: the metrics lag by at most one interval).

Sockets come from an injected ``listen_udp(port, protocol, interface)``: the
reactor's ``listenUDP`` in production, a fake in tests.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from warden.interfaces import IMediaRelay, IMediaSession
from warden.model.media import SIDES, MediaSide
from warden.rtp import metrics
from warden.rtp.checks import SessionChecks
from warden.rtp.errors import MediaError
from warden.rtp.music import HoldMusic
from warden.rtp.policy import MediaPolicy
from warden.rtp.ports import PortPool
from warden.rtp.session import MediaSession, RelayProtocol, close_port

ListenUDP = Callable[[int, DatagramProtocol, str], IListeningPort]


@implementer(IMediaRelay)
class MediaRelay:
    """
    Relays RTP and RTCP between the two legs of each call.

    Args:
        clock: time for statistics, idleness and the timeout check.
        listen_udp: binds a UDP port, like ``reactor.listenUDP``.
        address: the media IP address written into SDP.
        port_range: lowest and highest port (inclusive) for RTP and RTCP.
        interface: the address to bind; default ``address`` (differs behind 1:1
            NAT, where ``address`` is the public one).
        media_timeout: seconds without RTP, off hold, before ``on_timeout``.
        check_interval: seconds between timeout checks.
        clock_rate: RTP timestamp rate assumed for payload types the SDP does not
            name (for jitter in milliseconds).
        policy: which media sources and destinations sessions accept; by default
            ``MediaPolicy()`` with ``address`` and ``interface`` as the relay's
            own addresses.
        choose_port: picks an index among the free port pairs (``secrets``;
            tests pass a deterministic one).
        hold_music: what a held phone hears (L{warden.rtp.music}); None: nothing.

    Raises:
        ValueError: ``address`` is not an IP address, or the range holds no pair.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        listen_udp: ListenUDP,
        address: str,
        port_range: tuple[int, int] = (10000, 20000),
        interface: str | None = None,
        media_timeout: float = 60.0,
        check_interval: float = 1.0,
        clock_rate: int = 8000,
        policy: MediaPolicy | None = None,
        choose_port: Callable[[int], int] = secrets.randbelow,
        hold_music: HoldMusic | None = None,
    ) -> None:
        ipaddress.ip_address(address)  # ValueError now rather than on the first call
        self.clock = clock
        self.address = address
        self.interface = address if interface is None else interface
        self.media_timeout = media_timeout
        self.check_interval = check_interval
        self.clock_rate = clock_rate
        self.policy = (
            policy if policy is not None else MediaPolicy(own_addresses=(address, self.interface))
        )
        self.pool = PortPool(*port_range, choose=choose_port)
        self.hold_music = hold_music
        self._listen_udp = listen_udp
        self._checks: SessionChecks[MediaSession] = SessionChecks(
            clock, check_interval, self._check, self.ports_in_use, "Media timeout check"
        )

    # -- IMediaRelay ------------------------------------------------------------------

    def allocate(self, call_id: str) -> defer.Deferred[IMediaSession]:
        """Bind sides a and b for ``call_id``; fails with MediaError when out of ports."""
        try:
            session = self._open(call_id)
        except MediaError as e:
            metrics.ALLOCATION_FAILURES.inc()
            return defer.fail(e)
        except Exception:
            # A socket error nobody foresaw: fail the Deferred, never raise.
            return defer.fail()
        return defer.succeed(session)

    def sessions(self) -> list[IMediaSession]:
        """Every session allocated and not released."""
        return list(self._checks)

    def ports_in_use(self) -> int:
        """UDP ports bound: RTP and RTCP of both sides, four per session."""
        return 2 * self.pool.in_use

    # -- life cycle --------------------------------------------------------------------

    def close(self) -> None:
        """Release every session (at shutdown)."""
        for session in self._checks:
            session.release()

    def forget(self, session: MediaSession) -> None:
        """Called by a session on release: give its ports back."""
        if not self._checks.discard(session):
            return
        for side in (session.side_a, session.side_b):
            self.pool.give_back(side.rtp_port)
        self._checks.changed()

    def flush_metrics(self) -> None:
        """Export every session's counters to Prometheus now (done each check_interval)."""
        for session in self._checks:
            session.flush_metrics()

    def _open(self, call_id: str) -> MediaSession:
        protocols = {
            (side, rtcp): RelayProtocol(side, rtcp) for side in SIDES for rtcp in (False, True)
        }
        taken: list[int] = []
        bound: list[IListeningPort] = []
        done = False
        try:
            for side in SIDES:
                port = self._bind_pair(protocols[side, False], protocols[side, True], bound)
                taken.append(port)
            done = True
        finally:
            if not done:
                for listening in bound:
                    close_port(listening)
                for rtp_port in taken:
                    self.pool.give_back(rtp_port)
        side_a, side_b = (MediaSide(self.address, port, port + 1) for port in taken)
        session = MediaSession(
            self, call_id, self.clock, side_a, side_b, protocols, bound, self.clock_rate,
            self.policy, self.hold_music,
        )  # fmt: skip
        self._checks.add(session)
        return session

    def _bind_pair(
        self, rtp: RelayProtocol, rtcp: RelayProtocol, bound: list[IListeningPort]
    ) -> int:
        """Take a free pair and bind it; requeue pairs that will not bind and go on."""
        for _ in range(max(self.pool.free, 1)):
            port = self.pool.take()  # MediaError when the range is exhausted
            pair: list[IListeningPort] = []
            try:
                pair.append(self._listen(port, rtp))
                pair.append(self._listen(port + 1, rtcp))
            except (OSError, CannotListenError) as e:
                metrics.BIND_FAILURES.inc()
                self.log.warn("Media port {port} not bound, skipped: {error}", port=port, error=e)
            finally:
                if len(pair) < 2:
                    for listening in pair:
                        close_port(listening)
                    self.pool.give_back(port)
            if len(pair) == 2:
                bound.extend(pair)
                return port
        raise MediaError(f"no media port pair could be bound on {self.interface}")

    def _listen(self, port: int, protocol: DatagramProtocol) -> IListeningPort:
        return self._listen_udp(port, protocol, self.interface)

    # -- media timeout -----------------------------------------------------------------

    def _check(self, session: MediaSession, now: float) -> None:
        session.flush_metrics()
        session.check_timeout(now, self.media_timeout)
