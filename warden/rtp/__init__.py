"""
Media: RTP/RTCP packets and statistics (``packet``), the built-in media relay
(``relay``, ``session``, ``ports``) and its metrics.
"""
