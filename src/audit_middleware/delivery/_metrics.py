"""The relay's Prometheus metrics: created on first use, never at import, once per registry.

Every metric of the project is named ``auditevt_...`` (docs/operations.md has the table). The
metrics hold numbers only, never a relay: a dropped relay is garbage-collected whatever the
registry keeps.
"""

from __future__ import annotations

import functools
import logging
import weakref
from typing import Any

__all__ = ["RelayMetrics", "metrics_for"]

logger = logging.getLogger("audit_middleware.relay")


class RelayMetrics:
    """The relay's Prometheus metrics, one set per registry (names may be registered once)."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge

        gauge = functools.partial(Gauge, registry=registry)
        counter = functools.partial(Counter, registry=registry)
        self.pending = gauge(
            "auditevt_outbox_pending",
            "Audit events waiting in the outbox (not delivered, not dead-lettered).",
        )
        self.oldest_age = gauge(
            "auditevt_outbox_oldest_pending_age_seconds",
            "Seconds since the oldest pending audit event was written; alert on this.",
        )
        self.dead_letters = gauge(
            "auditevt_outbox_dead_letters",
            "Dead-lettered audit events kept in the outbox now (until re-driven).",
        )
        self.delivered = counter(
            "auditevt_relay_delivered",
            "Audit events the receiver answered accepted or duplicate.",
        )
        self.retried = counter(
            "auditevt_relay_retried",
            "Audit event deliveries rescheduled after a failure.",
        )
        self.dead_lettered = counter(
            "auditevt_relay_dead_lettered",
            "Audit events relays dead-lettered (rejected, or out of attempts).",
        )
        self.export_errors = counter(
            "auditevt_relay_export_errors",
            "Batches whose exporter failed unexpectedly (a bug); their events stay queued.",
        )

    def set_gauges(self, pending: int, oldest_age: float, dead_letters: int) -> None:
        """Set the outbox gauges from a fresh count."""
        self.pending.set(pending)
        self.oldest_age.set(oldest_age)
        self.dead_letters.set(dead_letters)


_metrics_by_registry: weakref.WeakKeyDictionary[Any, RelayMetrics] = weakref.WeakKeyDictionary()


def metrics_for(registry: Any) -> RelayMetrics | None:
    """The metrics in ``registry`` (None: the default one); None without prometheus_client."""
    try:
        import prometheus_client
    except ImportError:
        return None
    if registry is None:
        registry = prometheus_client.REGISTRY
    metrics = _metrics_by_registry.get(registry)
    if metrics is None:
        try:
            metrics = RelayMetrics(registry)
        except ValueError as exc:  # the names are taken by someone else's collectors
            logger.warning("relay metrics disabled: %s", exc)
            return None
        _metrics_by_registry[registry] = metrics
    return metrics
