"""Monthly partitions of ``audit_log`` on PostgreSQL: made ahead of time, and watched.

Migration 0004 partitions ``audit_log`` by ``event_id``, a UUIDv7 whose first 48 bits are the
write's Unix milliseconds, so each month of writes is one range of ids. A write never waits for
a partition: :meth:`Partitions.ensure` creates the current month's and the next
``months_ahead`` ones (the relay process and ``auditevt partitions`` call it), and whatever
falls outside every monthly range (an event written with an id of the caller's, or a month
nobody created) lands in ``audit_log_default``, which :meth:`Partitions.stats` reports so it
can be alerted on.

The work is done by SECURITY DEFINER functions the migration installs, so a role that may only
append audit rows (the app, the relay) can keep partitions ahead without owning the table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_middleware._exceptions import (
    ConfigurationError,
    StoreError,
    map_database_error,
)

__all__ = [
    "DEFAULT_MONTHS_AHEAD",
    "DEFAULT_PARTITION",
    "MAINTENANCE_INTERVAL",
    "Partition",
    "PartitionStats",
    "Partitions",
    "maintain_partitions",
    "month_bounds",
    "month_of_event_id",
    "next_month",
    "partition_month",
]

logger = logging.getLogger("audit_middleware.partitions")

#: Months of partitions kept ready after the current one.
DEFAULT_MONTHS_AHEAD = 3
#: The partition that catches rows outside every monthly range.
DEFAULT_PARTITION = "audit_log_default"

_MONTHLY = re.compile(r"^audit_log_(\d{4})_(\d{2})$")

_ENSURE = sa.text("SELECT public.auditevt_ensure_partitions(CAST(:since AS timestamptz), :months)")

# Partitions with their bounds, and what the statistics collector counts in the default one:
# its rows cannot be counted through row-level security by a role that serves every tenant.
_LIST = sa.text(
    """
    SELECT c.relname, pg_get_expr(c.relpartbound, c.oid),
           coalesce(s.n_live_tup, 0), pg_total_relation_size(c.oid)
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
    WHERE i.inhparent = to_regclass('public.audit_log')
    ORDER BY c.relname
    """
)


def partition_month(name: str) -> datetime | None:
    """The month (its first instant, UTC) a partition named ``audit_log_YYYY_MM`` holds; None
    for any other name (the default partition)."""
    match = _MONTHLY.match(name)
    return None if match is None else datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)


def next_month(month: datetime) -> datetime:
    """The first instant of the month after ``month``'s."""
    return datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)


def month_bounds(month: datetime) -> tuple[uuid.UUID, uuid.UUID]:
    """The ``event_id`` range ``[low, high)`` of ``month``'s partition (as the database's
    ``auditevt_month_uuid`` computes it: the month's first millisecond, then zeros)."""

    def first_id(moment: datetime) -> uuid.UUID:
        return uuid.UUID(int=int(moment.timestamp() * 1000) << 80)

    return first_id(month), first_id(next_month(month))


