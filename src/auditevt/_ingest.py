"""The ``POST /v1/audit/ingest`` envelope, version 1.

The Event JSON stays byte-identical to Go's; delivery metadata lives around it::

    {"events": [{"event_id": "<UUID>", "event": {...Event...}}, ...]}      1 to 500 items
    {"results": [{"event_id": "<UUID>", "status": "accepted"|"duplicate"|"rejected",
                  "error": "<only when rejected>"}, ...]}                  one per item, in order

``event_id`` is minted once, when the audit row is written, and is the idempotency key: the
receiver answers ``duplicate`` for an id it already stored, and the sender treats ``accepted``
and ``duplicate`` alike as delivered. ``rejected`` is permanent for that event.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from auditevt._event import Event
from auditevt._fields import error_path, unique_event_ids
from auditevt._gokeys import array_elements, object_members

__all__ = [
    "MAX_INGEST_ERROR_LENGTH",
    "MAX_INGEST_ITEMS",
    "IngestItem",
    "IngestRequest",
    "IngestResponse",
    "IngestResult",
    "IngestStatus",
    "ingest_envelope_json",
    "parse_ingest_request",
]

#: Most events in one ingest request.
MAX_INGEST_ITEMS = 500
#: Longest ``error`` text of a rejected result, in characters.
MAX_INGEST_ERROR_LENGTH = 4096

# The envelope ignores unknown keys so a later minor version may add optional metadata.
_ENVELOPE_CONFIG = ConfigDict(frozen=True, extra="ignore")


class IngestStatus(enum.StrEnum):
    """What the receiver did with one event."""

    ACCEPTED = "accepted"
    """Stored now."""
    DUPLICATE = "duplicate"
    """Already stored earlier under the same ``event_id``: delivered, nothing changed."""
    REJECTED = "rejected"
    """Never storable as sent (``error`` says why); retrying it cannot help."""


class IngestItem(BaseModel):
    """One event and its idempotency key."""

    model_config = _ENVELOPE_CONFIG

    event_id: uuid.UUID = Field(description="Minted once when the audit row is written.")
    event: Event = Field(description="The audit event, byte-identical to Go's encoding.")


class IngestRequest(BaseModel):
    """The body of ``POST /v1/audit/ingest``: 1 to 500 events with unique ``event_id``."""

    model_config = _ENVELOPE_CONFIG

    events: Annotated[list[IngestItem], AfterValidator(unique_event_ids)] = Field(
        min_length=1, max_length=MAX_INGEST_ITEMS
    )

    def to_json(self) -> str:
        """The envelope, with each event written by ``Event.to_json()`` (Go's bytes)."""
        return ingest_envelope_json((item.event_id, item.event.to_json()) for item in self.events)


def ingest_envelope_json(items: Iterable[tuple[uuid.UUID, str]]) -> str:
    """The ingest envelope from ``(event_id, canonical Event JSON)`` pairs.

    The event text is embedded verbatim (a relay holds Go-exact JSON and must not re-parse
    it), so only cheap checks are made: 1 to 500 items, unique ids, and text that is a JSON
    object on its face.
    """
    parts: list[str] = []
    seen: set[uuid.UUID] = set()
    for event_id, text in items:
        if not isinstance(event_id, uuid.UUID):
            raise TypeError(f"event_id must be a uuid.UUID, not {type(event_id).__name__}")
        if not isinstance(text, str):
            raise TypeError(f"event {event_id}: JSON must be a str, not {type(text).__name__}")
        if text[:1] != "{" or text[-1:] != "}":
            raise ValueError(f"event {event_id}: JSON {text[:40]!r} is not a JSON object")
        if event_id in seen:
            raise ValueError(f"event_id {event_id} appears more than once in one request")
        seen.add(event_id)
        parts.append(f'{{"event_id":"{event_id}","event":{text}}}')
    if not 1 <= len(parts) <= MAX_INGEST_ITEMS:
        raise ValueError(
            f"an ingest request holds 1 to {MAX_INGEST_ITEMS} events, not {len(parts)}"
        )
    return '{"events":[' + ",".join(parts) + "]}"


class IngestResult(BaseModel):
    """The receiver's answer for one event."""

    model_config = _ENVELOPE_CONFIG

    event_id: uuid.UUID
    status: IngestStatus
    error: Annotated[str, StringConstraints(min_length=1, max_length=MAX_INGEST_ERROR_LENGTH)] | (
        None
    ) = Field(default=None, description="Why it was rejected; present only when rejected.")

    @model_validator(mode="after")
    def _error_iff_rejected(self) -> IngestResult:
        if self.status is IngestStatus.REJECTED and self.error is None:
            raise ValueError(f"event {self.event_id}: a rejected result needs an error")
        if self.status is not IngestStatus.REJECTED and self.error is not None:
            raise ValueError(
                f"event {self.event_id}: only a rejected result has an error, "
                f"not a {self.status.value} one"
            )
        return self

    @property
    def delivered(self) -> bool:
        """``accepted`` or ``duplicate``: the sender may forget the event."""
        return self.status is not IngestStatus.REJECTED


class IngestResponse(BaseModel):
    """The 200 body of ``POST /v1/audit/ingest``: one result per item, in request order."""

    model_config = _ENVELOPE_CONFIG

    results: list[IngestResult] = Field(min_length=1, max_length=MAX_INGEST_ITEMS)

    def check_answers(self, request: IngestRequest | Sequence[uuid.UUID]) -> None:
        """Raise ``ValueError`` unless the results answer ``request`` item for item.

        ``request`` is the request itself or its event ids in order (what a relay that sent
        :func:`ingest_envelope_json` has at hand).
        """
        if isinstance(request, IngestRequest):
            sent = [item.event_id for item in request.events]
        else:
            sent = list(request)
        if len(self.results) != len(sent):
            raise ValueError(f"the response has {len(self.results)} results for {len(sent)} events")
        for index, (result, event_id) in enumerate(zip(self.results, sent, strict=True)):
            if result.event_id != event_id:
                raise ValueError(
                    f"result {index} is for event {result.event_id}, "
                    f"but event {index} of the request is {event_id}"
                )


class _RawItem(BaseModel):
    model_config = _ENVELOPE_CONFIG

    event_id: uuid.UUID
    event: dict[str, Any]


class _RawRequest(BaseModel):
    model_config = _ENVELOPE_CONFIG

    events: Annotated[list[_RawItem], AfterValidator(unique_event_ids)] = Field(
        min_length=1, max_length=MAX_INGEST_ITEMS
    )


def parse_ingest_request(data: str | bytes) -> list[IngestItem | IngestResult]:
    """Read an ingest body as a receiver does: the envelope as a whole, each event on its own.

    A malformed envelope (not JSON, no ``events``, too few or too many items, a bad or repeated
    ``event_id``, an ``event`` that is not an object) raises ``pydantic.ValidationError`` (a
    ``ValueError``): answer 400. Otherwise each item becomes an :class:`IngestItem`, or, when its
    event is invalid, a rejected :class:`IngestResult` naming the fields, so one bad event does
    not hold back the others. Events are judged exactly as ``Event.model_validate_json`` judges
    them.
    """
    raw = _RawRequest.model_validate_json(data)
    texts = _event_texts(data, len(raw.events))
    parsed: list[IngestItem | IngestResult] = []
    for index, item in enumerate(raw.events):
        try:
            # Each event's own bytes, so it is read exactly as Event.model_validate_json reads
            # Go's (duplicate and case-folded keys, -0); re-encoded only if they cannot be
            # found, which a valid envelope never causes.
            text = texts[index] if texts else json.dumps(item.event, allow_nan=False)
            event = Event.model_validate_json(text)
        except ValidationError as exc:
            parsed.append(_rejected(item.event_id, describe_errors(exc)))
        except ValueError as exc:
            parsed.append(_rejected(item.event_id, f"event: {exc}"))
        else:
            parsed.append(IngestItem(event_id=item.event_id, event=event))
    return parsed


def _event_texts(data: str | bytes, count: int) -> list[str] | None:
    """The raw text of each item's ``event`` (the last one, as pydantic reads it), or None."""
    try:
        text = data if isinstance(data, str) else bytes(data).decode()
    except UnicodeDecodeError:
        return None
    envelope = object_members(text)
    events = [raw for key, raw in envelope or [] if key == "events"]
    items = array_elements(events[-1]) if events else None
    if items is None or len(items) != count:
        return None
    texts: list[str] = []
    for item in items:
        found = [raw for key, raw in object_members(item) or [] if key == "event"]
        if not found:
            return None
        texts.append(found[-1])
    return texts


def describe_errors(exc: ValidationError, prefix: str = "event") -> str:
    """``event.user_id: Input should be a valid integer; ...`` in one line."""
    return "; ".join(
        f"{prefix}.{error_path(error)}: {error['msg']}"
        if error["loc"]
        else f"{prefix}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )


def _rejected(event_id: uuid.UUID, error: str) -> IngestResult:
    if len(error) > MAX_INGEST_ERROR_LENGTH:
        error = error[: MAX_INGEST_ERROR_LENGTH - 3] + "..."
    return IngestResult(event_id=event_id, status=IngestStatus.REJECTED, error=error)
