"""``EventFilter``: which audit rows a listing or an export covers, parsed from a query string.

Every value is checked where it is parsed, and a bad one raises ``ValueError`` naming the
parameter and the value (the app answers 400 with that text). ``organization_id`` is refused
outright: the organization comes from the admin's session, never from the query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from audit_middleware.storage._tables import AUDIT_LOG
from auditevt import Action, ActionContext

__all__ = ["STATUS_CLASSES", "EventFilter"]

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
"""The ``status_class`` values a filter accepts."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_TEXT = 2048
_LOST_PLUS = re.compile(r" (\d\d:?\d\d)$")


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A conjunction of conditions on audit rows; ``None`` leaves a field unconstrained."""

    since: datetime | None = None
    """Events at or after this moment (timezone-aware)."""
    until: datetime | None = None
    """Events before this moment (timezone-aware)."""
    user_id: int | None = None
    """The actor."""
    entity_type: str | None = None
    """What was acted on, exactly (``patient``)."""
    entity_id: int | None = None
    """Which one."""
    action: Action | None = None
    """CREATE, UPDATE or DELETE."""
    action_context: ActionContext | None = None
    """normal (which includes events without a context), break_glass or impersonation."""
    status_class: str | None = None
    """The response's status class, ``1xx`` to ``5xx``."""
    path_prefix: str | None = None
    """The request path starts with this text (taken literally: ``%`` and ``_`` are not wild)."""

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise ValueError(f"{name}={value!r} must be a timezone-aware datetime")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(
                f"since={self.since.isoformat()} is after until={self.until.isoformat()}"
            )
        for name in ("user_id", "entity_id"):
            value = getattr(self, name)
            if value is not None and (
                type(value) is not int or not _INT64_MIN <= value <= _INT64_MAX
            ):
                raise ValueError(f"{name}={value!r} must be an int64")
        if self.status_class is not None and self.status_class not in STATUS_CLASSES:
            choices = ", ".join(STATUS_CLASSES)
            raise ValueError(f"status_class={self.status_class!r} must be one of {choices}")
        for name in ("entity_type", "path_prefix"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, str) or not value or len(value) > _MAX_TEXT
            ):
                raise ValueError(f"{name}={value!r} must be 1 to {_MAX_TEXT} characters")
        if self.action is not None and not isinstance(self.action, Action):
            raise TypeError(f"action={self.action!r} must be an Action")
        if self.action_context is not None and not isinstance(self.action_context, ActionContext):
            raise TypeError(f"action_context={self.action_context!r} must be an ActionContext")

    @classmethod
    def from_query(
        cls, query: Mapping[str, str], *, ignore: frozenset[str] = frozenset()
    ) -> EventFilter:
        """Parse query parameters; empty values count as absent; unknown names are refused.

        ``ignore`` names parameters that are not filters (``limit``, ``after``).
        """
        if "organization_id" in query:
            raise ValueError(
                "organization_id is not a filter: the organization comes from your session"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(query) - known - ignore)
        if unknown:
            raise ValueError(
                f"unknown parameter {unknown[0]}={query[unknown[0]]!r}; "
                f"filters are {', '.join(f.name for f in fields(cls))}"
            )
        given = {name: query[name].strip() for name in known if query.get(name, "").strip()}
        values: dict[str, Any] = {}
        for name, text in given.items():
            if name in ("since", "until"):
                values[name] = _moment(name, text)
            elif name in ("user_id", "entity_id"):
                values[name] = _integer(name, text)
            elif name == "action":
                values[name] = _choice(name, text.upper(), Action)
            elif name == "action_context":
                values[name] = _choice(name, text.lower(), ActionContext)
            elif name == "status_class":
                values[name] = text.lower()
            else:
                values[name] = text
        return cls(**values)

    def as_query(self) -> dict[str, str]:
        """The filter as query parameters (what ``from_query`` reads back), set fields only."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out

    def conditions(self, *, postgresql: bool) -> list[ColumnElement[bool]]:
        """SQL conditions on ``audit_log`` (the organization is not one of them)."""
        table = AUDIT_LOG.c
        out: list[ColumnElement[bool]] = []
        if self.since is not None:
            out.append(table.timestamp >= _when(self.since, postgresql))
        if self.until is not None:
            out.append(table.timestamp < _when(self.until, postgresql))
        if self.user_id is not None:
            out.append(table.user_id == self.user_id)
        if self.entity_type is not None:
            out.append(table.entity_type == self.entity_type)
        if self.entity_id is not None:
            out.append(table.entity_id == self.entity_id)
        if self.action is not None:
            out.append(table.action == self.action.value)
        if self.action_context is ActionContext.NORMAL:
            # An event without a context was an ordinary one.
            out.append(or_(table.action_context.is_(None), table.action_context == "normal"))
        elif self.action_context is not None:
            out.append(table.action_context == self.action_context.value)
        if self.status_class is not None:
            low = int(self.status_class[0]) * 100
            out.append(and_(table.status_code >= low, table.status_code < low + 100))
        if self.path_prefix is not None:
            out.append(table.request_path.startswith(self.path_prefix, autoescape=True))
        return out


def _when(moment: datetime, postgresql: bool) -> datetime:
    # SQLite keeps datetimes as UTC text without an offset (see AuditStore).
    return moment if postgresql else moment.astimezone(UTC)


def _moment(name: str, text: str) -> datetime:
    try:
        # An unencoded "+01:00" in a query string arrives as " 01:00".
        value = datetime.fromisoformat(_LOST_PLUS.sub(r"+\1", text))
    except ValueError:
        raise ValueError(
            f"{name}={text!r} is not an ISO 8601 time (e.g. 2024-05-01T09:00:00Z)"
        ) from None
    if value.tzinfo is None:
        # A browser's datetime-local field sends no offset: read it as UTC, as the page says.
        value = value.replace(tzinfo=UTC)
    return value


def _integer(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer") from None
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{name}={text!r} is outside int64")
    return value


def _choice(name: str, text: str, enum: type[Action] | type[ActionContext]) -> Any:
    try:
        return enum(text)
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise ValueError(f"{name}={text!r} must be one of {choices}") from None
