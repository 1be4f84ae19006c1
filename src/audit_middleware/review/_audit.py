"""Reads of the audit log are audited: the event each listing, view, export and review writes.

The contract knows three actions (CREATE, UPDATE, DELETE), all of them changes; a read of the
audit log is recorded as the CREATE of an ``audit_access`` entity (the access record), whose
``changes`` say what was read: ``{"operation": "list" | "view" | "export" | "queue",
"filter": {...}, ...}``. A review is the CREATE of an ``audit_review`` entity whose id is the
review's. These are written with ``AuditStore.write``, so they get an outbox row and reach
Telemetry like every other event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from audit_middleware.request._client_ip import TrustedProxies, resolve_client_ip
from audit_middleware.storage._store import AuditStore
from auditevt import Action, Event, Timestamp

__all__ = ["ACCESS_ENTITY", "REVIEW_ENTITY", "Admin", "AccessAuditor"]


@dataclass(frozen=True, slots=True)
class Admin:
    """The authenticated admin of one request, as the app's resolvers described them."""

    organization_id: int
    """Their organization: the only one they see."""
    user_id: int
    """Their user id: the actor of the access events, the reviewer of their reviews."""
    may_review: bool
    """Whether they may record reviews."""


ACCESS_ENTITY = "audit_access"
"""``entity_type`` of the event a read of the audit log writes."""
REVIEW_ENTITY = "audit_review"
"""``entity_type`` of the event a recorded review writes."""


class AccessAuditor:
    """Writes the access events through ``store``."""

    def __init__(self, store: AuditStore, trusted_proxies: TrustedProxies) -> None:
        self._store = store
        self._trusted = trusted_proxies

    async def write(
        self,
        request: Request,
        admin: Admin,
        *,
        changes: dict[str, Any],
        entity_type: str = ACCESS_ENTITY,
        entity_id: int = 0,
        status_code: int = 200,
    ) -> None:
        """Write one access event for ``request`` by ``admin`` (raises ``StoreError``)."""
        forwarded = request.headers.getlist("x-forwarded-for")
        event = Event(
            action=Action.CREATE,
            entity_type=entity_type,
            entity_id=entity_id,
            user_id=admin.user_id,
            organization_id=admin.organization_id,
            ip_address=resolve_client_ip(request.scope.get("client"), forwarded, self._trusted),
            user_agent=request.headers.get("user-agent", "")[:1024],
            request_path=request.url.path,
            status_code=status_code,
            timestamp=Timestamp.now(),
            changes=changes,
        )
        await self._store.write(event)
