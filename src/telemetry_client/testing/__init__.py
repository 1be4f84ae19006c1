"""A Telemetry stand-in for local runs and tests: ``TelemetryStandIn``.

A real Starlette app serving every Telemetry endpoint by the contract, deduplicating audit
ingest by ``event_id``, computing bandwidth statistics from the heartbeats it received, and
failing on purpose when told to (``FaultInjection``)::

    standin = TelemetryStandIn(FaultInjection(failure_rate=0.3, seed=1))
    with standin.serve() as url:          # real HTTP on loopback
        ...                               # point the code under test at url
    assert len(standin.event_ids()) == n

Needs starlette and uvicorn: ``pip install 'auditevt[demo]'``.
"""

try:
    import starlette as _starlette  # noqa: F401
    import uvicorn as _uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        f"telemetry_client.testing needs starlette and uvicorn ({exc.name} is missing): "
        "pip install 'auditevt[demo]'"
    ) from exc

from telemetry_client.testing._app import EventCheck
from telemetry_client.testing._command import serve_forever, telemetry_command
from telemetry_client.testing._faults import Fault, FaultInjection
from telemetry_client.testing._inject import InjectedDisconnect
from telemetry_client.testing._server import serve_asgi
from telemetry_client.testing._standin import (
    DEFAULT_MAX_BODY_BYTES,
    TelemetryStandIn,
    standard_event_check,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "EventCheck",
    "Fault",
    "FaultInjection",
    "InjectedDisconnect",
    "TelemetryStandIn",
    "serve_asgi",
    "serve_forever",
    "standard_event_check",
    "telemetry_command",
]
