"""The canonical audit ``Event``: ``pkg/auditevt/event.go`` in Python, byte for byte."""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
)

from auditevt._gojson import encode_value, html_escape
from auditevt._jsonvalue import GoString, JsonValue
from auditevt._timestamp import Timestamp

__all__ = ["Action", "ActionContext", "Event", "Int64"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Int64 = Annotated[int, Strict(), Field(ge=INT64_MIN, le=INT64_MAX)]
"""A Go ``int64``: a JSON integer (never a string, float or bool) within 64 bits."""


class Action(enum.StrEnum):
    """What the audited request did to its entity."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


class ActionContext(enum.StrEnum):
    """Why an action was allowed: ordinarily, by breaking the glass, or while impersonating."""

    NORMAL = "normal"
    BREAK_GLASS = "break_glass"
    IMPERSONATION = "impersonation"


# The C string encoder of the json module: escapes exactly as Go 1.22+ does, except for the
# five characters html_escape() handles.
_encode_basestring: Any = json.encoder.encode_basestring
_CONTEXT_OF_ID = {
    "break_glass_id": ActionContext.BREAK_GLASS,
    "impersonation_id": ActionContext.IMPERSONATION,
}


class Event(BaseModel):
    """One audited request, exactly as Go's ``auditevt.Event`` marshals it.

    ``to_json()`` writes the bytes Go's ``encoding/json`` writes for the same struct, and
    ``Event.model_validate_json()`` reads anything Go writes. Python-built events are held to a
    few extra rules that Go cannot express (a context id only with its context), while JSON is
    read as leniently as Go reads it.
    """

    # Unknown fields are ignored, as Go ignores them, so an older reader reads a newer writer.
    # Only keys are worth interning: values such as paths and user agents rarely repeat.
    model_config = ConfigDict(frozen=True, extra="ignore", cache_strings="keys")

    # A Literal of the members (not the enum type) gives the members back and is validated
    # faster; "" is Go's zero value.
    action: Literal[Action.CREATE, Action.UPDATE, Action.DELETE, ""] = Field(
        description='CREATE, UPDATE or DELETE ("" is Go\'s zero value and is read, not built).'
    )
    entity_type: GoString = Field(description="What was acted on: appointment, patient, form, ...")
    entity_id: Int64 = Field(default=0, description="The entity's id; omitted from JSON when 0.")
    user_id: Int64 = Field(description="The authenticated actor.")
    organization_id: Int64 = Field(description="The tenant, from the authenticated session.")
    ip_address: GoString = Field(description="The client IP address.")
    user_agent: GoString = Field(description="The client's User-Agent header.")
    request_path: GoString = Field(description="The request path.")
    status_code: Int64 = Field(description="The HTTP status the client was answered with.")
    timestamp: Timestamp = Field(
        description="When it happened: RFC 3339, nanoseconds, with the writer's UTC offset."
    )
    changes: JsonValue = Field(
        default=None,
        description="Any JSON value the handler reported (null is omitted, {} and false kept).",
    )
    action_context: ActionContext | None = Field(
        default=None, description='normal, break_glass or impersonation; omitted when "".'
    )
    break_glass_id: Int64 | None = Field(
        default=None, description="The break-glass grant; omitted when absent (0 is kept)."
    )
    impersonation_id: Int64 | None = Field(
        default=None, description="The impersonation session; omitted when absent (0 is kept)."
    )

    @field_validator("action_context", mode="before")
    @classmethod
    def _empty_context_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("break_glass_id", "impersonation_id")
    @classmethod
    def _id_matches_context(cls, value: int | None, info: ValidationInfo) -> int | None:
        # Go writes whatever the struct holds, so JSON is read as is; Python code building an
        # event must pair each id with its context. Runs only when the id is given.
        if value is None or info.mode != "python":
            return value
        wanted = _CONTEXT_OF_ID[info.field_name or ""]
        context = info.data.get("action_context")
        if context is not wanted:
            given = "" if context is None else context.value
            raise ValueError(
                f"{info.field_name}={value} needs action_context={wanted.value!r}, not {given!r}"
            )
        return value

    def to_json(self) -> str:
        """The event as Go's ``encoding/json`` writes it: same fields, order and bytes."""
        # Written by hand: measurably faster than model_dump_json plus the fix-ups Go needs.
        enc = _encode_basestring
        text = '{"action":"' + self.action + '","entity_type":' + enc(self.entity_type)
        if self.entity_id:
            text += f',"entity_id":{self.entity_id}'
        text += (
            f',"user_id":{self.user_id},"organization_id":{self.organization_id}'
            f',"ip_address":{enc(self.ip_address)},"user_agent":{enc(self.user_agent)}'
            f',"request_path":{enc(self.request_path)},"status_code":{self.status_code}'
            f',"timestamp":"{self.timestamp.isoformat()}"'
        )
        text = html_escape(text)
        if self.changes is not None:
            text += ',"changes":' + encode_value(self.changes)
        if self.action_context is not None:
            text += ',"action_context":"' + self.action_context + '"'
        if self.break_glass_id is not None:
            text += f',"break_glass_id":{self.break_glass_id}'
        if self.impersonation_id is not None:
            text += f',"impersonation_id":{self.impersonation_id}'
        return text + "}"

    def to_json_bytes(self) -> bytes:
        """``to_json()`` encoded as UTF-8, ready to send."""
        return self.to_json().encode()