def month_of_event_id(event_id: uuid.UUID) -> datetime | None:
    """The first instant (UTC) of the month a UUIDv7 ``event_id`` was minted in; None for ids
    of other versions (they belong to the default partition)."""
    if event_id.version != 7:
        return None
    moment = datetime.fromtimestamp((event_id.int >> 80) / 1000, UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclasses.dataclass(frozen=True, slots=True)
class Partition:
    """One partition of ``audit_log``."""

    name: str
    """``audit_log_YYYY_MM``, or ``audit_log_default``."""
    month: datetime | None
    """The first instant (UTC) of the month it holds; None for the default partition."""
    live_rows: int
    """Rows the statistics collector counts (approximate, refreshed as PostgreSQL sees fit)."""
    size_bytes: int
    """Its size on disk, indexes included."""


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionStats:
    """The partitions as the database sees them now."""

    partitions: tuple[Partition, ...]
    """Every partition, monthly ones in order, the default one last."""
    months_ahead: int
    """Whole months after the current one that already have a partition."""
    default_rows: int
    """Rows in ``audit_log_default`` (from statistics): anything above 0 deserves a look."""


class Partitions:
    """Creates and reports the monthly partitions of ``audit_log`` (PostgreSQL only)."""

    def __init__(self, engine: AsyncEngine) -> None:
        if not isinstance(engine, AsyncEngine):
            raise ConfigurationError(
                f"engine must be a sqlalchemy AsyncEngine, not {type(engine).__name__}"
            )
        if engine.dialect.name != "postgresql":
            raise ConfigurationError(
                f"partitions need PostgreSQL; {engine.dialect.name} keeps audit_log in one "
                "table (every row is kept: it is append-only)"
            )
        self._engine = engine
        self._warned_default_rows = 0

    async def ensure(
        self, months_ahead: int = DEFAULT_MONTHS_AHEAD, *, since: datetime | None = None
    ) -> list[str]:
        """Create any missing partition from ``since`` (default: this month) to ``months_ahead``
        months after the current one; return the names of all of them, new or not."""
        if type(months_ahead) is not int or not 0 <= months_ahead <= 120:
            raise ConfigurationError(f"months_ahead={months_ahead!r} must be an int from 0 to 120")
        if since is not None and (not isinstance(since, datetime) or since.tzinfo is None):
            raise ConfigurationError(f"since={since!r} must be a timezone-aware datetime")
        try:
            async with self._engine.begin() as conn:
                rows = await conn.execute(
                    _ENSURE,
                    {"since": since or datetime.now(UTC), "months": months_ahead},
                )
                return [row[0] for row in rows]
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise map_database_error(exc, StoreError, "create audit_log partitions") from exc

    async def stats(self) -> PartitionStats:
        """Every partition, how far ahead they reach, and what landed in the default one.

        Logs a warning (once per increase) when the default partition holds rows.
        """
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(_LIST)).all()
                now = (await conn.execute(sa.text("SELECT now()"))).scalar_one()
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise map_database_error(exc, StoreError, "read audit_log partitions") from exc
        monthly: list[Partition] = []
        default: Partition | None = None
        for name, _bound, live, size in rows:
            month = partition_month(name)
            if month is not None:
                monthly.append(Partition(name, month, int(live), int(size)))
            elif name == DEFAULT_PARTITION:
                default = Partition(name, None, int(live), int(size))
        current = datetime(now.year, now.month, 1, tzinfo=UTC)
        ahead = max(
            (
                (p.month.year - current.year) * 12 + p.month.month - current.month
                for p in monthly
                if p.month is not None
            ),
            default=0,
        )
        default_rows = default.live_rows if default is not None else 0
        if default_rows > self._warned_default_rows:
            self._warned_default_rows = default_rows
            logger.warning(
                "%d row(s) landed in %s: their event_id is outside every monthly partition "
                "(ids not minted by the store, or a month that was not created ahead); "
                "run `auditevt partitions` and see docs/operations.md",
                default_rows,
                DEFAULT_PARTITION,
            )
        partitions = (*monthly, *(() if default is None else (default,)))
        return PartitionStats(partitions, ahead, default_rows)


#: Seconds between two maintenance passes of :func:`maintain_partitions` (six hours).
MAINTENANCE_INTERVAL = 6 * 3600.0


async def maintain_partitions(
    engine: AsyncEngine,
    *,
    months_ahead: int = DEFAULT_MONTHS_AHEAD,
    interval: float = MAINTENANCE_INTERVAL,
) -> None:
    """Keep partitions ``months_ahead`` months ahead and report the default partition, every
    ``interval`` seconds until cancelled (the relay process runs it). A failed pass is logged,
    never raised: the next pass tries again, and writes never wait for a partition."""
    partitions = Partitions(engine)
    while True:
        try:
            await partitions.ensure(months_ahead)
            await partitions.stats()  # logs when rows landed in the default partition
        except StoreError as exc:
            logger.error("audit_log partition maintenance failed (will retry): %s", exc)
        await asyncio.sleep(interval)
