"""Counters of what the middleware did: a plain dataclass, exported to Prometheus when installed.

Requests only add to :class:`AuditStats` fields (no lock, no lookup). When ``prometheus_client``
is installed, a collector registered once per process, on the first request of the first
middleware that wants it (never at import), reads every tracked ``AuditStats`` at scrape time
and reports their sums as the counter ``audit_middleware_requests_total{outcome=...}``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, Literal

__all__ = ["PROMETHEUS_COUNTER", "AuditStats", "Outcome", "track"]

Outcome = Literal["written", "failed", "failed_open", "skipped", "anonymous"]

PROMETHEUS_COUNTER = "audit_middleware_requests_total"
"""Name of the Prometheus counter, labelled ``outcome`` (the :class:`AuditStats` field names)."""

_lock = threading.Lock()
_registered = False
# Strong references: a counter must never go down, so a stopped middleware's counts stay.
_tracked: list[AuditStats] = []


@dataclass(slots=True)
class AuditStats:
    """What one middleware (or every middleware sharing this object) did since it started."""

    written: int = 0
    """Audit rows committed."""
    failed: int = 0
    """Writes that failed (each answered 503, unless ``fail_open``)."""
    failed_open: int = 0
    """Failed writes whose response went out anyway because ``fail_open`` is set."""
    skipped: int = 0
    """Audited-method requests left out: ``record(skip=True)``, ``should_audit``, no org."""
    anonymous: int = 0
    """Events built with the anonymous organization (no organization was authenticated)."""


_OUTCOMES = tuple(field.name for field in fields(AuditStats))


class _StatsCollector:
    """A ``prometheus_client`` collector summing every tracked ``AuditStats`` at scrape time."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            PROMETHEUS_COUNTER.removesuffix("_total"),
            "Audited requests handled by AuditMiddleware, by outcome.",
            labels=["outcome"],
        )
        with _lock:
            tracked = list(_tracked)
        for outcome in _OUTCOMES:
            family.add_metric([outcome], sum(getattr(stats, outcome) for stats in tracked))
        yield family

    def describe(self) -> Iterator[Any]:
        # Registration must not call collect(); nothing to describe ahead of time.
        return iter(())


def track(stats: AuditStats) -> None:
    """Report ``stats`` to Prometheus (registering the collector on first use, if installed)."""
    global _registered
    with _lock:
        if not _registered:
            _registered = True
            try:
                from prometheus_client import REGISTRY
            except ImportError:
                return
            REGISTRY.register(_StatsCollector())
        if not any(seen is stats for seen in _tracked):
            _tracked.append(stats)
