"""
The media engine as a plugin: provides ``media`` (an IMediaRelay), Warden's own
RTP relay or, with ``[media] engine = "rtpengine"``, rtpengine driven over its
ng control protocol (ADR 0025).
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import MappingProxyType
from typing import Any

from warden.config import MediaConfig, WardenConfig
from warden.errors import ConfigError
from warden.netutil import local_addresses
from warden.plugin import BuildContext, BuiltinPlugin
from warden.rtp import g711
from warden.rtp import udp as media_udp
from warden.rtp.music import MAX_MUSIC_SECONDS, HoldMusic, shipped_music, shipped_path
from warden.rtp.ng import parse_address
from warden.rtp.policy import MediaPolicy
from warden.rtp.procrelay import process_relay, spawn_media_process
from warden.rtp.relay import MediaRelay
from warden.rtp.rtpengine import RtpengineRelay


class MediaPlugin(BuiltinPlugin):
    """``[media]``: Warden's own RTP relay (L{warden.rtp.relay}) or rtpengine."""

    name = "media"
    description = "RTP relay: anchors every call's media, itself or in rtpengine ([media])"
    provides = ("media",)
    section_classes = MappingProxyType({"media": MediaConfig})

    def make(self, context: BuildContext) -> None:
        """Provide the relay as ``media``; Warden closes it when it stops."""
        config = context.config
        listen_udp = functools.partial(media_udp.listen_udp, context.reactor)
        if config.media.engine == "rtpengine":
            music = hold_music(config, context.config_path)  # checked, as for the relay
            context.provide(
                "media",
                RtpengineRelay(
                    context.reactor,
                    listen_udp,
                    parse_address(config.media.rtpengine_ng),
                    media_timeout=config.media.timeout,
                    hold_music=hold_music_path(config) if music is not None else None,
                ),
            )
            return
        if config.media.relay_process:
            # The built-in relay in a process of its own (ADR 0033).
            policy = media_policy(config)
            hold_music(config, context.config_path)  # a bad file fails here, at start-up
            context.provide(
                "media",
                process_relay(
                    context.reactor,
                    functools.partial(spawn_media_process, context.reactor),
                    process_settings(config, policy),
                    policy,
                    config.media.relay_processes,
                ),
            )
            return
        context.provide(
            "media",
            MediaRelay(
                context.reactor,
                listen_udp,
                media_address(config),
                port_range=(config.media.port_min, config.media.port_max),
                interface=config.media.address or config.sip.interface or "",
                media_timeout=config.media.timeout,
                policy=media_policy(config),
                hold_music=hold_music(config, context.config_path),
            ),
        )


def hold_music(config: WardenConfig, filename: str | None) -> HoldMusic | None:
    """
    ``[media] hold_music`` read: the shipped music, a WAV file's, or None.

    Raises:
        ConfigError: naming ``media.hold_music``, the file and what is wrong.
    """
    value = config.media.hold_music
    if not value:
        return None
    try:
        if value == "default":
            return HoldMusic(shipped_music())
        return HoldMusic(g711.read_wav(Path(value).read_bytes(), MAX_MUSIC_SECONDS))
    except OSError as e:
        raise ConfigError(
            "media.hold_music", f"cannot read {value}: {e.strerror or e}", filename
        ) from None
    except ValueError as e:  # not an 8 kHz mono 16-bit WAV, or too short
        raise ConfigError("media.hold_music", f"{value}: {e}", filename) from None


def hold_music_path(config: WardenConfig) -> str:
    """The absolute path of ``[media] hold_music``'s file (rtpengine reads it itself)."""
    value = config.media.hold_music
    return shipped_path() if value == "default" else str(Path(value).resolve())


def process_settings(config: WardenConfig, policy: MediaPolicy) -> dict[str, Any]:
    """The media process's ``configure`` settings (L{warden.rtp.mediaproc})."""
    media = config.media
    music = media.hold_music
    return {
        "address": media_address(config),
        "port_min": media.port_min,
        "port_max": media.port_max,
        "interface": media.address or config.sip.interface or "",
        "timeout": media.timeout,
        "latch": policy.latch,
        "destinations": policy.destinations,
        "latch_packets": policy.latch_packets,
        "own_addresses": sorted(str(a) for a in policy.own_addresses),
        "srtp": policy.srtp,
        "hold_music": music if music == "default" or not music else str(Path(music).resolve()),
    }


def media_policy(config: WardenConfig) -> MediaPolicy:
    """The relay's media rules; this host's addresses are never a destination."""
    media = config.media
    own = [media_address(config), media.address, config.sip.interface, *local_addresses()]
    return MediaPolicy(media.latch, media.destinations, media.latch_packets, own, media.srtp)


def media_address(config: WardenConfig) -> str:
    """
    The address the relay advertises: ``[media] address``, else the SIP interface,
    else this host's first non-loopback IPv4 address (127.0.0.1 when it has none).
    """
    if config.media.address:
        return config.media.address
    if config.sip.interface and config.sip.interface not in ("0.0.0.0", "::"):
        return config.sip.interface
    candidates = sorted(a for a in local_addresses() if "." in a and not a.startswith("127."))
    return candidates[0] if candidates else "127.0.0.1"


plugin = MediaPlugin()
