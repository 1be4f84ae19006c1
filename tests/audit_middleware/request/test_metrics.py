"""``AuditStats`` and the Prometheus collector that reads them at scrape time."""

from __future__ import annotations

from prometheus_client import REGISTRY

from audit_middleware import AuditStats
from audit_middleware.request._metrics import PROMETHEUS_COUNTER, track


def _sample(outcome: str) -> float:
    return REGISTRY.get_sample_value(PROMETHEUS_COUNTER, {"outcome": outcome}) or 0.0


def test_tracked_stats_are_summed_at_scrape_time() -> None:
    first, second = AuditStats(), AuditStats()
    track(first)
    before = _sample("failed_open")
    track(second)
    track(second)  # tracking twice does not count twice
    first.failed_open += 2
    second.failed_open += 3
    assert _sample("failed_open") == before + 5


def test_untracked_stats_are_not_reported() -> None:
    track(AuditStats())  # the collector exists
    before = _sample("anonymous")
    AuditStats().anonymous += 7
    assert _sample("anonymous") == before


def test_every_outcome_is_exported() -> None:
    track(AuditStats())
    for outcome in ("written", "failed", "failed_open", "skipped", "anonymous"):
        assert REGISTRY.get_sample_value(PROMETHEUS_COUNTER, {"outcome": outcome}) is not None


def test_audit_stats_starts_at_zero() -> None:
    assert AuditStats() == AuditStats(written=0, failed=0, failed_open=0, skipped=0, anonymous=0)
