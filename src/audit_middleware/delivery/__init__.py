"""Delivery: the relay that forwards the outbox to Telemetry's ``/v1/audit/ingest``."""

from audit_middleware.delivery._command import relay_command
from audit_middleware.delivery._config import RelayConfig, RelayStats
from audit_middleware.delivery._relay import OutboxRelay

__all__ = [
    "OutboxRelay",
    "RelayConfig",
    "RelayStats",
    "relay_command",
]
