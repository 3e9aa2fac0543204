"""``twistd warden-loadtest``: a SIP/RTP load generator with pass/fail criteria."""
