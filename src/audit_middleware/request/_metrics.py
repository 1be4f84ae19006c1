"""Counters of what the middleware did: a plain dataclass, exported to Prometheus when installed.

Requests only add to :class:`AuditStats` fields (no lock, no lookup). When ``prometheus_client``
is installed, a collector registered once per process, on the first request of the first
middleware that wants it (never at import), reads every tracked ``AuditStats`` at scrape time
and reports their sums as the counter ``auditevt_middleware_requests_total{outcome=...}``.

The collector never keeps a middleware alive: it holds an ``AuditStats`` only while a middleware
that reports it lives. When the last one is garbage-collected, its counts are folded into a
running total, so the counter never goes down and memory stays bounded.
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Literal

__all__ = ["PROMETHEUS_COUNTER", "AuditStats", "Outcome", "track"]

Outcome = Literal["written", "failed", "failed_open", "skipped", "anonymous"]

PROMETHEUS_COUNTER = "auditevt_middleware_requests_total"
"""Name of the Prometheus counter, labelled ``outcome`` (the :class:`AuditStats` field names)."""


@dataclass(slots=True, weakref_slot=True)
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

_lock = threading.Lock()
_available: bool | None = None  # prometheus_client importable (and our collector registered)
# id(stats) -> [stats, how many live middlewares report it].
_live: dict[int, list[Any]] = {}
# What stats whose every middleware is gone had counted (so the counter never goes down) ...
_retired = dict.fromkeys(_OUTCOMES, 0)
# ... and, per such stats still alive elsewhere, its share of that, to take back if it is
# tracked again.
_folded: dict[int, tuple[weakref.ref[AuditStats], tuple[int, ...]]] = {}
# Filled by finalizers, which may run at any allocation (even under _lock): only appends here.
_gone: collections.deque[AuditStats] = collections.deque()


def _settle_gone() -> None:
    """Fold the stats of middlewares that were garbage-collected; call it holding ``_lock``."""
    while _gone:
        stats = _gone.popleft()
        entry = _live.get(id(stats))
        if entry is None:
            continue
        entry[1] -= 1
        if entry[1]:
            continue
        del _live[id(stats)]
        values = tuple(getattr(stats, outcome) for outcome in _OUTCOMES)
        for outcome, value in zip(_OUTCOMES, values, strict=True):
            _retired[outcome] += value
        _folded[id(stats)] = (weakref.ref(stats, _forget(id(stats))), values)


def _forget(key: int) -> Callable[[weakref.ref[AuditStats]], None]:
    """A weakref callback dropping ``_folded[key]`` once its stats is garbage-collected."""

    def forget(_: weakref.ref[AuditStats]) -> None:
        _folded.pop(key, None)

    return forget


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
            _settle_gone()
            tracked = [entry[0] for entry in _live.values()]
            retired = dict(_retired)
        for outcome in _OUTCOMES:
            live = sum(getattr(stats, outcome) for stats in tracked)
            family.add_metric([outcome], retired[outcome] + live)
        yield family

    def describe(self) -> Iterator[Any]:
        # Registration must not call collect(); nothing to describe ahead of time.
        return iter(())


def track(stats: AuditStats, owner: object) -> None:
    """Report ``stats`` to Prometheus for as long as ``owner`` (the middleware) lives.

    Registers the collector on first use, if ``prometheus_client`` is installed. Tracking the
    same ``stats`` for several owners counts it once.
    """
    global _available
    with _lock:
        if _available is None:
            try:
                from prometheus_client import REGISTRY
            except ImportError:
                _available = False
            else:
                REGISTRY.register(_StatsCollector())
                _available = True
        if not _available:
            return
        _settle_gone()
        entry = _live.get(id(stats))
        if entry is not None:
            entry[1] += 1
        else:
            _live[id(stats)] = [stats, 1]
            folded = _folded.pop(id(stats), None)
            if folded is not None and folded[0]() is stats:
                # Tracked again after its middlewares were gone: its counts are live again.
                for outcome, value in zip(_OUTCOMES, folded[1], strict=True):
                    _retired[outcome] -= value
    weakref.finalize(owner, _gone.append, stats)
