"""Alembic migrations for ``audit_log`` and ``audit_outbox``; apply them with ``migrate()``."""
