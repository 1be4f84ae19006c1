"""The canonical audit ``Event``: ``pkg/auditevt/event.go`` in Python, byte for byte."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    Strict,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from auditevt._gojson import encode_value, html_escape
from auditevt._jsonvalue import check_json_value, check_text
from auditevt._timestamp import Timestamp

__all__ = ["Action", "ActionContext", "Event", "Int64"]

_encode_basestring: Any = __import__("json").encoder.encode_basestring

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


_TEXT_FIELDS = ("entity_type", "ip_address", "user_agent", "request_path")


class Event(BaseModel):
    """One audited request, exactly as Go's ``auditevt.Event`` marshals it.

    ``to_json()`` writes the bytes Go's ``encoding/json`` writes for the same struct, and
    ``Event.model_validate_json()`` reads anything Go writes. Python-built events are held to a
    few extra rules that Go cannot express (a context id only with its context), while JSON is
    read as leniently as Go reads it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", use_enum_values=False)

    action: Action | Literal[""] = Field(
        description='CREATE, UPDATE or DELETE ("" is Go\'s zero value and is read, not built).'
    )
    entity_type: Annotated[str, Strict()] = Field(
        description="What was acted on: appointment, patient, form, ..."
    )
    entity_id: Int64 = Field(default=0, description="The entity's id; omitted from JSON when 0.")
    user_id: Int64 = Field(description="The authenticated actor.")
    organization_id: Int64 = Field(description="The tenant, from the authenticated session.")
    ip_address: Annotated[str, Strict()] = Field(description="The client IP address.")
    user_agent: Annotated[str, Strict()] = Field(description="The client's User-Agent header.")
    request_path: Annotated[str, Strict()] = Field(description="The request path.")
    status_code: Int64 = Field(description="The HTTP status the client was answered with.")
    timestamp: Timestamp = Field(
        description="When it happened: RFC 3339, nanoseconds, with the writer's UTC offset."
    )
    changes: Any = Field(
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

    @field_validator(*_TEXT_FIELDS)
    @classmethod
    def _valid_unicode(cls, value: str, info: ValidationInfo) -> str:
        return check_text(value, info.field_name or "")

    @field_validator("changes")
    @classmethod
    def _json_changes(cls, value: Any) -> Any:
        return None if value is None else check_json_value(value, "changes")

    @model_validator(mode="after")
    def _context_ids_match(self, info: ValidationInfo) -> Event:
        # Go writes whatever the struct holds, so JSON is read as is; Python code building an
        # event must pair each id with its context.
        if info.mode != "python":
            return self
        if self.break_glass_id is not None and self.action_context is not ActionContext.BREAK_GLASS:
            raise ValueError(
                f"break_glass_id={self.break_glass_id} needs action_context='break_glass', "
                f"not {self._context_text()!r}"
            )
        if (
            self.impersonation_id is not None
            and self.action_context is not ActionContext.IMPERSONATION
        ):
            raise ValueError(
                f"impersonation_id={self.impersonation_id} needs action_context='impersonation', "
                f"not {self._context_text()!r}"
            )
        return self

    def _context_text(self) -> str:
        return "" if self.action_context is None else self.action_context.value

    @model_serializer(mode="wrap")
    def _omit_empty(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        # In JSON mode follow Go's omitempty, so model_dump_json() is readable by Go too
        # (to_json() is the byte-exact writer).
        data: dict[str, Any] = handler(self)
        if info.mode_is_json():
            if not self.entity_id:
                data.pop("entity_id", None)
            for name in ("changes", "action_context", "break_glass_id", "impersonation_id"):
                if data.get(name) is None:
                    data.pop(name, None)
        return data

    def to_json(self) -> str:
        """The event as Go's ``encoding/json`` writes it: same fields, order and bytes."""
        enc = _encode_basestring
        text = f'{{"action":"{self.action}","entity_type":{enc(self.entity_type)}'
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
            text += f',"action_context":"{self.action_context.value}"'
        if self.break_glass_id is not None:
            text += f',"break_glass_id":{self.break_glass_id}'
        if self.impersonation_id is not None:
            text += f',"impersonation_id":{self.impersonation_id}'
        return text + "}"

    def to_json_bytes(self) -> bytes:
        """``to_json()`` encoded as UTF-8, ready to send."""
        return self.to_json().encode()
