"""Retention: whole monthly partitions of ``audit_log`` leave once they are old enough.

Rows are never updated or deleted one by one (the table is append-only, and stays so): a month
older than the retention window goes as one partition, detached and dropped, and only when

- every event in it was delivered (no outbox row of its range remains, dead letters included);
- every row in it is sealed, where sealing is installed (``audit_seals`` exists);
- no organization with a row in it is under a legal hold (``audit_legal_hold``).

Each removal is one short transaction that locks the partition against writes, checks the
above again, detaches and drops it, and records what it took in ``audit_retention_log``
(partition, month, row count, id range, export file); it is logged too. With ``export_dir``
the partition's rows (``id``, ``event_id`` and the exact event JSON) are first written to a JSON
Lines file there, fsynced, and the file's row count is checked in that transaction.

Reading whole partitions needs a role that row-level security does not hold (a superuser or a
role with BYPASSRLS): retention is a DBA's job, not the application's. SQLite has no
partitions and keeps every row.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_middleware._exceptions import ConfigurationError, StoreError, map_database_error
from audit_middleware.storage._partitions import month_bounds, next_month, partition_month

__all__ = ["RetentionDecision", "RetentionWindow", "apply_retention", "plan_retention"]

logger = logging.getLogger("audit_middleware.retention")

_KEEP = re.compile(r"^\s*(\d{1,4})\s*([ymd])\s*$")
_LOCK_TIMEOUT = "5s"
_EXPORT_CHUNK = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class RetentionWindow:
    """How long audit rows are kept: whole months (``6y``, ``18m``) or days (``2555d``)."""

    months: int = 0
    """Months kept (a year is 12)."""
    days: int = 0
    """Days kept, for windows given in days."""

    @classmethod
    def parse(cls, text: str) -> RetentionWindow:
        """``6y``, ``18m`` or ``400d``; ``ConfigurationError`` names anything else."""
        match = _KEEP.match(text) if isinstance(text, str) else None
        if match is None or int(match[1]) == 0:
            raise ConfigurationError(
                f"keep={text!r} must be a positive number of years, months or days: "
                "6y, 18m or 400d"
            )
        number, unit = int(match[1]), match[2]
        if unit == "y":
            return cls(months=12 * number)
        if unit == "m":
            return cls(months=number)
        return cls(days=number)

    def cutoff(self, now: datetime) -> datetime:
        """The instant before which rows are outside the window."""
        if self.days:
            return datetime.fromtimestamp(now.timestamp() - self.days * 86400, UTC)
        months = now.year * 12 + now.month - 1 - self.months
        day = min(now.day, 28)  # the same day of an earlier month, or the 28th
        return now.astimezone(UTC).replace(year=months // 12, month=months % 12 + 1, day=day)

    def __str__(self) -> str:
        if self.days:
            return f"{self.days}d"
        return f"{self.months // 12}y" if self.months % 12 == 0 else f"{self.months}m"


@dataclasses.dataclass(frozen=True, slots=True)
class RetentionDecision:
    """What retention does (or did) with one partition older than the window."""

    partition: str
    """``audit_log_YYYY_MM``."""
    month: datetime
    """The first instant (UTC) of the month it holds."""
    rows: int
    """Rows in it."""
    min_id: int | None
    """Its lowest ``audit_log.id`` (None when empty)."""
    max_id: int | None
    """Its highest ``audit_log.id`` (None when empty)."""
    kept_because: tuple[str, ...]
    """Why it stays; empty when it is (or would be) removed."""
    exported_to: str | None = None
    """The JSON Lines file its rows were written to before removal."""

    @property
    def removable(self) -> bool:
        """Nothing keeps it."""
        return not self.kept_because


async def _old_partitions(conn: AsyncConnection, cutoff: datetime) -> list[tuple[str, datetime]]:
    rows = await conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass('public.audit_log') ORDER BY c.relname"
        )
    )
    old = []
    for (name,) in rows:
        month = partition_month(name)
        if month is not None and next_month(month) <= cutoff:
            old.append((name, month))
    return old


async def _require_bypass(conn: AsyncConnection) -> None:
    row = (
        await conn.execute(
            sa.text(
                "SELECT current_user, rolsuper OR rolbypassrls FROM pg_roles"
                " WHERE rolname = current_user"
            )
        )
    ).one()
    if not row[1]:
        raise StoreError(
            f"retention reads whole partitions, which row-level security hides from role "
            f"{row[0]!r}: run it as a superuser or a role with BYPASSRLS"
        )


async def _decide(
    conn: AsyncConnection, name: str, month: datetime, *, digest: bool = False
) -> tuple[RetentionDecision, bytes | None]:
    """The decision for one partition, and (``digest``) the SHA-256 of its ids in order, in
    the same scan: a month of a million rows is read once."""
    low, high = month_bounds(month)
    if digest:
        # Ids in index order (an old month's are all visible: an index-only scan, no sort).
        query = (
            "SELECT count(*), min(id), max(id),"
            " sha256(coalesce(string_agg(int8send(id), ''::bytea), ''::bytea))"
            f' FROM (SELECT id FROM public."{name}" ORDER BY id) AS ids'
        )
    else:
        query = f'SELECT count(*), min(id), max(id), NULL::bytea FROM public."{name}"'
    counted = (await conn.execute(sa.text(query))).one()
    rows, min_id, max_id = int(counted[0]), counted[1], counted[2]
    reasons: list[str] = []
    undelivered = (
        await conn.execute(
            sa.text(
                "SELECT count(*) FROM public.audit_outbox"
                " WHERE event_id >= :low AND event_id < :high"
            ),
            {"low": low, "high": high},
        )
    ).scalar_one()
    if undelivered:
        reasons.append(f"{undelivered} event(s) not delivered to Telemetry yet")
    # Holds are few: one index probe per held organization, not a join over the month.
    held = (
        await conn.execute(
            sa.text(
                "SELECT array_agg(h.organization_id ORDER BY h.organization_id)"
                " FROM public.audit_legal_hold h WHERE EXISTS"
                f' (SELECT FROM public."{name}" p WHERE p.organization_id = h.organization_id)'
            )
        )
    ).scalar_one()
    if held:
        reasons.append(f"legal hold on organization(s) {', '.join(map(str, held))}")
    unsealed = await _unsealed(conn, max_id)
    if unsealed:
        reasons.append(unsealed)
    decision = RetentionDecision(name, month, rows, min_id, max_id, tuple(reasons))
    return decision, None if counted[3] is None else bytes(counted[3])


async def _unsealed(conn: AsyncConnection, max_id: int | None) -> str | None:
    """Why rows up to ``max_id`` are not sealed yet, or None (sealed, or no sealing here)."""
    if max_id is None:
        return None
    installed = (
        await conn.execute(sa.text("SELECT to_regclass('public.audit_seals')"))
    ).scalar_one()
    if installed is None:
        return None
    sealed_to = (
        await conn.execute(sa.text("SELECT max(last_id) FROM public.audit_seals"))
    ).scalar_one()
    if sealed_to is None or sealed_to < max_id:
        return f"rows up to id {max_id} are not sealed (sealed up to {sealed_to or 0})"
    return None


async def plan_retention(engine: AsyncEngine, keep: RetentionWindow) -> list[RetentionDecision]:
    """Each partition older than ``keep``, and whether it may go (nothing is changed)."""
    old = await _partitions_older_than(engine, keep)
    try:
        async with engine.connect() as conn:
            return [(await _decide(conn, name, month))[0] for name, month in old]
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise map_database_error(exc, StoreError, "plan audit_log retention") from exc


async def _partitions_older_than(
    engine: AsyncEngine, keep: RetentionWindow
) -> list[tuple[str, datetime]]:
    _check_engine(engine)
    try:
        async with engine.connect() as conn:
            await _require_bypass(conn)
            now = (await conn.execute(sa.text("SELECT now()"))).scalar_one()
            return await _old_partitions(conn, keep.cutoff(now))
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise map_database_error(exc, StoreError, "plan audit_log retention") from exc


async def apply_retention(
    engine: AsyncEngine, keep: RetentionWindow, *, export_dir: str | Path | None = None
) -> list[RetentionDecision]:
    """Remove every partition older than ``keep`` that nothing keeps; return every decision.

    A partition's removal and its ``audit_retention_log`` row commit together; one that cannot
    be removed is reported with the reasons and left as it is.
    """
    if export_dir is None:
        # Decided inside each removal's transaction: a month is scanned once, not twice.
        done = []
        for name, month in await _partitions_older_than(engine, keep):
            pending = RetentionDecision(name, month, 0, None, None, ())
            done.append(await _remove(engine, pending, None))
        return done
    decisions = await plan_retention(engine, keep)
    done = []
    for decision in decisions:
        if not decision.removable:
            reasons = "; ".join(decision.kept_because)
            logger.info("retention keeps %s: %s", decision.partition, reasons)
            done.append(decision)
            continue
        exported = None
        if export_dir is not None:
            exported = await _export(engine, decision.partition, Path(export_dir))
        done.append(await _remove(engine, decision, exported))
    return done


async def _export(engine: AsyncEngine, name: str, directory: Path) -> tuple[str, int]:
    folder = anyio.Path(directory)
    path = folder / f"{name}.jsonl"
    count = 0
    try:
        await folder.mkdir(parents=True, exist_ok=True)
        async with engine.connect() as conn, await anyio.open_file(path, "w") as out:
            result = await conn.stream(
                sa.text(f'SELECT id, event_id, event_json FROM public."{name}" ORDER BY id')
            )
            # The event JSON goes out exactly as stored; lines are written a chunk at a time.
            async for chunk in result.partitions(_EXPORT_CHUNK):
                lines = [
                    f'{{"id":{row_id},"event_id":"{event_id}","event":{event_json}}}\n'
                    for row_id, event_id, event_json in chunk
                ]
                await out.write("".join(lines))
                count += len(lines)
            await out.flush()
            await anyio.to_thread.run_sync(os.fsync, out.wrapped.fileno())
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise map_database_error(exc, StoreError, f"export {name}") from exc
    return str(path), count


async def _remove(
    engine: AsyncEngine, decision: RetentionDecision, exported: tuple[str, int] | None
) -> RetentionDecision:
    name = decision.partition
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'"))
            # No write reaches the partition from here on; then check everything again.
            await conn.execute(sa.text(f'LOCK TABLE public."{name}" IN SHARE MODE'))
            again, digest = await _decide(conn, name, decision.month, digest=True)
            if exported is not None and exported[1] != again.rows:
                reason = f"export holds {exported[1]} rows, the partition {again.rows}"
                again = dataclasses.replace(again, kept_because=(*again.kept_because, reason))
            if not again.removable:
                logger.info("retention keeps %s: %s", name, "; ".join(again.kept_because))
                return again
            # The removed ids' digest is what verification needs to tell this removal from a
            # deletion (see integrity/_retired.py).
            await conn.execute(
                sa.text(f'ALTER TABLE public.audit_log DETACH PARTITION public."{name}"')
            )
            await conn.execute(sa.text(f'DROP TABLE public."{name}"'))
            await conn.execute(_LOG, {**_log_params(again, exported), "digest": digest})
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise map_database_error(exc, StoreError, f"remove {name}") from exc
    logger.warning(
        "retention removed %s: %d row(s), ids %s to %s%s",
        name,
        again.rows,
        again.min_id,
        again.max_id,
        f", exported to {exported[0]}" if exported else "",
    )
    return dataclasses.replace(again, exported_to=exported[0] if exported else None)


_LOG = sa.text(
    "INSERT INTO public.audit_retention_log (partition_name, range_start, range_end, row_count,"
    " min_id, max_id, ids_sha256, exported_to) VALUES (:name, :start, :end, :rows, :min_id,"
    " :max_id, :digest, :exported_to)"
)


def _log_params(decision: RetentionDecision, exported: tuple[str, int] | None) -> dict[str, Any]:
    return {
        "name": decision.partition,
        "start": decision.month,
        "end": next_month(decision.month),
        "rows": decision.rows,
        "min_id": decision.min_id,
        "max_id": decision.max_id,
        "exported_to": exported[0] if exported else None,
    }


def _check_engine(engine: AsyncEngine) -> None:
    if not isinstance(engine, AsyncEngine):
        raise ConfigurationError(
            f"engine must be a sqlalchemy AsyncEngine, not {type(engine).__name__}"
        )
    if engine.dialect.name != "postgresql":
        raise ConfigurationError(
            "retention needs PostgreSQL's partitions; SQLite keeps every audit row (its "
            "audit_log is one append-only table)"
        )
