"""The outbox as a queue: claim a batch, then acknowledge, retry later or dead-letter it.

This is the storage half of delivery: what to send next. The relay (``delivery/``) decides
when, and its exporter how to send one batch. The values it takes and returns are in
``_outbox_types.py``, its SQL in ``_outbox_sql.py``. Every method is one short transaction.

On PostgreSQL a claim is one statement::

    WITH due AS (SELECT id ... WHERE dead_lettered_at IS NULL AND next_attempt_at <= now()
                 AND (lease_expires_at IS NULL OR lease_expires_at < now())
                 ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED),
         fitting AS (... running sum of payload bytes <= max_bytes ...)
    UPDATE audit_outbox SET lease_owner = me, lease_expires_at = now() + lease
    FROM fitting WHERE audit_outbox.id = fitting.id RETURNING id, event_id, payload, attempts

``SKIP LOCKED`` lets any number of relays claim at once without waiting on or taking each
other's rows, and the lease (not a held lock) is what keeps a row claimed while its batch is
sent: a relay that dies leaves rows that become claimable again once the lease expires. Only
the lease owner may delete (acknowledge), reschedule or dead-letter a row, so a relay that
outlived its lease cannot touch rows another relay has claimed since.

SQLite has neither ``SKIP LOCKED`` nor concurrent writers. The same claim is one ``UPDATE ...
RETURNING`` there, which takes SQLite's write lock before it reads (``BEGIN IMMEDIATE``
semantics), so claims stay disjoint even across processes; within a process,
:meth:`Outbox.exclusive` lets one relay work at a time. Run one relay per SQLite file.

Times are always the database's (``now()``; ``strftime('now')`` on SQLite), never this
process's clock, so relays on machines with skewed clocks agree on leases and backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_middleware._exceptions import ConfigurationError, OutboxError, map_database_error
from audit_middleware.storage._outbox_sql import (
    PG_CLAIM,
    SQLITE_CLAIM,
    SQLITE_TIME,
    Dialect,
)
from audit_middleware.storage._outbox_types import (
    DEFAULT_MAX_BATCH_BYTES,
    ITEM_OVERHEAD_BYTES,
    DeadLetter,
    OutboxBackoff,
    OutboxItem,
    OutboxStats,
    check_ids,
    check_int,
    check_owner,
    check_seconds,
    reason_text,
    rowcount,
)
from audit_middleware.storage._tables import AUDIT_OUTBOX, qualified
from auditevt._ingest import MAX_INGEST_ITEMS

# The values are re-exported: they were importable from here before the split.
__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "ITEM_OVERHEAD_BYTES",
    "DeadLetter",
    "Outbox",
    "OutboxBackoff",
    "OutboxError",
    "OutboxItem",
    "OutboxStats",
]

_T = AUDIT_OUTBOX


# One lock per SQLite file and event loop: relays of one process take turns on a SQLite file.
_sqlite_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


class Outbox:
    """The ``audit_outbox`` table as a queue of batches, on PostgreSQL or SQLite.

    Creating it does nothing; each method runs one transaction on ``engine``. Database errors
    raise :class:`OutboxError`.
    """

    def __init__(self, engine: AsyncEngine, *, backoff: OutboxBackoff | None = None) -> None:
        if not isinstance(engine, AsyncEngine):
            raise ConfigurationError(
                f"engine must be a sqlalchemy AsyncEngine, got {type(engine).__name__}"
            )
        name = engine.dialect.name
        if name not in ("postgresql", "sqlite"):
            raise ConfigurationError(f"the outbox runs on PostgreSQL or SQLite, not {name!r}")
        if backoff is not None and not isinstance(backoff, OutboxBackoff):
            raise ConfigurationError(
                f"backoff must be an OutboxBackoff, got {type(backoff).__name__}"
            )
        self._engine = engine
        # Core statements name the schema (see _tables.py); the SQL written out here does too.
        self._qualified = qualified(engine)
        # Each operation is a single statement, atomic on its own (dead_letter_many aside): on
        # PostgreSQL, autocommit spares the BEGIN and COMMIT round trips.
        self._autocommit = (
            self._qualified.execution_options(isolation_level="AUTOCOMMIT")
            if name == "postgresql"
            else None
        )
        self._backoff = backoff if backoff is not None else OutboxBackoff()
        self._sql = Dialect(name)

    @property
    def engine(self) -> AsyncEngine:
        """The engine every operation runs on."""
        return self._engine

    @property
    def backoff(self) -> OutboxBackoff:
        """How long failed rows wait before they are due again."""
        return self._backoff

    @property
    def dialect(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return self._sql.name

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Held by a relay around each batch: on SQLite one relay per process works at a time.

        On PostgreSQL this does nothing: ``SKIP LOCKED`` and leases let relays work in parallel.
        """
        if not self._sql.sqlite:
            yield
            return
        loop = asyncio.get_running_loop()
        locks = _sqlite_locks.setdefault(loop, {})
        key = str(self._engine.url.database)
        lock = locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield

    async def claim(
        self, batch_size: int, max_bytes: int, lease_seconds: float, owner: str
    ) -> list[OutboxItem]:
        """Lease up to ``batch_size`` due rows (at most ``max_bytes`` of envelope) to ``owner``.

        Oldest first. A single row larger than ``max_bytes`` is still claimed, alone, so that
        it is tried (and, if Telemetry refuses it, dead-lettered) rather than stuck forever.
        """
        check_int("batch_size", batch_size, 1, MAX_INGEST_ITEMS)
        check_int("max_bytes", max_bytes, 1, None)
        check_seconds("lease_seconds", lease_seconds, positive=True)
        check_owner(owner)
        params: dict[str, Any] = {
            "batch_size": batch_size,
            "max_bytes": max_bytes,
            "lease_seconds": float(lease_seconds),
            "owner": owner,
            "overhead": ITEM_OVERHEAD_BYTES,
        }
        if self._sql.sqlite:
            statement = SQLITE_CLAIM
            params |= {"time_format": SQLITE_TIME, "seconds_format": "%+.6f seconds"}
        else:
            statement = PG_CLAIM
        async with self._transaction("claim outbox rows") as conn:
            rows = (await conn.execute(statement, params)).all()
        items = [
            OutboxItem(id=row_id, event_id=event_id, payload=payload, attempts=attempts)
            for row_id, event_id, payload, attempts in rows
        ]
        items.sort(key=lambda item: item.id)  # RETURNING promises no order
        return items

    async def ack(self, ids: Iterable[int], *, owner: str) -> int:
        """Delete delivered rows that ``owner`` still holds; returns how many were deleted."""
        check_owner(owner)
        id_list = check_ids(ids)
        if not id_list:
            return 0
        statement = sa.delete(_T).where(self._sql.id_in(id_list), _T.c.lease_owner == owner)
        async with self._transaction("acknowledge delivered outbox rows") as conn:
            return rowcount(await conn.execute(statement))

    async def retry_later(
        self,
        ids: Iterable[int],
        error: str,
        *,
        owner: str,
        min_delay: float = 0.0,
        backoff: OutboxBackoff | None = None,
        counted: bool = True,
    ) -> int:
        """Give rows back, due again after backoff; returns how many were rescheduled.

        The wait (at least ``min_delay`` seconds) is computed per row from its attempts with
        ``backoff`` (default: this outbox's), in database time; the lease is cleared and
        ``error`` kept as ``last_error``. ``counted`` adds one failed attempt to each row;
        without it the wait stays at the rows' current step (a failure that says nothing
        about the events, such as a bug or a wrong configuration).
        """
        check_owner(owner)
        check_seconds("min_delay", min_delay)
        if backoff is not None and not isinstance(backoff, OutboxBackoff):
            raise ConfigurationError(
                f"backoff must be an OutboxBackoff, got {type(backoff).__name__}"
            )
        id_list = check_ids(ids)
        if not id_list:
            return 0
        delay = self._sql.backoff_seconds(backoff or self._backoff, min_delay)
        statement = (
            sa.update(_T)
            .where(self._sql.id_in(id_list), _T.c.lease_owner == owner)
            .values(
                attempts=_T.c.attempts + 1 if counted else _T.c.attempts,
                next_attempt_at=self._sql.now_plus(delay),
                lease_owner=None,
                lease_expires_at=None,
                last_error=reason_text(error),
            )
        )
        async with self._transaction("reschedule outbox rows") as conn:
            return rowcount(await conn.execute(statement))

    async def release(self, ids: Iterable[int], *, owner: str) -> int:
        """Give rows back unsent and due at once, without counting an attempt (shutdown)."""
        check_owner(owner)
        id_list = check_ids(ids)
        if not id_list:
            return 0
        statement = (
            sa.update(_T)
            .where(self._sql.id_in(id_list), _T.c.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )
        async with self._transaction("release outbox rows") as conn:
            return rowcount(await conn.execute(statement))

    async def dead_letter(self, id: int, reason: str, *, owner: str | None) -> int:
        """Set one row aside as undeliverable, with ``reason``; see :meth:`dead_letter_many`."""
        return await self.dead_letter_many({id: reason}, owner=owner)

    async def dead_letter_many(self, reasons: Mapping[int, str], *, owner: str | None) -> int:
        """Set rows aside as undeliverable, each with its reason; they are kept, not deleted.

        With an ``owner``, only rows it holds are touched; ``owner=None`` is for operators.
        """
        if owner is not None:
            check_owner(owner)
        if not isinstance(reasons, Mapping):
            raise ConfigurationError(
                f"reasons must map row ids to reasons, got {type(reasons).__name__}"
            )
        id_list = check_ids(reasons)
        if not id_list:
            return 0
        conditions = [_T.c.id == sa.bindparam("row_id"), _T.c.dead_lettered_at.is_(None)]
        if owner is not None:
            conditions.append(_T.c.lease_owner == owner)
        statement = (
            sa.update(_T)
            .where(*conditions)
            .values(
                attempts=_T.c.attempts + 1,
                dead_lettered_at=self._sql.now(),
                last_error=sa.bindparam("reason"),
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        rows = [{"row_id": row_id, "reason": reason_text(reasons[row_id])} for row_id in id_list]
        async with self._transaction("dead-letter outbox rows", single=False) as conn:
            return rowcount(await conn.execute(statement, rows))

    async def stats(self) -> OutboxStats:
        """Pending, leased and dead-lettered counts and the oldest pending row's age.

        Counting scans the table's live rows; call it every few seconds, not per batch.
        """
        pending = _T.c.dead_lettered_at.is_(None)
        leased = sa.and_(pending, _T.c.lease_expires_at.is_not(None))
        leased = sa.and_(leased, _T.c.lease_expires_at > self._sql.now())
        statement = sa.select(
            sa.func.count().filter(pending),
            sa.func.count().filter(leased),
            self._sql.seconds_since(sa.func.min(_T.c.created_at).filter(pending)),
            sa.func.count().filter(_T.c.dead_lettered_at.is_not(None)),
        )
        async with self._transaction("read outbox statistics") as conn:
            row = (await conn.execute(statement)).one()
        age = float(row[2]) if row[2] is not None else 0.0
        return OutboxStats(
            pending=int(row[0]),
            leased=int(row[1]),
            oldest_pending_age_s=max(age, 0.0),
            dead_letters=int(row[3]),
        )

    async def next_due_in(self) -> float | None:
        """Seconds until some pending row can be claimed (0 if one can now); None if none."""
        due_at = self._sql.greatest(
            _T.c.next_attempt_at, sa.func.coalesce(_T.c.lease_expires_at, _T.c.next_attempt_at)
        )
        statement = sa.select(self._sql.seconds_until(sa.func.min(due_at))).where(
            _T.c.dead_lettered_at.is_(None)
        )
        async with self._transaction("read the outbox's next due time") as conn:
            value = (await conn.execute(statement)).scalar()
        if value is None:
            return None
        return max(float(value), 0.0)

    async def dead_letters(self, *, limit: int = 100, after_id: int = 0) -> list[DeadLetter]:
        """Dead-lettered rows in id order, ``limit`` at a time after ``after_id`` (keyset)."""
        check_int("limit", limit, 1, 10_000)
        check_int("after_id", after_id, 0, None)
        statement = (
            sa.select(
                _T.c.id,
                _T.c.event_id,
                _T.c.organization_id,
                _T.c.last_error,
                _T.c.attempts,
                _T.c.created_at,
                _T.c.dead_lettered_at,
                _T.c.payload,
            )
            .where(_T.c.dead_lettered_at.is_not(None), _T.c.id > after_id)
            .order_by(_T.c.id)
            .limit(limit)
        )
        async with self._transaction("list dead-lettered outbox rows") as conn:
            rows = (await conn.execute(statement)).all()
        return [
            DeadLetter(
                id=row.id,
                event_id=row.event_id,
                organization_id=row.organization_id,
                reason=row.last_error or "",
                attempts=row.attempts,
                created_at=row.created_at,
                dead_lettered_at=row.dead_lettered_at,
                payload=row.payload,
            )
            for row in rows
        ]

    async def redrive(self, ids: Iterable[int] | None = None) -> int:
        """Make dead-lettered rows (``ids``, or all) deliverable again, due now.

        Their attempts start again from 0; ``last_error`` keeps the old reason until the next
        attempt. Returns how many rows were re-driven.
        """
        conditions: list[sa.ColumnElement[bool]] = [_T.c.dead_lettered_at.is_not(None)]
        if ids is not None:
            id_list = check_ids(ids)
            if not id_list:
                return 0
            conditions.append(self._sql.id_in(id_list))
        statement = (
            sa.update(_T)
            .where(*conditions)
            .values(
                dead_lettered_at=None,
                attempts=0,
                next_attempt_at=self._sql.now(),
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        async with self._transaction("re-drive dead-lettered outbox rows") as conn:
            return rowcount(await conn.execute(statement))

    @contextlib.asynccontextmanager
    async def _transaction(
        self, action: str, *, single: bool = True
    ) -> AsyncIterator[AsyncConnection]:
        # The one place database errors become ours.
        try:
            if single and self._autocommit is not None:
                async with self._autocommit.connect() as conn:
                    yield conn
            else:
                async with self._qualified.begin() as conn:
                    yield conn
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise map_database_error(exc, OutboxError, action) from exc
