"""Field types and base models shared by the endpoint models.

Requests coming from the frontend are held to the strictest reading: unknown fields are
refused, integers must be JSON integers within int64, numbers must be finite, and text is
bounded. Responses ignore unknown fields so an older reader still reads a newer writer's answer.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

from annotated_types import GroupedMetadata
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, StringConstraints
from pydantic_core import ErrorDetails

from auditevt._event import INT64_MAX

__all__ = [
    "MAX_LABEL_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PATH_LENGTH",
    "CleanText",
    "Count",
    "FiniteFloat",
    "Label",
    "Name",
    "OrganizationId",
    "Payload",
    "Percent",
    "RequestPath",
    "Response",
    "TaggedPayload",
    "clean_text",
    "error_path",
    "first_duplicate",
    "unique_event_ids",
]

#: Longest identifier-like string (a feature name, an error code, an element id): 128 characters.
MAX_NAME_LENGTH = 128
#: Longest short label (a browser name, a version, a device model): 64 characters.
MAX_LABEL_LENGTH = 64
#: Longest page or request path: 2048 characters (what browsers and proxies reliably carry).
MAX_PATH_LENGTH = 2048

_SURROGATE = re.compile("[\ud800-\udfff]")
# Control characters other than tab, newline and carriage return have no place in a report.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(value: str) -> str:
    """Refuse lone surrogates and control characters other than tab, newline and CR."""
    if not value.isascii() and _SURROGATE.search(value) is not None:
        raise ValueError("text holds a lone surrogate, which is not valid Unicode")
    if _CONTROL.search(value) is not None:
        raise ValueError("text holds a control character")
    return value


Name = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=r"^[A-Za-z0-9_.:/-]+$"),
]
"""An identifier: 1 to 128 characters of ``A-Z a-z 0-9 _ . : / -`` (no spaces, no PII)."""


@dataclass(frozen=True)
class CleanText(GroupedMetadata):
    """``Annotated[str, CleanText(n)]``: a JSON string of 1 to ``n`` characters, then clean_text.

    The length is checked first, so a huge string is refused before it is scanned.
    """

    max_length: int

    def __iter__(self) -> Iterator[object]:
        yield Strict()
        yield StringConstraints(min_length=1, max_length=self.max_length)
        yield AfterValidator(clean_text)


Label = Annotated[str, CleanText(MAX_LABEL_LENGTH)]
"""A short human-readable label of 1 to 64 characters: ``Mobile Safari``, ``17.4.1``."""

RequestPath = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_PATH_LENGTH, pattern=r"^/[\x21-\x7e]*$"),
]
"""A path as the browser shows it, starting with ``/``, printable ASCII (percent-encoded)."""

OrganizationId = Annotated[int, Strict(), Field(ge=1, le=INT64_MAX)]
"""The tenant (a positive int64); the receiver checks it against the authenticated session."""

Count = Annotated[int, Strict(), Field(ge=0, le=INT64_MAX)]
"""A non-negative int64: a count, a byte total, a duration in milliseconds."""

FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A finite JSON number (NaN and the infinities are refused)."""

Percent = Annotated[float, Strict(), Field(ge=0.0, le=100.0, allow_inf_nan=False)]
"""A finite number from 0 to 100."""


class Payload(BaseModel):
    """Base of every frontend request: immutable, strict, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _tag_is_required(schema: dict[str, Any]) -> None:
    # A union member's ``type`` has a default for Python callers, but on the wire it picks the
    # member, so the model refuses JSON without it; make the schema say the same.
    required = schema.setdefault("required", [])
    if "type" not in required:
        required.insert(0, "type")


class TaggedPayload(Payload):
    """Base of a member of a union told apart by its ``type`` field."""

    model_config = ConfigDict(json_schema_extra=_tag_is_required)


class Response(BaseModel):
    """Base of every response: immutable; unknown fields ignored so newer servers stay readable."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)


SessionOrganizationId = Annotated[
    OrganizationId,
    Field(description="The tenant; Telemetry refuses it unless it is the session's organization."),
]
"""``organization_id`` of a frontend payload: the signed-in session's organization."""


class _HasEventId(Protocol):
    @property
    def event_id(self) -> uuid.UUID: ...


_Item = TypeVar("_Item", bound=_HasEventId)


def unique_event_ids(items: list[_Item]) -> list[_Item]:
    """Refuse a batch in which one ``event_id`` appears twice (an ``AfterValidator``)."""
    duplicate = first_duplicate(item.event_id for item in items)
    if duplicate is not None:
        raise ValueError(f"event_id {duplicate} appears more than once in one request")
    return items


def first_duplicate(values: Iterable[uuid.UUID | int | str]) -> uuid.UUID | int | str | None:
    """The first value seen twice, or None."""
    seen: set[uuid.UUID | int | str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


# pydantic names the union member it tried (``str-enum[Action]``, ``literal['']``) in the
# location; that is noise to someone looking for the field.
_UNION_MEMBER = re.compile(r"[a-z-]+\[.*\]")


def error_path(error: ErrorDetails) -> str:
    """A pydantic error location as a field path: ``events[3].event.user_id``."""
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _UNION_MEMBER.fullmatch(part) is not None:
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "(root)"
