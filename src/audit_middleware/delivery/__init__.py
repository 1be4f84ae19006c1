"""Delivery: the relay that forwards the outbox, split as processor, exporter and policy.

``OutboxRelay`` (the processor: claims, leases, scheduling, lifecycle) sends each batch with an
``Exporter`` (``TelemetryExporter`` for Telemetry's ``/v1/audit/ingest``), as a
``DeliveryPolicy`` says.
"""

from audit_middleware.delivery._command import relay_command
from audit_middleware.delivery._config import RelayConfig, RelayStats
from audit_middleware.delivery._exporter import Exporter, ExportFailure, ExportResult
from audit_middleware.delivery._policy import DeliveryPolicy
from audit_middleware.delivery._relay import OutboxRelay
from audit_middleware.delivery._telemetry import TelemetryExporter

__all__ = [
    "DeliveryPolicy",
    "ExportFailure",
    "ExportResult",
    "Exporter",
    "OutboxRelay",
    "RelayConfig",
    "RelayStats",
    "TelemetryExporter",
    "relay_command",
]
