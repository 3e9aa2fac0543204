"""Warden: an IP-PBX on Twisted."""

__version__ = "0.1.0"
