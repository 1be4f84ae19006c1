"""Counters of what the middleware did: a plain dataclass, mirrored to Prometheus when installed.

``prometheus_client`` is optional. Its counter is created on the first count, never at import,
and once per process (registering the same name twice is an error), so any number of middleware
instances share it, told apart by nothing but their outcomes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PROMETHEUS_COUNTER", "AuditStats", "Outcome"]

Outcome = Literal["written", "failed", "failed_open", "skipped", "anonymous"]

PROMETHEUS_COUNTER = "audit_middleware_requests_total"
"""Name of the Prometheus counter, labelled ``outcome`` (the :class:`AuditStats` field names)."""

_lock = threading.Lock()
_counter: Any = None
_loaded = False
# counter.labels() takes a lock and builds a key; the five children are looked up once.
_children: dict[str, Any] = {}


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


def _prometheus_counter() -> Any:
    global _counter, _loaded
    with _lock:
        if not _loaded:
            _loaded = True
            try:
                from prometheus_client import Counter
            except ImportError:
                _counter = None
            else:
                _counter = Counter(
                    PROMETHEUS_COUNTER,
                    "Audited requests handled by AuditMiddleware, by outcome.",
                    ["outcome"],
                )
        return _counter


def count(stats: AuditStats, outcome: Outcome, prometheus: bool) -> None:
    """Add one to ``stats.<outcome>`` and to the Prometheus counter when enabled."""
    setattr(stats, outcome, getattr(stats, outcome) + 1)
    if prometheus:
        child = _children.get(outcome)
        if child is None:
            counter = _prometheus_counter()
            if counter is None:
                return
            child = _children[outcome] = counter.labels(outcome)
        child.inc()
