"""
The SIP service as a plugin: transports, transaction layer, registrar and the
B2BUA (L{warden.sip.service}), from ``[sip]``, ``[registrar]``, ``[calls]`` and
``[dialplan]``.
"""

from __future__ import annotations

from types import MappingProxyType

from warden.cluster import SharedState
from warden.config import (
    CallsConfig,
    DialplanConfig,
    RegistrarConfig,
    SipConfig,
    TlsConfig,
    WardenConfig,
)
from warden.interfaces import (
    ICallHook,
    ICallRecordStore,
    IDirectory,
    ILiveCalls,
    ILocalApplication,
    ILocationService,
    IMediaRelay,
)
from warden.netutil import host_matcher, local_names
from warden.plugin import BuildContext, BuiltinPlugin
from warden.process import process_exit
from warden.sip.hooks import CallHooks
from warden.sip.registrar import ExpiryPolicy
from warden.sip.service import CallServices, SipService, SipSettings
from warden.sip.timers import TimerSettings
from warden.sip.tls import TlsSettings
from warden.tls import TlsPolicy, install_sighup


class SipPlugin(BuiltinPlugin):
    """The registrar and call server."""

    name = "sip"
    description = (
        "SIP registrar and B2BUA over UDP, TCP and TLS ([sip], [tls], [registrar], [calls])"
    )
    needs = ("directory", "location", "records", "live", "media")
    provides = ("sip",)
    section_classes = MappingProxyType(
        {
            "sip": SipConfig,
            "tls": TlsConfig,
            "registrar": RegistrarConfig,
            "calls": CallsConfig,
            "dialplan": DialplanConfig,
        }
    )

    def make(self, context: BuildContext) -> None:
        """Provide the SIP service as ``sip``; in a cluster it runs under the node."""
        config = context.config
        shared = context.optional("cluster", SharedState)
        names = local_names(config.server.domains, [config.sip.interface])
        sip = SipService(
            context.reactor,
            sip_settings(config),
            context.need("directory", IDirectory),
            context.need("location", ILocationService),
            host_matcher(names),
            CallServices(
                media=context.need("media", IMediaRelay),
                records=context.need("records", ICallRecordStore),
                live=context.need("live", ILiveCalls),
                counters=shared.counters if shared is not None else None,
                hooks=CallHooks(context.providers(ICallHook)),
                applications=tuple(context.providers(ILocalApplication)),
                listen_udp=context.listen_udp,
            ),
            cluster=shared.link(context.reactor) if shared is not None else None,
            install_signal=install_sighup(context.reactor),
            exit=process_exit(context.reactor),
        )
        if shared is None:
            context.add_service(sip)
        else:  # the SIP service starts once the node has joined the cluster
            node = shared.node_service(sip.nonces, sip.hop, sip.bound_port)
            context.add_service(node)
            context.add_service(sip, node)
        context.provide("sip", sip)


def sip_settings(config: WardenConfig) -> SipSettings:
    """The SIP service's settings from the configuration."""
    sip, reg = config.sip, config.registrar
    return SipSettings(
        interface=sip.interface,
        port=sip.port,
        transports=tuple(sip.transports),
        max_message_bytes=sip.max_message_bytes,
        udp_receive_buffer=sip.udp_receive_buffer,
        tcp_idle_timeout=sip.tcp_idle_timeout,
        tcp_message_timeout=sip.tcp_message_timeout,
        tcp_connections_per_ip=sip.tcp_connections_per_ip,
        timers=TimerSettings(t1=sip.t1, t2=sip.t2, t4=sip.t4).lasting_ring(
            config.calls.ring_timeout
        ),
        realm=config.realm,
        node_id=config.node_id,
        algorithms=tuple(reg.digest_algorithms),
        fips=config.security.fips,
        expiry=ExpiryPolicy(reg.min_expires, reg.default_expires, reg.max_expires),
        nonce_lifetime=reg.nonce_lifetime,
        auth_fail_limit=reg.auth_fail_limit,
        auth_fail_extension_limit=reg.auth_fail_extension_limit,
        accept_rfc2069=reg.accept_rfc2069,
        server_header=sip.server_header,
        nat=sip.nat,
        auth_fail_window=reg.auth_fail_window,
        auth_block_seconds=reg.auth_block_seconds,
        ring_timeout=config.calls.ring_timeout,
        max_calls_per_extension=config.calls.max_calls_per_extension,
        qualify_interval=config.calls.qualify_interval,
        dialplan=config.dialplan.rules,
        dialog_token_lifetime=config.cluster.dialog_token_lifetime,
        tls_port=sip.tls_port,
        tls=tls_settings(config),
        reuse_port=config.worker >= 0,
        worker_port=sip.worker_port_base + config.worker if config.worker >= 0 else 0,
        worker_ports=tuple(sip.worker_port_base + i for i in range(sip.workers))
        if config.worker >= 0
        else (),
        worker_tls_port=sip.worker_tls_base() + config.worker if config.worker >= 0 else 0,
    )


def tls_settings(config: WardenConfig) -> TlsSettings:
    """The SIP TLS listener's settings from ``[tls]``."""
    tls = config.tls
    return TlsSettings(
        certificate=tls.certificate,
        private_key=tls.private_key,
        data_dir=config.server.data_dir,
        policy=TlsPolicy(
            min_version=tls.min_version,
            ciphers=tls.ciphers,
            ca=tls.ca,
            fips=config.security.fips,
        ),
        handshake_timeout=tls.handshake_timeout,
    )


plugin = SipPlugin()
