"""
``wardenctl``, Warden's command line, one module per area: ``main`` (parser,
extensions, call records, the entry point), ``calls``, ``cluster``, ``store``,
``admin``, ``backup`` (backup and restore) and ``audit`` (the audit log of every
command). ``python -m warden.ctl`` runs it as the ``wardenctl`` script does.
"""
