"""
SIP over TLS (RFC 3261 §26.2, RFC 5630): the TLS listener.

A TLS connection is a TCP stream connection (L{warden.sip.transport}) inside
Twisted's memory-BIO TLS, so it has the same Content-Length framing, size,
idle and message limits, and counts against the same per-IP connection cap
(``[sip] tcp_connections_per_ip`` covers TCP and TLS together). Messages on it
travel with transport ``tls``: Via ``SIP/2.0/TLS``, bindings ``tls:host:port``,
and requests for a phone registered over TLS go back on its own connection
(RFC 5923 connection reuse), so a phone behind a NAT receives them.

A connection must finish its handshake within ``[tls] handshake_timeout``
seconds or it is aborted (a slow or stalled handshake holds no slot for long).
The certificate comes from ``[tls]``, or is generated on first start; SIGHUP
reloads it for new connections while established ones keep theirs
(L{warden.tls.ReloadableContextFactory}).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs
from OpenSSL import SSL
from twisted.application import service
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IListeningPort
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from warden.reuseport import listen_reuseport
from warden.sip import metrics
from warden.sip.transport import SipStreamFactory, SipStreamProtocol, TransportHub
from warden.tls import ReloadableContextFactory, TlsPolicy, certificate_pair

#: Files of the certificate generated when ``[tls]`` names none (data directory).
CERT_FILE = "sip-tls-cert.pem"
KEY_FILE = "sip-tls-key.pem"


@attrs.frozen
class TlsSettings:
    """
    The SIP TLS listener's settings (``[tls]``).

    Attributes:
        certificate, private_key: PEM files; "" for a generated pair in ``data_dir``.
        data_dir: where a generated pair is kept.
        policy: protocol versions, ciphers and peer verification.
        handshake_timeout: seconds a handshake may take.
    """

    certificate: str = ""
    private_key: str = ""
    data_dir: str = "."
    policy: TlsPolicy = TlsPolicy()
    handshake_timeout: float = 10.0


@implementer(IHandshakeListener)
class SipTlsProtocol(SipStreamProtocol):
    """One SIP connection over TLS; aborted when its handshake is too slow."""

    log = Logger()
    transport_name = "tls"

    def __init__(
        self,
        hub: TransportHub,
        handshake_timeout: float,
        on_handshake_failed: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(hub)
        self.handshake_timeout = handshake_timeout
        self.handshake_done = False
        #: Told why (OpenSSL's error) when a handshake fails or times out
        #: (a connection Warden opened: L{warden.sip.stream_opener}).
        self.on_handshake_failed = on_handshake_failed
        self._why = ""
        self._handshake: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """Start the idle timer and the handshake deadline."""
        super().connectionMade()
        self._handshake = self.hub.clock.callLater(
            self.handshake_timeout, self._handshake_timed_out
        )

    def handshakeCompleted(self) -> None:
        """The handshake is done: stop its deadline."""
        self.handshake_done = True
        if self._handshake is not None and self._handshake.active():
            self._handshake.cancel()
        self._handshake = None

    def _handshake_timed_out(self) -> None:
        self._handshake = None
        metrics.TLS_HANDSHAKE_TIMEOUTS.inc()
        self._why = "no handshake in time"
        self.log.info(
            "Closing the TLS connection with {host}: no handshake within {seconds} s"
            " (tls.handshake_timeout)",
            host=self.peer[0],
            seconds=self.handshake_timeout,
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        """Count a failed handshake; forget the connection and its timers."""
        if self._handshake is not None and self._handshake.active():
            self._handshake.cancel()
        self._handshake = None
        if not self.handshake_done and reason.check(SSL.Error):
            metrics.TLS_HANDSHAKE_FAILURES.inc()
            self.log.debug(
                "TLS handshake with {host} failed: {error}",
                host=self.peer[0],
                error=str(reason.value),
            )
        if not self.handshake_done and self.on_handshake_failed is not None:
            # A refused certificate or name (service_identity), or the peer
            # closing before the handshake finished.
            self.on_handshake_failed(self._why or str(reason.value) or "connection closed")
        super().connectionLost(reason)


class SipTlsFactory(TLSMemoryBIOFactory):
    """
    TLS around L{SipTlsProtocol}; a connection past the per-IP cap is closed at
    once, before any TLS work.
    """

    def __init__(
        self,
        hub: TransportHub,
        context_factory: ReloadableContextFactory,
        handshake_timeout: float,
    ) -> None:
        super().__init__(context_factory, False, SipStreamFactory(hub))
        self.hub = hub
        self.handshake_timeout = handshake_timeout

    def buildProtocol(self, addr: Any) -> TLSMemoryBIOProtocol | None:  # type: ignore[override]
        """A TLS-wrapped SIP connection, or None past the per-IP limit."""
        if not self.hub.accepts_connection_from(getattr(addr, "host", "")):
            return None
        inner = SipTlsProtocol(self.hub, self.handshake_timeout)
        return TLSMemoryBIOProtocol(self, inner)


_log = Logger()


def sip_certificate_files(settings: TlsSettings, interface: str, clock: Any) -> tuple[str, str]:
    """
    The SIP TLS certificate and key: ``[tls]``'s pair, or the one generated
    in the data directory, made now if missing (and logged with its
    fingerprint). The worker supervisor makes it before starting its workers,
    so that they all serve the same one.
    """
    paths = (os.path.join(settings.data_dir, CERT_FILE), os.path.join(settings.data_dir, KEY_FILE))
    names = (interface,) if interface not in ("", "0.0.0.0", "::") else ()
    pair = certificate_pair(
        settings.certificate, settings.private_key, paths, clock, names, "Warden SIP"
    )
    if pair.generated:
        _log.warn(
            "[tls] names no certificate: generated a self-signed one, {path}, SHA-256"
            " fingerprint {fp}; phones that verify certificates need it installed"
            " or a certificate from a CA in [tls] certificate and private_key",
            path=pair.cert_path,
            fp=pair.generated,
        )
    return pair.cert_path, pair.key_path


class SipTlsService(service.Service):
    """
    Loads (or generates) the certificate and listens for SIP over TLS; SIGHUP
    reloads the certificate. A certificate that cannot be loaded, or a port that
    cannot be bound, stops Warden with exit status 1.

    Args:
        reactor: IReactorTCP and IReactorTime.
        hub: the SIP transport hub.
        settings: ``[tls]``.
        port: the TLS port; interface: the address to listen on ("" for all).
        install_signal: installs the SIGHUP reload callback (None: no signal).
        exit: ends the process (L{warden.process.process_exit}); None stops the reactor.
        shared_port: a SIP worker's (L{warden.workers}): the TLS port it also
            listens on with the other workers (``SO_REUSEPORT``); ``port`` is
            then its own. 0: none.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        hub: TransportHub,
        settings: TlsSettings,
        port: int,
        interface: str,
        install_signal: Callable[[Callable[[], None]], None] | None = None,
        exit: Callable[[int], None] | None = None,
        shared_port: int = 0,
    ) -> None:
        self._reactor = reactor
        self.hub = hub
        self.settings = settings
        self.port = port
        self.shared_port = shared_port
        self.shared: IListeningPort | None = None
        self.interface = interface
        self._install_signal = install_signal
        self._exit = exit
        self.context: ReloadableContextFactory | None = None
        self.listening: IListeningPort | None = None

    def certificate_files(self) -> tuple[str, str]:
        """The configured pair, or the generated one (made now if missing)."""
        return sip_certificate_files(self.settings, self.interface, self._reactor)

    def startService(self) -> None:
        """Load the certificate and listen."""
        super().startService()
        try:
            cert, key = self.certificate_files()
            self.context = ReloadableContextFactory(cert, key, "sip", self.settings.policy)
        except (OSError, ValueError, SSL.Error) as e:
            self._fail("the SIP TLS certificate cannot be used: {error}", str(e))
            return
        factory = SipTlsFactory(self.hub, self.context, self.settings.handshake_timeout)
        interface = self.interface or "0.0.0.0"
        try:
            self.listening = self._reactor.listenTCP(self.port, factory, interface=interface)
        except CannotListenError as e:
            key = "sip.worker_tls_port_base" if self.shared_port else "sip.tls_port"
            self._fail("SIP cannot listen for TLS: {error} (" + key + ")", str(e))
            return
        if self.shared_port:
            try:
                self.shared = listen_reuseport(self._reactor, interface, self.shared_port, factory)
            except OSError as e:
                self._fail("SIP cannot listen for TLS: {error} (sip.tls_port)", str(e))
                return
        self.log.info(
            "SIP listening on TLS {interface}:{port}; certificate {path}, SHA-256"
            " fingerprint {fp}",
            interface=self.interface or "*",
            port=f"{self.shared_port} and {self.bound_port()}"
            if self.shared
            else self.bound_port(),
            path=cert,
            fp=self.context.fingerprint,
        )
        if self._install_signal is not None:
            self._install_signal(self._reload_quietly)

    def _fail(self, text: str, error: str) -> None:
        self.log.critical("Warden could not start: " + text, error=error)
        if self._exit is not None:
            self._exit(1)
        else:
            self._reactor.stop()

    def reload(self) -> bool:
        """Re-read the certificate and key (SIGHUP) for the next connections."""
        return self.context is not None and self.context.reload()

    def _reload_quietly(self) -> None:
        self.reload()

    def bound_port(self) -> int:
        """The TLS port bound (the configured one before listening)."""
        if self.listening is None:
            return self.port
        return int(self.listening.getHost().port)  # type: ignore[attr-defined]

    def stopService(self) -> Any:
        """Stop listening; established connections close with the reactor."""
        super().stopService()
        shared, self.shared = self.shared, None
        if shared is not None:
            shared.stopListening()
        listening, self.listening = self.listening, None
        if listening is not None:
            return listening.stopListening()
        return None
