"""
Warden's operations tools, installed as ``warden.ops``.

``warden.ops.loadtest`` is ``twistd warden-loadtest`` (a SIP/RTP load generator)
and ``warden.ops.drtest`` is ``twistd warden-drtest`` (backup restore drills).
They reuse ``warden.sip``, ``warden.rtp`` and ``warden.store`` rather than copy them.
"""
