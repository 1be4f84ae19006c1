"""Telemetry's endpoints as data: what to send, and what the answer must be.

Each function turns an endpoint method's arguments into a :class:`Call`, without doing any I/O,
so the sync and async clients share every endpoint's definition.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from auditevt import (
    AnalyticsTrackRequest,
    AnalyticsTrackResponse,
    BandwidthStatsQuery,
    BandwidthStatsResponse,
    ErrorReportRequest,
    ErrorReportResponse,
    HealthResponse,
    IngestRequest,
    IngestResponse,
    MediaEventRequest,
    MediaEventResponse,
    PoseFramesRequest,
    PoseFramesResponse,
    ingest_envelope_json,
)
from telemetry_client._exceptions import ConfigurationError

__all__ = [
    "Call",
    "audit_ingest",
    "audit_ingest_raw",
    "bandwidth_stats",
    "health",
    "media_event",
    "pose_frames",
    "report_error",
    "track",
]

R = TypeVar("R", bound=BaseModel)
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Call(Generic[R]):
    """One endpoint call, described without doing it."""

    method: str
    """``GET`` or ``POST``."""
    path: str
    """The endpoint's path, appended to the base URL's."""
    response_model: type[R]
    """The model a 2xx body must validate as."""
    body: str | None = None
    """The JSON body, if any."""
    params: Mapping[str, Any] | None = None
    """Query parameters, if any."""
    check: Callable[[R], None] | None = None
    """Raises ``ValueError`` when a well-formed answer does not answer this request."""
    answer_statuses: frozenset[int] = frozenset()
    """Non-2xx statuses whose body, when it is a ``response_model``, is the answer."""


def audit_ingest(request: IngestRequest) -> Call[IngestResponse]:
    _check_type("request", request, IngestRequest)
    return _ingest(request.to_json(), request)


def audit_ingest_raw(items: Sequence[tuple[uuid.UUID, str]]) -> Call[IngestResponse]:
    items = list(items)
    return _ingest(ingest_envelope_json(items), [event_id for event_id, _ in items])


def _ingest(body: str, sent: IngestRequest | list[uuid.UUID]) -> Call[IngestResponse]:
    # The answer must answer what was sent: the request itself, or its event ids in order.
    return Call(
        "POST",
        "/v1/audit/ingest",
        IngestResponse,
        body=body,
        check=lambda response: response.check_answers(sent),
    )


def track(request: AnalyticsTrackRequest) -> Call[AnalyticsTrackResponse]:
    return _post("/v1/analytics/track", request, AnalyticsTrackRequest, AnalyticsTrackResponse)


def media_event(request: MediaEventRequest) -> Call[MediaEventResponse]:
    return _post("/v1/media/events", request, MediaEventRequest, MediaEventResponse)


def pose_frames(request: PoseFramesRequest) -> Call[PoseFramesResponse]:
    return _post("/v1/pose/frames", request, PoseFramesRequest, PoseFramesResponse)


def report_error(request: ErrorReportRequest) -> Call[ErrorReportResponse]:
    return _post("/v1/errors/report", request, ErrorReportRequest, ErrorReportResponse)


def bandwidth_stats(query: BandwidthStatsQuery) -> Call[BandwidthStatsResponse]:
    _check_type("query", query, BandwidthStatsQuery)
    return Call(
        "GET",
        "/v1/media/bandwidth/stats",
        BandwidthStatsResponse,
        params=query.model_dump(mode="json", exclude_none=True),
    )


def health() -> Call[HealthResponse]:
    # Telemetry answers 503 with status "down" when it is unhealthy: that is an answer, not a
    # failure. A 503 without that body (from a proxy, say) is still a failure, and retried.
    return Call("GET", "/health", HealthResponse, answer_statuses=frozenset({503}))


def _post(path: str, request: M, request_model: type[M], response_model: type[R]) -> Call[R]:
    _check_type("request", request, request_model)
    return Call("POST", path, response_model, body=request.model_dump_json())


def _check_type(name: str, value: object, expected: type[Any]) -> None:
    # A dict or another model would otherwise fail deep inside pydantic or httpx.
    if not isinstance(value, expected):
        raise ConfigurationError(
            f"{name} must be a {expected.__name__}, got {type(value).__name__}"
        )
