from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from auditevt import (
    MAX_STATS_WINDOW_DAYS,
    BandwidthStatsQuery,
    BandwidthStatsResponse,
    MediaSessionKind,
    StatSummary,
    Timestamp,
)

SINCE = "2026-11-27T00:00:00Z"
UNTIL = "2026-11-28T00:00:00+01:00"


def test_bandwidth_stats_query_dumps_flat_scalars() -> None:
    query = BandwidthStatsQuery(
        organization_id=7,
        session_id=uuid.UUID(int=3),
        kind=MediaSessionKind.LIVE,
        since=Timestamp.parse(SINCE),
        until=Timestamp.parse(UNTIL),
    )
    params = query.model_dump(mode="json", exclude_none=True)
    assert params == {
        "organization_id": 7,
        "session_id": str(uuid.UUID(int=3)),
        "kind": "live",
        "since": SINCE,
        "until": UNTIL,
    }
    assert all(isinstance(value, str | int) for value in params.values())


def test_bandwidth_stats_query_reads_back_its_query_string() -> None:
    # What a server sees: every value a string.
    query = BandwidthStatsQuery(organization_id=7, since=SINCE, until=UNTIL)
    received = {k: str(v) for k, v in query.model_dump(mode="json", exclude_none=True).items()}
    assert received == {"organization_id": "7", "since": SINCE, "until": UNTIL}
    assert BandwidthStatsQuery.model_validate(received) == query


def test_bandwidth_stats_query_leaves_out_what_is_not_set() -> None:
    query = BandwidthStatsQuery(organization_id=7)
    assert query.model_dump(mode="json", exclude_none=True) == {"organization_id": 7}
    assert query.window is None


def test_bandwidth_stats_query_window() -> None:
    query = BandwidthStatsQuery(organization_id=7, since=SINCE, until=UNTIL)
    assert query.window == timedelta(hours=23)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"organization_id": "0"}, "organization_id"),
        ({"organization_id": "seven"}, "organization_id"),
        ({"organization_id": "9223372036854775808"}, "organization_id"),
        ({"organization_id": "7", "session_id": "abc"}, "session_id"),
        ({"organization_id": "7", "kind": "vod"}, "kind"),
        ({"organization_id": "7", "since": "2026-11-27"}, "since"),
        ({"organization_id": "7", "until": "2026-11-27T00:00:00"}, "until"),
        ({"organization_id": "7", "limit": "5"}, "limit"),
        ({}, "organization_id"),
    ],
)
def test_bandwidth_stats_query_refuses_bad_params(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        BandwidthStatsQuery.model_validate(params)
    assert [error["loc"] for error in info.value.errors()] == [(field,)]


def test_bandwidth_stats_query_wants_since_before_until() -> None:
    with pytest.raises(ValidationError, match="must be before until"):
        BandwidthStatsQuery(organization_id=7, since=UNTIL, until=SINCE)
    with pytest.raises(ValidationError, match="must be before until"):
        BandwidthStatsQuery(organization_id=7, since=SINCE, until=SINCE)


def test_bandwidth_stats_query_bounds_the_window() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    since = Timestamp.from_datetime(start)
    limit = Timestamp.from_datetime(start + timedelta(days=MAX_STATS_WINDOW_DAYS))
    assert BandwidthStatsQuery(organization_id=7, since=since, until=limit)
    too_long = Timestamp.from_datetime(
        start + timedelta(days=MAX_STATS_WINDOW_DAYS, microseconds=1)
    )
    with pytest.raises(ValidationError, match="longer than 31 days"):
        BandwidthStatsQuery(organization_id=7, since=since, until=too_long)


def summary(low: float, mid: float, high: float) -> dict[str, float]:
    return {"min": low, "mean": mid, "p50": mid, "p95": high, "max": high}


def test_bandwidth_stats_response_reads_computed_stats() -> None:
    response = BandwidthStatsResponse.model_validate(
        {
            "since": SINCE,
            "until": UNTIL,
            "sessions": 12,
            "heartbeats": 4_320,
            "inbound_bitrate_kbps": summary(120.0, 1450.0, 2900.0),
            "rtt_ms": summary(10, 40, 180),
            "packet_loss_pct": summary(0, 0.2, 3.5),
            "bytes_received": 9_000_000_000,
            "stall_count": 17,
            "buffering_ratio": 0.012,
            "served_by": "telemetry-2",
        }
    )
    assert response.inbound_bitrate_kbps is not None
    assert response.inbound_bitrate_kbps.p95 == 2900.0
    assert response.jitter_ms is None
    assert BandwidthStatsResponse.model_validate_json(response.model_dump_json()) == response


def test_stat_summary_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="min <= p50 <= p95 <= max"):
        StatSummary(min=5, mean=5, p50=4, p95=6, max=7)
    with pytest.raises(ValidationError, match="mean=9"):
        StatSummary(min=1, mean=9, p50=2, p95=3, max=4)


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
def test_stat_summary_refuses_nan_and_infinity(literal: str) -> None:
    with pytest.raises(ValidationError):
        StatSummary.model_validate_json(
            f'{{"min": 0, "mean": 1, "p50": 1, "p95": 2, "max": {literal}}}'
        )


def test_bandwidth_stats_response_bounds_the_buffering_ratio() -> None:
    with pytest.raises(ValidationError):
        BandwidthStatsResponse.model_validate(
            {"since": SINCE, "until": UNTIL, "sessions": 0, "heartbeats": 0, "buffering_ratio": 1.5}
        )


def test_bandwidth_stats_response_wants_an_ordered_window() -> None:
    with pytest.raises(ValidationError, match="is after until"):
        BandwidthStatsResponse.model_validate(
            {"since": "2026-11-29T00:00:00Z", "until": SINCE, "sessions": 0, "heartbeats": 0}
        )
