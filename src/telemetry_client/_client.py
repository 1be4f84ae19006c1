"""``TelemetryClient``: the blocking client, one typed method per Telemetry endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Self, TypeVar, Unpack

import httpx
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
)
from telemetry_client import _calls
from telemetry_client._base import BaseClient, ClientOptions
from telemetry_client._calls import Call
from telemetry_client._exceptions import map_httpx_errors

__all__ = ["TelemetryClient"]

R = TypeVar("R", bound=BaseModel)


class TelemetryClient(BaseClient):
    """A blocking client for Telemetry's endpoints, with retries.

    ``base_url`` defaults to the ``TELEMETRY_INTERNAL_URL`` environment variable; the keyword
    options are those of :class:`ClientOptions`. ``transport`` replaces httpx's network
    transport (``httpx.MockTransport`` in tests). Use it as a context manager, or call
    ``close()``, to release its connection pool. Safe to share between threads.
    """

    def __init__(
        self,
        base_url: str | httpx.URL | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(base_url, options)
        # Creating the httpx client opens nothing: connections are made on first use.
        self._http = httpx.Client(transport=transport, **self._httpx_arguments())

    def audit_ingest(self, request: IngestRequest) -> IngestResponse:
        """Send audit events; the answer has one result per event, in order."""
        return self._send(_calls.audit_ingest(request))

    def audit_ingest_raw(self, items: Sequence[tuple[uuid.UUID, str]]) -> IngestResponse:
        """Send ``(event_id, canonical Event JSON)`` pairs as they are, without re-encoding."""
        return self._send(_calls.audit_ingest_raw(items))

    def track(self, request: AnalyticsTrackRequest) -> AnalyticsTrackResponse:
        """Send analytics events (page views, clicks, feature usage)."""
        return self._send(_calls.track(request))

    def media_event(self, request: MediaEventRequest) -> MediaEventResponse:
        """Send a video session lifecycle event."""
        return self._send(_calls.media_event(request))

    def pose_frames(self, request: PoseFramesRequest) -> PoseFramesResponse:
        """Send a batch of pose frames."""
        return self._send(_calls.pose_frames(request))

    def report_error(self, request: ErrorReportRequest) -> ErrorReportResponse:
        """Send an error report."""
        return self._send(_calls.report_error(request))

    def bandwidth_stats(self, query: BandwidthStatsQuery) -> BandwidthStatsResponse:
        """Read bandwidth statistics."""
        return self._send(_calls.bandwidth_stats(query))

    def health(self) -> HealthResponse:
        """Telemetry's health; a ``down`` answer (503 with its body) is returned, not raised."""
        return self._send(_calls.health())

    def close(self) -> None:
        """Close the connection pool (and the transport). Idempotent."""
        self._http.close()

    @property
    def is_closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._http.is_closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: Call[R]) -> R:
        self._check_open(self._http.is_closed)
        request = self._build_request(self._http, call)
        sign = self._attempt_signer(request)

        def attempt() -> R:
            if sign is not None:
                sign()
            with map_httpx_errors(request):
                response = self._http.send(request)
            return self._read_response(call, response)

        return self._retry.call(attempt)
