"""``AsyncTelemetryClient``: the asyncio (and trio) client, the twin of ``TelemetryClient``."""

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

__all__ = ["AsyncTelemetryClient"]

R = TypeVar("R", bound=BaseModel)


class AsyncTelemetryClient(BaseClient):
    """An async client for Telemetry's endpoints, with retries.

    ``base_url`` defaults to the ``TELEMETRY_INTERNAL_URL`` environment variable; the keyword
    options are those of :class:`ClientOptions`. ``transport`` replaces httpx's network
    transport (``httpx.MockTransport`` in tests). Use it with ``async with``, or await
    ``aclose()``, to release its connection pool. Safe to share between tasks of one loop.
    """

    def __init__(
        self,
        base_url: str | httpx.URL | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(base_url, options)
        # Creating the httpx client opens nothing: connections are made on first use.
        self._http = httpx.AsyncClient(transport=transport, **self._httpx_arguments())

    async def audit_ingest(self, request: IngestRequest) -> IngestResponse:
        """Send audit events; the answer has one result per event, in order."""
        return await self._send(_calls.audit_ingest(request))

    async def audit_ingest_raw(self, items: Sequence[tuple[uuid.UUID, str]]) -> IngestResponse:
        """Send ``(event_id, canonical Event JSON)`` pairs as they are, without re-encoding."""
        return await self._send(_calls.audit_ingest_raw(items))

    async def track(self, request: AnalyticsTrackRequest) -> AnalyticsTrackResponse:
        """Send analytics events (page views, clicks, feature usage)."""
        return await self._send(_calls.track(request))

    async def media_event(self, request: MediaEventRequest) -> MediaEventResponse:
        """Send a video session lifecycle event."""
        return await self._send(_calls.media_event(request))

    async def pose_frames(self, request: PoseFramesRequest) -> PoseFramesResponse:
        """Send a batch of pose frames."""
        return await self._send(_calls.pose_frames(request))

    async def report_error(self, request: ErrorReportRequest) -> ErrorReportResponse:
        """Send an error report."""
        return await self._send(_calls.report_error(request))

    async def bandwidth_stats(self, query: BandwidthStatsQuery) -> BandwidthStatsResponse:
        """Read bandwidth statistics."""
        return await self._send(_calls.bandwidth_stats(query))

    async def health(self) -> HealthResponse:
        """Telemetry's health; a ``down`` answer (503 with its body) is returned, not raised."""
        return await self._send(_calls.health())

    async def aclose(self) -> None:
        """Close the connection pool (and the transport). Idempotent."""
        await self._http.aclose()

    @property
    def is_closed(self) -> bool:
        """Whether ``aclose()`` has been called."""
        return self._http.is_closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call[R]) -> R:
        self._check_open(self._http.is_closed)
        request = self._build_request(self._http, call)
        sign = self._attempt_signer(request)

        async def attempt() -> R:
            if sign is not None:
                sign()
            with map_httpx_errors(request):
                response = await self._http.send(request)
            return self._read_response(call, response)

        return await self._retry.acall(attempt)
