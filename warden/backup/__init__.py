"""
Backups of a Warden installation: ``wardenctl backup`` and ``restore``, the
scheduled backup service, and the signed, optionally encrypted archive format.

``twistd warden-drtest`` (L{warden.ops.drtest}) restores these backups into scratch
and proves they serve; the product itself never imports the drill.
"""
