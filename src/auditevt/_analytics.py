"""``POST /v1/analytics/track``: page views, clicks and feature usage, batched.

Analytics hold no PII: the actor is a :data:`~auditevt.Pseudonym` (the Core API hands the
frontend its pseudonym at sign-in; the key never reaches the browser), paths are paths without
query strings, and properties are small scalars meant for flags and counters, never for names,
emails or free text typed by a patient.

Limits: at most ``MAX_ANALYTICS_EVENTS`` (100) events a request, ``MAX_ANALYTICS_PROPERTIES``
(32) properties an event, property keys of ``MAX_NAME_LENGTH`` (128) and string values of
``MAX_PROPERTY_VALUE_LENGTH`` (256) characters, paths of ``MAX_PATH_LENGTH`` (2048).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, Strict, StringConstraints

from auditevt._event import INT64_MAX, INT64_MIN
from auditevt._fields import (
    Count,
    FiniteFloat,
    Label,
    Name,
    Payload,
    RequestPath,
    Response,
    SessionOrganizationId,
    TaggedPayload,
    clean_text,
    unique_event_ids,
)
from auditevt._pseudonym import Pseudonym
from auditevt._timestamp import Timestamp

__all__ = [
    "MAX_ANALYTICS_EVENTS",
    "MAX_ANALYTICS_PROPERTIES",
    "MAX_PROPERTY_VALUE_LENGTH",
    "AnalyticsEvent",
    "AnalyticsTrackRequest",
    "AnalyticsTrackResponse",
    "ClickEvent",
    "FeatureUsageEvent",
    "PageViewEvent",
    "PropertyValue",
]

#: Most events in one track request.
MAX_ANALYTICS_EVENTS = 100
#: Most properties on one event.
MAX_ANALYTICS_PROPERTIES = 32
#: Longest string property value, in characters.
MAX_PROPERTY_VALUE_LENGTH = 256

PropertyValue = (
    Annotated[bool, Strict()]
    | Annotated[int, Strict(), Field(ge=INT64_MIN, le=INT64_MAX)]
    | FiniteFloat
    | Annotated[
        str,
        Strict(),
        StringConstraints(max_length=MAX_PROPERTY_VALUE_LENGTH),
        AfterValidator(clean_text),
    ]
)
"""A property value: a bool, an int64, a finite number or a short string."""

Properties = Annotated[dict[Name, PropertyValue], Field(max_length=MAX_ANALYTICS_PROPERTIES)]

SignedInActor = Annotated[
    Pseudonym | None,
    Field(description="The signed-in user's pseudonym; absent before sign-in."),
]
"""The ``actor`` of a browser session's request: None (left out) until the user signs in."""


class _AnalyticsEventBase(TaggedPayload):
    event_id: uuid.UUID = Field(description="Minted by the SDK; Telemetry deduplicates on it.")
    occurred_at: Timestamp = Field(description="When it happened on the device.")
    path: RequestPath = Field(description="The page's path, without query string or fragment.")
    properties: Properties = Field(
        default_factory=dict, description="Small scalar facts: flags, counters, variants."
    )


class PageViewEvent(_AnalyticsEventBase):
    """A page (a route of the single-page app) was shown."""

    type: Literal["page_view"] = "page_view"
    referrer_path: RequestPath | None = Field(
        default=None, description="The in-app path the user came from, if any."
    )
    title: Label | None = Field(default=None, description="The page's title, if it holds no PII.")


class ClickEvent(_AnalyticsEventBase):
    """A tracked element was clicked."""

    type: Literal["click"] = "click"
    target: Name = Field(description="The element's stable tracking id, e.g. start-exercise.")
    label: Label | None = Field(default=None, description="The element's visible label.")


class FeatureUsageEvent(_AnalyticsEventBase):
    """A feature was used (opened, completed, abandoned, ...)."""

    type: Literal["feature_usage"] = "feature_usage"
    feature: Name = Field(description="The feature, e.g. exercise-library or pose-feedback.")
    action: Name = Field(description="What was done with it, e.g. opened, completed.")
    duration_ms: Count | None = Field(default=None, description="How long it was used.")


AnalyticsEvent = Annotated[
    PageViewEvent | ClickEvent | FeatureUsageEvent, Field(discriminator="type")
]
"""One analytics event, told apart by its ``type``."""


class AnalyticsTrackRequest(Payload):
    """The body of ``POST /v1/analytics/track``: a batch of one browser session's events."""

    organization_id: SessionOrganizationId
    actor: SignedInActor = None
    session_id: uuid.UUID = Field(description="The browser session, minted by the SDK.")
    sent_at: Timestamp = Field(description="When the SDK sent the batch (to correct clock skew).")
    events: Annotated[list[AnalyticsEvent], AfterValidator(unique_event_ids)] = Field(
        min_length=1, max_length=MAX_ANALYTICS_EVENTS
    )


class AnalyticsTrackResponse(Response):
    """What Telemetry did with a track request."""

    accepted: Count = Field(description="Events stored now.")
    duplicates: Count = Field(description="Events already stored under the same event_id.")
