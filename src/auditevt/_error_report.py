"""``POST /v1/errors/report``: one application, video or network error, with device context.

Messages and stacks are technical text produced by the app; the SDK must not put what a user
typed into them. Limits: ``MAX_ERROR_MESSAGE_LENGTH`` (2,048) characters of message,
``MAX_STACK_LENGTH`` (16,384) of stack trace, ``MAX_ERROR_CONTEXT_ITEMS`` (32) context entries of
``MAX_NAME_LENGTH`` (128) characters per key and ``MAX_PROPERTY_VALUE_LENGTH`` (256) per string.
"""

from __future__ import annotations

import enum
import uuid
from typing import Annotated

from pydantic import Field, Strict, model_validator

from auditevt._analytics import PropertyValue, SignedInActor
from auditevt._device import DeviceContext
from auditevt._fields import (
    CleanText,
    Name,
    Payload,
    RequestPath,
    Response,
    SessionOrganizationId,
)
from auditevt._timestamp import Timestamp

__all__ = [
    "MAX_ERROR_CONTEXT_ITEMS",
    "MAX_ERROR_MESSAGE_LENGTH",
    "MAX_STACK_LENGTH",
    "ErrorCategory",
    "ErrorReportRequest",
    "ErrorReportResponse",
    "ErrorSeverity",
]

#: Longest error message, in characters.
MAX_ERROR_MESSAGE_LENGTH = 2048
#: Longest stack trace, in characters.
MAX_STACK_LENGTH = 16_384
#: Most entries in ``context``.
MAX_ERROR_CONTEXT_ITEMS = 32


ErrorMessage = Annotated[str, CleanText(MAX_ERROR_MESSAGE_LENGTH)]
StackTrace = Annotated[str, CleanText(MAX_STACK_LENGTH)]


class ErrorCategory(enum.StrEnum):
    """Which part of the frontend failed."""

    APP = "app"
    """The application itself: an exception, a failed render."""
    VIDEO = "video"
    """Media capture, decoding or playback."""
    NETWORK = "network"
    """A request or a media connection failed."""


class ErrorSeverity(enum.StrEnum):
    """How bad it was for the user."""

    WARNING = "warning"
    """Recovered; the user may not have noticed."""
    ERROR = "error"
    """An operation failed."""
    FATAL = "fatal"
    """The app or the session could not continue."""


class ErrorReportRequest(Payload):
    """The body of ``POST /v1/errors/report``."""

    organization_id: SessionOrganizationId
    actor: SignedInActor = None
    report_id: uuid.UUID = Field(description="Minted by the SDK; Telemetry deduplicates on it.")
    occurred_at: Timestamp = Field(description="When the error happened on the device.")
    category: ErrorCategory
    severity: ErrorSeverity = ErrorSeverity.ERROR
    code: Name = Field(description="A stable machine-readable code, e.g. MEDIA_ERR_DECODE.")
    message: ErrorMessage = Field(description="What went wrong, for a developer.")
    stack: StackTrace | None = Field(default=None, description="The stack trace, if any.")
    path: RequestPath | None = Field(default=None, description="The page it happened on.")
    media_session_id: uuid.UUID | None = Field(
        default=None, description="The video session, for video errors and media network errors."
    )
    request_path: RequestPath | None = Field(
        default=None, description="The path of the failed request (network errors)."
    )
    http_status: Annotated[int, Strict(), Field(ge=100, le=599)] | None = Field(
        default=None, description="The failed request's HTTP status, if it got one."
    )
    device: DeviceContext
    context: Annotated[dict[Name, PropertyValue], Field(max_length=MAX_ERROR_CONTEXT_ITEMS)] = (
        Field(default_factory=dict, description="Small scalar facts about the situation.")
    )

    @model_validator(mode="after")
    def _network_fields(self) -> ErrorReportRequest:
        if self.category is not ErrorCategory.NETWORK and (
            self.request_path is not None or self.http_status is not None
        ):
            raise ValueError(
                f"request_path and http_status belong to network errors, "
                f"not to category={self.category.value!r}"
            )
        return self


class ErrorReportResponse(Response):
    """What Telemetry did with the report."""

    report_id: uuid.UUID
    duplicate: bool = Field(
        default=False, description="True when this report_id had been stored before."
    )
