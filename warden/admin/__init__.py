"""
The admin plugin: an HTTPS REST API (``/api/v1``), health endpoints, Prometheus
metrics, admin authentication (passwords, TOTP, sessions, API tokens) and the
audit log. Built by L{warden.admin.service.make_admin_service}.
"""
