"""``AuditStats`` and the Prometheus collector that reads them at scrape time."""

from __future__ import annotations

import gc
import weakref

import pytest
from prometheus_client import REGISTRY

from audit_middleware import AuditConfig, AuditMiddleware, AuditStats
from audit_middleware.request._metrics import PROMETHEUS_COUNTER, track


class Owner:
    """Stands for the middleware a stats object belongs to."""


OWNER = Owner()


def _sample(outcome: str) -> float:
    return REGISTRY.get_sample_value(PROMETHEUS_COUNTER, {"outcome": outcome}) or 0.0


def test_tracked_stats_are_summed_at_scrape_time() -> None:
    first, second = AuditStats(), AuditStats()
    track(first, OWNER)
    before = _sample("failed_open")
    track(second, OWNER)
    track(second, OWNER)  # tracking twice does not count twice
    first.failed_open += 2
    second.failed_open += 3
    assert _sample("failed_open") == before + 5


def test_untracked_stats_are_not_reported() -> None:
    track(AuditStats(), OWNER)  # the collector exists
    before = _sample("anonymous")
    AuditStats().anonymous += 7
    assert _sample("anonymous") == before


def test_every_outcome_is_exported() -> None:
    track(AuditStats(), OWNER)
    for outcome in ("written", "failed", "failed_open", "skipped", "anonymous"):
        assert REGISTRY.get_sample_value(PROMETHEUS_COUNTER, {"outcome": outcome}) is not None


def test_audit_stats_starts_at_zero() -> None:
    assert AuditStats() == AuditStats(written=0, failed=0, failed_open=0, skipped=0, anonymous=0)


def test_a_dropped_owner_leaves_its_counts_and_nothing_else() -> None:
    owner, stats = Owner(), AuditStats()
    track(stats, owner)
    stats.skipped += 4
    before = _sample("skipped")
    owner_ref, stats_ref = weakref.ref(owner), weakref.ref(stats)
    del owner, stats
    gc.collect()

    assert owner_ref() is None
    assert _sample("skipped") == before  # folded into the total: the counter never goes down
    gc.collect()
    assert stats_ref() is None  # and the collector no longer holds the stats


def test_stats_tracked_again_after_its_owner_died_is_counted_once() -> None:
    stats = AuditStats()
    owner = Owner()
    track(stats, owner)
    stats.written += 3
    before = _sample("written")
    del owner
    gc.collect()
    assert _sample("written") == before
    track(stats, OWNER)  # a new middleware takes the same stats over
    stats.written += 1
    assert _sample("written") == before + 1


async def _app(scope: object, receive: object, send: object) -> None:
    return None


@pytest.mark.anyio
async def test_a_dropped_middleware_is_garbage_collected() -> None:
    class Sink:
        async def write(self, event: object) -> None:
            return None

    middleware = AuditMiddleware(_app, sink=Sink())  # type: ignore[arg-type]

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "state": {}}
    await middleware(scope, receive, send)  # type: ignore[arg-type]  # tracked from here on
    reference = weakref.ref(middleware)
    del middleware, scope
    gc.collect()
    assert reference() is None


def test_audit_config_prometheus_is_a_deprecated_alias_of_metrics() -> None:
    with pytest.warns(DeprecationWarning, match="use AuditConfig\\(metrics=...\\)"):
        config = AuditConfig(prometheus=False)
    assert config.metrics is False and config.prometheus is None
    assert AuditConfig().metrics is True
