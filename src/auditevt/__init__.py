"""auditevt: the audit event contract shared by the Core API and Telemetry.

Depends on pydantic alone. ``Event.to_json()`` writes exactly what Go's ``encoding/json``
writes for ``pkg/auditevt/event.go``, and ``Event.model_validate_json()`` reads it back.
"""

from auditevt.__version__ import CONTRACT_VERSION, __version__
from auditevt._event import Action, ActionContext, Event, Int64
from auditevt._timestamp import Timestamp

__all__ = [
    "CONTRACT_VERSION",
    "Action",
    "ActionContext",
    "Event",
    "Int64",
    "Timestamp",
    "__version__",
]
