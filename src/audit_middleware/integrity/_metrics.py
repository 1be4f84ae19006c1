"""Integrity counters, exported to Prometheus at scrape time when ``prometheus_client`` is there.

Sealers and verifiers only add to an :class:`IntegrityStats` (no lock, no lookup). On first use
a collector is registered once per registry; it holds the stats it reports *weakly*, so a
sealer that is gone stops being reported and nothing is kept alive by the metrics. The seal lag
is computed at scrape time from the oldest unsealed row's time, so it keeps growing while a
sealer is stuck.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["METRIC_NAMES", "IntegrityStats", "track"]

logger = logging.getLogger("audit_middleware.integrity")

METRIC_NAMES = (
    "auditevt_seal_lag_seconds",
    "auditevt_seal_rows_sealed",
    "auditevt_seals_written",
    "auditevt_seal_failures",
    "auditevt_verify_runs",
    "auditevt_verify_failures",
)
"""The Prometheus families reported (counters get ``_total`` on exposition)."""


@dataclass(slots=True, weakref_slot=True, eq=False)
class IntegrityStats:
    """What a sealer (or a verifier) did since it started; share one to add them up."""

    rows_sealed: int = 0
    """Rows covered by the seals written."""
    seals_written: int = 0
    """Seals committed."""
    seal_failures: int = 0
    """Passes that failed (database, key or sink)."""
    verify_runs: int = 0
    """Verifications completed."""
    verify_failures: int = 0
    """Verifications that found something wrong."""
    oldest_unsealed_at: float | None = None
    """Unix time of the oldest row not yet sealed, as of the last pass (None: none)."""

    def seal_lag(self, now: float | None = None) -> float:
        """Seconds since the oldest unsealed row was written (0 when every row is sealed)."""
        if self.oldest_unsealed_at is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - self.oldest_unsealed_at)


class _Collector:
    def __init__(self) -> None:
        self.tracked: weakref.WeakSet[IntegrityStats] = weakref.WeakSet()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = list(self.tracked)
        now = time.time()
        lag = GaugeMetricFamily(
            "auditevt_seal_lag_seconds",
            "Age of the oldest audit row not yet sealed; alert when it exceeds a few intervals.",
        )
        lag.add_metric([], max((s.seal_lag(now) for s in stats), default=0.0))
        yield lag
        for name, attribute, text in (
            ("auditevt_seal_rows_sealed", "rows_sealed", "Audit rows covered by new seals."),
            ("auditevt_seals_written", "seals_written", "Seals committed."),
            ("auditevt_seal_failures", "seal_failures", "Sealer passes that failed."),
            ("auditevt_verify_runs", "verify_runs", "Verifications completed."),
            ("auditevt_verify_failures", "verify_failures", "Verifications that found tampering."),
        ):
            family = CounterMetricFamily(name, text)
            family.add_metric([], sum(getattr(s, attribute) for s in stats))
            yield family

    def describe(self) -> Iterator[Any]:
        return iter(())  # registration must not call collect()


_lock = threading.Lock()
_collectors: weakref.WeakKeyDictionary[Any, _Collector] = weakref.WeakKeyDictionary()


def track(stats: IntegrityStats, registry: Any = None) -> None:
    """Report ``stats`` in ``registry`` (None: the default one), if prometheus_client is there."""
    try:
        import prometheus_client
    except ImportError:
        return
    if registry is None:
        registry = prometheus_client.REGISTRY
    with _lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = _Collector()
            try:
                registry.register(collector)
            except ValueError as exc:  # the names are taken by someone else's collectors
                logger.warning("integrity metrics disabled: %s", exc)
                return
            _collectors[registry] = collector
        collector.tracked.add(stats)
