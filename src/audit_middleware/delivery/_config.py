"""``RelayConfig`` (how a relay batches, leases and waits; its policy) and ``RelayStats``."""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import socket

from audit_middleware._exceptions import ConfigurationError
from audit_middleware.delivery._policy import DeliveryPolicy
from audit_middleware.storage._outbox_types import DEFAULT_MAX_BATCH_BYTES, OutboxBackoff
from auditevt._ingest import MAX_INGEST_ITEMS

__all__ = ["RelayConfig", "RelayStats", "check_seconds", "default_owner"]


def default_owner() -> str:
    """A lease owner id unique to this relay: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def check_seconds(name: str, value: object, *, positive: bool = True) -> None:
    """Raise TypeError or ValueError, naming ``name`` and ``value``, unless it is seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigurationError(f"{name} must be finite and {bound}, got {value!r}")


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    in_range = isinstance(value, int) and low <= value and (high is None or value <= high)
    if isinstance(value, bool) or not in_range:
        span = f">= {low}" if high is None else f"from {low} to {high}"
        raise ConfigurationError(f"RelayConfig.{name} must be an int {span}, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RelayConfig:
    """How a relay batches, leases and waits, and its delivery policy; safe defaults all."""

    batch_size: int = 500
    """Most events per request (1 to 500, the envelope's limit)."""
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    """Most bytes of envelope per request (1 MiB); a bigger single event is sent alone."""
    lease_seconds: float = 60.0
    """How long a claim holds its rows; after a crash they are claimable again this much later.

    A batch is given up (and rescheduled) after three quarters of it, so keep it above the
    client's retry deadline plus its read timeout if you want those retries to run their course.
    """
    sweep_interval: float = 2.0
    """Longest sleep of an idle relay before it looks again without being notified: picks up
    rows written by other processes, retries coming due and rows of crashed relays."""
    drain_timeout: float = 10.0
    """How long ``stop()`` (and the ASGI lifespan's shutdown) keeps delivering before it leaves
    the rest for the next start."""
    policy: DeliveryPolicy = dataclasses.field(default_factory=DeliveryPolicy)
    """What dead-letters, the attempt limit and the one backoff (in database time)."""
    backoff: OutboxBackoff | None = None
    """Shorthand: replaces ``policy.backoff`` (None keeps it). What is in force is always
    ``policy``."""
    max_pause: float | None = None
    """Shorthand: replaces ``policy.max_pause`` (None keeps it). What is in force is always
    ``policy``."""
    stats_interval: float = 15.0
    """How often the Prometheus gauges (pending, oldest pending age, dead letters) are
    refreshed from the database while the relay runs."""
    log_interval: float = 60.0
    """A persistent failure is logged at most once per this many seconds, per reason."""
    max_in_flight: int = 1
    """Batches in flight at once (PostgreSQL only; SQLite sends one at a time). More than one
    keeps Telemetry busy while the relay claims and acknowledges; memory stays bounded by
    ``max_in_flight`` batches, whatever the backlog."""
    max_split_requests: int = 20
    """Requests a refused batch may spend on splitting before any is answered (then the
    refusal is taken to be Telemetry's and the batch rescheduled)."""
    owner: str | None = None
    """The lease owner id; None gives each relay its own ``host:pid:random``."""
    metrics: bool = True
    """Report to Prometheus when ``prometheus_client`` is installed (the same switch as
    ``AuditConfig.metrics``)."""

    def __post_init__(self) -> None:
        size = self.batch_size
        if isinstance(size, bool) or not isinstance(size, int):
            raise ConfigurationError(f"RelayConfig.batch_size must be an int, got {size!r}")
        if not 1 <= size <= MAX_INGEST_ITEMS:
            raise ConfigurationError(
                f"RelayConfig.batch_size must be from 1 to {MAX_INGEST_ITEMS}, got {size!r}"
            )
        _check_int("max_batch_bytes", self.max_batch_bytes, 1024)
        for name in ("lease_seconds", "sweep_interval", "stats_interval"):
            check_seconds(f"RelayConfig.{name}", getattr(self, name))
        for name in ("drain_timeout", "log_interval"):
            check_seconds(f"RelayConfig.{name}", getattr(self, name), positive=False)
        if not isinstance(self.policy, DeliveryPolicy):
            raise ConfigurationError(
                f"RelayConfig.policy must be a DeliveryPolicy, got {self.policy!r}"
            )
        if self.backoff is not None and not isinstance(self.backoff, OutboxBackoff):
            raise ConfigurationError(
                f"RelayConfig.backoff must be an OutboxBackoff, got {self.backoff!r}"
            )
        # The shorthands fold into the policy, which alone is in force (read config.policy).
        policy = self.policy
        if self.backoff is not None:
            policy = dataclasses.replace(policy, backoff=self.backoff)
        if self.max_pause is not None:
            check_seconds("RelayConfig.max_pause", self.max_pause, positive=False)
            policy = dataclasses.replace(policy, max_pause=self.max_pause)
        object.__setattr__(self, "policy", policy)
        _check_int("max_in_flight", self.max_in_flight, 1, 16)
        _check_int("max_split_requests", self.max_split_requests, 0)
        if self.owner is not None and (not isinstance(self.owner, str) or not self.owner.strip()):
            raise ConfigurationError(
                f"RelayConfig.owner must be a non-empty string or None, got {self.owner!r}"
            )


@dataclasses.dataclass(frozen=True, slots=True)
class RelayStats:
    """The outbox as the database sees it, and what this relay did since it was created."""

    pending: int
    """Events not yet delivered nor dead-lettered, in the whole outbox."""
    leased: int
    """Of those, events some relay is sending right now."""
    oldest_pending_age_s: float
    """Seconds since the oldest pending event was written (0 when none is pending): alert on
    this one."""
    dead_letters: int
    """Dead-lettered events kept in the outbox now (all relays, all time, until re-driven)."""
    delivered: int
    """Events this relay saw answered ``accepted`` or ``duplicate``."""
    retried: int
    """Event deliveries this relay rescheduled after a failure."""
    dead_lettered: int
    """Events this relay dead-lettered."""
    batches: int
    """Batches this relay exported that settled at least one event."""
    errors: int = 0
    """Batches whose exporter failed unexpectedly (a bug): left in the outbox, never
    dead-lettered."""
