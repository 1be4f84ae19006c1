"""The outbox's values: claimed items, statistics, dead letters, the backoff, argument checks.

I/O-free; the queue that produces them is in ``_outbox.py``.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
import warnings
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from audit_middleware._exceptions import ConfigurationError
from auditevt import _checks

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "ITEM_OVERHEAD_BYTES",
    "MAX_REASON_LENGTH",
    "DeadLetter",
    "OutboxBackoff",
    "OutboxItem",
    "OutboxStats",
    "check_ids",
    "check_int",
    "check_owner",
    "check_seconds",
    "ids_of",
    "reason_text",
    "rowcount",
]

#: The most envelope bytes one claim gathers (1 MiB), unless told otherwise.
DEFAULT_MAX_BATCH_BYTES = 1024 * 1024

#: What one item adds to the ingest envelope besides its event JSON:
#: ``{"event_id":"<36 characters>","event":`` ... ``},`` is 61 bytes; rounded up.
ITEM_OVERHEAD_BYTES = 64

#: The longest ``last_error`` kept: enough for a server's complaint, bounded for the table.
MAX_REASON_LENGTH = 2000


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxItem:
    """One claimed outbox row: what the relay sends."""

    id: int
    """The outbox row's id (what ``ack``/``retry_later``/``dead_letter`` take)."""
    event_id: uuid.UUID
    """The idempotency key, minted when the audit row was written."""
    payload: str
    """The canonical Event JSON, sent verbatim."""
    attempts: int
    """Failed deliveries so far."""

    @property
    def size(self) -> int:
        """The bytes this item adds to an ingest envelope."""
        return len(self.payload.encode()) + ITEM_OVERHEAD_BYTES


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxStats:
    """The outbox as the database sees it now."""

    pending: int
    """Rows not yet delivered and not dead-lettered (due, backing off, or leased)."""
    leased: int
    """Of those, rows a relay holds a live lease on (a batch in flight)."""
    oldest_pending_age_s: float
    """Seconds since the oldest pending row was written (0 when none is pending)."""
    dead_letters: int
    """Dead-lettered rows kept in the outbox now, for inspection and re-drive (a count of
    rows, not of what any relay did: that is ``RelayStats.dead_lettered``)."""

    @property
    def dead_lettered(self) -> int:
        """Deprecated alias of :attr:`dead_letters` (the name now means "dead-lettered by a
        relay" everywhere else)."""
        warnings.warn(
            "OutboxStats.dead_lettered is deprecated: use OutboxStats.dead_letters",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.dead_letters


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A row Telemetry rejected, with the reason."""

    id: int
    event_id: uuid.UUID
    organization_id: int
    reason: str
    attempts: int
    created_at: datetime | str
    """When the audit row was written (a string on SQLite, as stored)."""
    dead_lettered_at: datetime | str
    """When it was dead-lettered (a string on SQLite, as stored)."""
    payload: str


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxBackoff:
    """When a row whose delivery failed is tried again, computed by the database.

    After the n-th failure a row waits ``min(cap, base * 2 ** (n - 1))`` seconds, less a
    random share of up to ``jitter`` of it (so rows that failed together spread out).
    """

    base: float = 1.0
    """Seconds after the first failure."""
    cap: float = 300.0
    """The longest wait, in seconds."""
    jitter: float = 0.5
    """The share of each wait, from 0 to 1, that is drawn at random."""

    def __post_init__(self) -> None:
        for name in ("base", "cap", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigurationError(f"OutboxBackoff.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ConfigurationError(
                    f"OutboxBackoff.{name} must be finite and >= 0, got {value!r}"
                )
        if self.cap < self.base:
            raise ConfigurationError(
                f"OutboxBackoff.cap ({self.cap!r}) must be >= base ({self.base!r})"
            )
        if self.jitter > 1:
            raise ConfigurationError(
                f"OutboxBackoff.jitter must be from 0 to 1, got {self.jitter!r}"
            )

    def bounds(self, failures: int) -> tuple[float, float]:
        """The shortest and longest wait after ``failures`` failures (1 for the first)."""
        high = min(self.cap, self.base * 2.0 ** min(max(failures - 1, 0), 30))
        return high * (1 - self.jitter), high


def rowcount(result: Any) -> int:
    count = result.rowcount
    return int(count) if count is not None and count >= 0 else 0


def reason_text(text: str) -> str:
    if not isinstance(text, str):
        raise ConfigurationError(f"a reason must be a str, got {type(text).__name__}")
    text = text.strip() or "(no reason given)"
    if len(text) > MAX_REASON_LENGTH:
        text = text[: MAX_REASON_LENGTH - 3] + "..."
    return text


def check_owner(owner: object) -> None:
    if not isinstance(owner, str) or not owner.strip():
        raise ConfigurationError(f"owner must be a non-empty string, got {owner!r}")


def check_ids(ids: Iterable[int]) -> list[int]:
    if isinstance(ids, str | bytes):
        raise ConfigurationError(f"ids must be row ids, not the string {ids!r}")
    id_list = list(ids)
    for value in id_list:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(f"an outbox row id must be an int, got {value!r}")
    return sorted(set(id_list))


def check_int(name: str, value: object, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigurationError(f"{name} must be {span}, got {value!r}")


def check_seconds(name: str, value: object, *, positive: bool = False) -> None:
    _checks.check_seconds(name, value, positive=positive, error=ConfigurationError)


def ids_of(items: Sequence[OutboxItem]) -> list[int]:
    """The row ids of ``items``, in order."""
    return [item.id for item in items]
