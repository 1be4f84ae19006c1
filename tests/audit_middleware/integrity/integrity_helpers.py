"""Helpers of the integrity tests (a module of its own: ``conftest`` is the root one's name)."""

from __future__ import annotations

import itertools
from typing import Any

from audit_middleware import SealerConfig
from auditevt import Action, Event, Timestamp

_numbers = itertools.count(1)

# Short: a test's late writer holds the horizon back on purpose; a pass gives up soon.
FAST = SealerConfig(settle=0.2, poll_interval=0.005)


def make_event(organization_id: int = 7, **overrides: Any) -> Event:
    number = next(_numbers)
    fields: dict[str, Any] = {
        "action": Action.UPDATE,
        "entity_type": "appointment",
        "entity_id": number,
        "user_id": 40 + number % 5,
        "organization_id": organization_id,
        "ip_address": "203.0.113.9",
        "user_agent": "pytest/8",
        "request_path": f"/appointments/{number}",
        "status_code": 200,
        "timestamp": Timestamp.parse("2026-12-01T07:08:09.123456789Z"),
        "changes": {"status": {"from": "booked", "to": "cancelled"}, "n": number},
    }
    fields.update(overrides)
    return Event(**fields)


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)
