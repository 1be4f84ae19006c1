"""Do a row's column copies still say what its ``event_json`` says?

The row hash covers ``event_id`` and ``event_json`` only; the columns beside them (what the reader
filters and row-level security scopes on) are copies. An attacker who edits a copy, e.g. moves a
row to another organization by changing ``organization_id`` alone, is caught here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import ValidationError

from auditevt import Event

__all__ = ["COLUMNS", "column_mismatches"]

COLUMNS = tuple(Event.model_fields)  # every field has its column, in the struct's order
"""The columns compared with ``event_json``."""


def _pg_text(value: str, postgresql: bool) -> str:
    # PostgreSQL text cannot hold U+0000: the store writes U+FFFD in the copies.
    return value.replace("\x00", "\ufffd") if postgresql and "\x00" in value else value


def _pg_changes(changes: Any, postgresql: bool) -> Any:
    if changes is None or not postgresql:
        return changes
    encoded = json.dumps(changes, ensure_ascii=False, separators=(",", ":"))
    return json.loads(encoded.replace("\\u0000", "\\ufffd")) if "\\u0000" in encoded else changes


def _value(member: Any) -> Any:
    # Open enums: a known member or the text a newer peer sent.
    return member.value if isinstance(member, Enum) else member


def _expected(event: Event, postgresql: bool) -> dict[str, Any]:
    action = event.action
    return {
        "action": _value(action),
        "entity_type": _pg_text(event.entity_type, postgresql),
        "entity_id": event.entity_id,
        "user_id": event.user_id,
        "organization_id": event.organization_id,
        "ip_address": _pg_text(event.ip_address, postgresql),
        "user_agent": _pg_text(event.user_agent, postgresql),
        "request_path": _pg_text(event.request_path, postgresql),
        "status_code": event.status_code,
        "timestamp": event.timestamp.to_datetime().astimezone(UTC),
        "changes": _pg_changes(event.changes, postgresql),
        "action_context": _value(event.action_context),
        "break_glass_id": event.break_glass_id,
        "impersonation_id": event.impersonation_id,
    }


def parse_event(event_json: str) -> Event | str:
    """The event in ``event_json``, or why it is not one."""
    try:
        return Event.model_validate_json(event_json)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        return f"event_json is not a valid Event ({first['msg']})"


def column_mismatches(event: Event, row: Any, postgresql: bool) -> list[str]:
    """The columns of ``row`` that disagree with ``event``, as ``name (column X, event Y)``.

    ``row`` has the :data:`COLUMNS` as attributes (a SQLAlchemy ``Row``). The common case, every
    copy equal, costs one comparison per column; the expected values are built only otherwise.
    """
    action = event.action
    timestamp = row.timestamp
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)  # SQLite keeps UTC without an offset
    if (
        row.entity_id == event.entity_id
        and row.user_id == event.user_id
        and row.organization_id == event.organization_id
        and row.status_code == event.status_code
        and row.entity_type == event.entity_type
        and row.ip_address == event.ip_address
        and row.user_agent == event.user_agent
        and row.request_path == event.request_path
        and row.action == _value(action)
        and row.action_context == _value(event.action_context)
        and row.break_glass_id == event.break_glass_id
        and row.impersonation_id == event.impersonation_id
        and timestamp == event.timestamp.to_datetime()
        and row.changes == event.changes
    ):
        return []
    found = []
    for name, expected in _expected(event, postgresql).items():
        actual = getattr(row, name)
        if isinstance(actual, datetime) and actual.tzinfo is None:
            actual = actual.replace(tzinfo=UTC)
        if actual != expected:
            found.append(f"{name} (column {actual!r}, event_json {expected!r})")
    return found
