"""``twistd warden-drtest``: restore a backup into scratch and prove it serves."""
