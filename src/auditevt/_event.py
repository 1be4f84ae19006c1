"""The canonical audit ``Event``: ``pkg/auditevt/event.go`` in Python, byte for byte."""

from __future__ import annotations

import contextlib
import enum
import json
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.config import ExtraValues
from pydantic_core import PydanticCustomError

from auditevt._gojson import encode_value, html_escape
from auditevt._gokeys import field_of, go_fields, may_hold_negative_zero, nesting
from auditevt._jsonvalue import MAX_CHANGES_DEPTH, ZERO_SEEN, GoString, JsonValue, too_deep
from auditevt._openenum import open_enum
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
# Known values, as JSON strings (no escaping needed), so to_json() skips the encoder for them.
_SPELLED = {value: f'"{value}"' for value in [*Action, *ActionContext, ""]}
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

    # Go's struct holds any string; a newer Core API may send an action this version does not
    # know, and every reader must still read and forward it unchanged.
    action: Annotated[Action | str, open_enum(Action, "")] = Field(
        description="CREATE, UPDATE or DELETE when built in Python; any string when read "
        '(an Action member when known, else the plain string; "" is Go\'s zero value).'
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
    action_context: Annotated[ActionContext | str, open_enum(ActionContext)] | None = Field(
        default=None,
        description="normal, break_glass or impersonation when built in Python; any string "
        'when read (an ActionContext member when known); omitted when "".',
    )
    break_glass_id: Int64 | None = Field(
        default=None, description="The break-glass grant; omitted when absent (0 is kept)."
    )
    impersonation_id: Int64 | None = Field(
        default=None, description="The impersonation session; omitted when absent (0 is kept)."
    )

    @field_validator("action_context", mode="before")
    @classmethod
    def _empty_context_is_none(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.mode == "json":
            # Go leaves the string as it was, which only the whole object tells:
            # model_validate_json reads it so, and spells a lone null as Go's "".
            raise PydanticCustomError(
                "string_type", "null is not a string; Go keeps the value it had before"
            )
        return None if value == "" else value

    @classmethod
    def model_validate_json(
        cls,
        json_data: str | bytes | bytearray,
        *,
        strict: bool | None = None,
        extra: ExtraValues | None = None,
        context: Any | None = None,
        by_alias: bool | None = None,
        by_name: bool | None = None,
    ) -> Self:
        """Read JSON exactly as Go's ``encoding/json`` reads it into ``auditevt.Event``.

        Keys match a field exactly, else case-insensitively with Go's Unicode folding, and
        the last match wins; ``null`` leaves a non-pointer field as it was; ``-0`` in
        ``changes`` is a negative zero. Text of exact, unique keys (what Go writes) is read
        in one pass; anything else is first rewritten to that form.
        """
        if strict is None and extra is None and context is None and by_alias is by_name is None:
            event: Self | None = None
            try:
                # An unknown key may be a field spelled in another case: forbidden here, so
                # that such text takes the slow path below, as does a null action_context.
                if cls is Event:
                    event = _validate_event_json(json_data, extra="forbid")
                else:
                    event = cls.__pydantic_validator__.validate_json(json_data, extra="forbid")
            except ValidationError as exc:
                if _only_foreign_keys(exc):
                    # Keys that match no field even folded (a newer writer's): Go ignores
                    # them, and so does a second pass, cheaper than the slow path.
                    with contextlib.suppress(ValidationError):
                        event = cls.__pydantic_validator__.validate_json(json_data)
            if event is not None:
                if not ZERO_SEEN.get():
                    return event
                ZERO_SEEN.set(False)
                if not may_hold_negative_zero(json_data):
                    return event
        validator = cls.__pydantic_validator__
        options: dict[str, Any] = {
            "strict": strict,
            "extra": extra,
            "context": context,
            "by_alias": by_alias,
            "by_name": by_name,
        }
        text = json_data if isinstance(json_data, str) else _decode(json_data)
        fields = None if text is None else go_fields(text)
        if fields is None:
            # Not one JSON object (or not UTF-8): pydantic's own reading gives the error.
            result: Self = validator.validate_json(json_data, **options)
            return result
        changes = fields.get("changes")
        if changes is not None and nesting(changes) > MAX_CHANGES_DEPTH:
            # Deeper than pydantic's JSON parser goes: say which field, not just "recursion".
            raise ValidationError.from_exception_data(
                cls.__name__,
                [{"type": too_deep("changes"), "loc": ("changes",), "input": changes[:40]}],
            )
        canonical = "{" + ",".join(f'"{name}":{raw}' for name, raw in fields.items()) + "}"
        result = validator.validate_json(canonical, **options)
        return result

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
            given = "" if context is None else str(context)
            raise ValueError(
                f"{info.field_name}={value} needs action_context={wanted.value!r}, not {given!r}"
            )
        return value

    def to_json(self) -> str:
        """The event as Go's ``encoding/json`` writes it: same fields, order and bytes."""
        # Written by hand: measurably faster than model_dump_json plus the fix-ups Go needs.
        enc = _encode_basestring
        action = self.action
        text = (
            '{"action":'
            + (_SPELLED.get(action) or enc(action))
            + ',"entity_type":'
            + enc(self.entity_type)
        )
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
        context = self.action_context
        if context is not None:
            text += ',"action_context":' + (_SPELLED.get(context) or html_escape(enc(context)))
        if self.break_glass_id is not None:
            text += f',"break_glass_id":{self.break_glass_id}'
        if self.impersonation_id is not None:
            text += f',"impersonation_id":{self.impersonation_id}'
        return text + "}"

    def to_json_bytes(self) -> bytes:
        """``to_json()`` encoded as UTF-8, ready to send."""
        return self.to_json().encode()


# Bound once: looking the validator up on the class for every event costs measurably more.
_validate_event_json = Event.__pydantic_validator__.validate_json


def _only_foreign_keys(exc: ValidationError) -> bool:
    """True when every error is a key that no field matches, exactly or folded."""
    return all(
        error["type"] == "extra_forbidden" and field_of(str(error["loc"][0])) is None
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    )


def _decode(data: bytes | bytearray) -> str | None:
    try:
        return bytes(data).decode()
    except UnicodeDecodeError:
        return None
