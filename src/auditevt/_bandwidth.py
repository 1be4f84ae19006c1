"""``GET /v1/media/bandwidth/stats``: bandwidth of rehab video sessions, computed from heartbeats.

The query travels as URL query parameters, so :class:`BandwidthStatsQuery` has flat scalar
fields only and reads them from strings too: the client sends
``query.model_dump(mode="json", exclude_none=True)`` and the server validates the parameters it
received with ``BandwidthStatsQuery.model_validate(dict(request.query_params))``.

Limits: a window of at most ``MAX_STATS_WINDOW_DAYS`` (31) days. Without ``since`` and
``until`` the server reports the last 24 hours.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from pydantic import Field, model_validator

from auditevt._event import INT64_MAX
from auditevt._fields import Count, FiniteFloat, Payload, Response
from auditevt._media import MediaSessionKind
from auditevt._timestamp import Timestamp

__all__ = [
    "MAX_STATS_WINDOW_DAYS",
    "BandwidthStatsQuery",
    "BandwidthStatsResponse",
    "StatSummary",
]

#: Longest window one query may cover, in days.
MAX_STATS_WINDOW_DAYS = 31
_MAX_WINDOW_NS = MAX_STATS_WINDOW_DAYS * 86_400 * 1_000_000_000

# Query parameters arrive as strings: these integers are not strict (but still bounded).
QueryOrganizationId = Annotated[int, Field(ge=1, le=INT64_MAX)]


class BandwidthStatsQuery(Payload):
    """The query of ``GET /v1/media/bandwidth/stats``: flat, so it maps onto query parameters."""

    organization_id: QueryOrganizationId = Field(
        description="The tenant; Telemetry refuses it unless it is the session's organization."
    )
    session_id: uuid.UUID | None = Field(
        default=None, description="One video session; all of the organization's when absent."
    )
    kind: MediaSessionKind | None = Field(default=None, description="Only live or playback.")
    since: Timestamp | None = Field(default=None, description="Start of the window (inclusive).")
    until: Timestamp | None = Field(default=None, description="End of the window (exclusive).")

    @model_validator(mode="after")
    def _window(self) -> BandwidthStatsQuery:
        if self.since is not None and self.until is not None:
            if self.since.unix_ns >= self.until.unix_ns:
                raise ValueError(f"since={self.since} must be before until={self.until}")
            if self.until.unix_ns - self.since.unix_ns > _MAX_WINDOW_NS:
                raise ValueError(
                    f"the window from {self.since} to {self.until} is longer than "
                    f"{MAX_STATS_WINDOW_DAYS} days"
                )
        return self

    @property
    def window(self) -> timedelta | None:
        """``until - since`` when both are given."""
        if self.since is None or self.until is None:
            return None
        return timedelta(microseconds=(self.until.unix_ns - self.since.unix_ns) // 1000)


class StatSummary(Response):
    """The distribution of one measurement over the heartbeats in the window."""

    min: FiniteFloat
    mean: FiniteFloat
    p50: FiniteFloat
    p95: FiniteFloat
    max: FiniteFloat

    @model_validator(mode="after")
    def _ordered(self) -> StatSummary:
        if not self.min <= self.p50 <= self.p95 <= self.max:
            raise ValueError(
                f"expected min <= p50 <= p95 <= max, got {self.min}, {self.p50}, "
                f"{self.p95}, {self.max}"
            )
        if not self.min <= self.mean <= self.max:
            raise ValueError(f"mean={self.mean} lies outside [{self.min}, {self.max}]")
        return self


class BandwidthStatsResponse(Response):
    """Bandwidth statistics over a window; a summary is absent when no heartbeat measured it."""

    since: Timestamp = Field(description="Start of the window actually reported.")
    until: Timestamp = Field(description="End of the window actually reported.")
    session_id: uuid.UUID | None = Field(default=None, description="As in the query.")
    sessions: Count = Field(description="Sessions with at least one heartbeat in the window.")
    heartbeats: Count = Field(description="Heartbeats the statistics are computed from.")
    inbound_bitrate_kbps: StatSummary | None = None
    outbound_bitrate_kbps: StatSummary | None = None
    available_bandwidth_kbps: StatSummary | None = None
    rtt_ms: StatSummary | None = None
    jitter_ms: StatSummary | None = None
    packet_loss_pct: StatSummary | None = None
    bytes_received: Count = Field(default=0, description="Received in the window.")
    bytes_sent: Count = Field(default=0, description="Sent in the window.")
    stall_count: Count = Field(default=0, description="Stalls that began in the window.")
    buffering_ratio: Annotated[FiniteFloat, Field(ge=0.0, le=1.0)] = Field(
        default=0.0, description="Time stalled over time observed, 0 to 1."
    )

    @model_validator(mode="after")
    def _window(self) -> BandwidthStatsResponse:
        if self.since.unix_ns > self.until.unix_ns:
            raise ValueError(f"since={self.since} is after until={self.until}")
        return self
