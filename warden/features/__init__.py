"""
Warden's feature plugins (L{warden.interfaces.IWardenPlugin}), one module each,
found with ``twisted.plugin.getPlugins(IWardenPlugin, warden.features)``.
"""
