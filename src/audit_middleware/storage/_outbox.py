"""The outbox as a queue: claim a batch, then acknowledge, retry later or dead-letter it.

This is the SQL half of the relay (what to send next); ``_relay.py`` is the other half (how
to send one batch, and when). Every method is one short transaction.

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
import dataclasses
import math
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_middleware._exceptions import OutboxError, map_database_error
from audit_middleware.storage._tables import AUDIT_OUTBOX, qualified
from auditevt._ingest import MAX_INGEST_ITEMS

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "ITEM_OVERHEAD_BYTES",
    "OutboxBackoff",
    "DeadLetter",
    "Outbox",
    "OutboxError",
    "OutboxItem",
    "OutboxStats",
]

#: The most envelope bytes one claim gathers (1 MiB), unless told otherwise.
DEFAULT_MAX_BATCH_BYTES = 1024 * 1024

#: What one item adds to the ingest envelope besides its event JSON:
#: ``{"event_id":"<36 characters>","event":`` ... ``},`` is 61 bytes; rounded up.
ITEM_OVERHEAD_BYTES = 64

#: The longest ``last_error`` kept: enough for a server's complaint, bounded for the table.
MAX_REASON_LENGTH = 2000

_T = AUDIT_OUTBOX
_ID_ARRAY = postgresql.ARRAY(sa.BigInteger())
_SQLITE_TIME = "%Y-%m-%d %H:%M:%f"


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
    dead_lettered: int
    """Rows Telemetry rejected, kept for inspection and re-drive."""


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
                raise TypeError(f"OutboxBackoff.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"OutboxBackoff.{name} must be finite and >= 0, got {value!r}")
        if self.cap < self.base:
            raise ValueError(f"OutboxBackoff.cap ({self.cap!r}) must be >= base ({self.base!r})")
        if self.jitter > 1:
            raise ValueError(f"OutboxBackoff.jitter must be from 0 to 1, got {self.jitter!r}")

    def bounds(self, failures: int) -> tuple[float, float]:
        """The shortest and longest wait after ``failures`` failures (1 for the first)."""
        high = min(self.cap, self.base * 2.0 ** min(max(failures - 1, 0), 30))
        return high * (1 - self.jitter), high


# One lock per SQLite file and event loop: relays of one process take turns on a SQLite file.
_sqlite_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


class _Dialect:
    """The few SQL expressions that differ between PostgreSQL and SQLite."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sqlite = name == "sqlite"

    def now(self) -> sa.ColumnElement[Any]:
        if self.sqlite:
            return sa.func.strftime(_SQLITE_TIME, "now")
        return sa.func.now()

    def now_plus(self, seconds: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        if self.sqlite:
            return sa.func.strftime(_SQLITE_TIME, "now", sa.func.printf("%+.6f seconds", seconds))
        return sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)

    def seconds_since(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        if self.sqlite:
            return (sa.func.julianday("now") - sa.func.julianday(column)) * 86400.0
        return sa.extract("epoch", sa.func.now() - column)

    def seconds_until(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        if self.sqlite:
            return (sa.func.julianday(column) - sa.func.julianday("now")) * 86400.0
        return sa.extract("epoch", column - sa.func.now())

    def id_in(self, ids: list[int]) -> sa.ColumnElement[bool]:
        if self.sqlite:
            return _T.c.id.in_(ids)
        # One array parameter, not one parameter per id: a 500-row batch stays a short query.
        return _T.c.id == sa.any_(sa.bindparam("ids", ids, type_=_ID_ARRAY))

    def greatest(self, *args: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # SQLite's max() with several arguments is the scalar maximum.
        return sa.func.max(*args) if self.sqlite else sa.func.greatest(*args)

    def least(self, *args: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.min(*args) if self.sqlite else sa.func.least(*args)

    def backoff_seconds(self, backoff: OutboxBackoff, min_delay: float) -> sa.ColumnElement[Any]:
        """The wait after this failure, from the row's ``attempts`` before it is incremented."""
        exponent = self.least(_T.c.attempts, sa.literal(30))
        if self.sqlite:
            # No power() in every SQLite build; random() is a signed 64-bit integer there.
            growth: sa.ColumnElement[Any] = sa.literal(1).op("<<")(exponent)
            unit: sa.ColumnElement[Any] = (sa.func.abs(sa.func.random()) % 1_000_000) / 1e6
        else:
            growth = sa.func.power(2.0, exponent)
            unit = sa.func.random()
        ceiling = self.least(sa.literal(float(backoff.cap)), float(backoff.base) * growth)
        jittered = ceiling * (1.0 - float(backoff.jitter) * unit)
        return self.greatest(sa.literal(float(min_delay)), jittered)


_PG_CLAIM = sa.text(
    """
    WITH due AS (
        SELECT id, octet_length(payload) + :overhead AS size
        FROM public.audit_outbox
        WHERE dead_lettered_at IS NULL
          AND next_attempt_at <= now()
          AND (lease_expires_at IS NULL OR lease_expires_at < now())
        ORDER BY id
        LIMIT :batch_size
        FOR UPDATE SKIP LOCKED
    ),
    fitting AS (
        SELECT id FROM (
            SELECT id,
                   sum(size) OVER (ORDER BY id) AS running,
                   row_number() OVER (ORDER BY id) AS position
            FROM due
        ) AS windowed
        WHERE running <= :max_bytes OR position = 1
    )
    UPDATE public.audit_outbox AS o
    SET lease_owner = :owner,
        lease_expires_at = now() + make_interval(secs => CAST(:lease_seconds AS double precision))
    FROM fitting
    WHERE o.id = fitting.id
    RETURNING o.id, o.event_id, o.payload, o.attempts
    """
).columns(_T.c.id, _T.c.event_id, _T.c.payload, _T.c.attempts)

# One UPDATE: SQLite takes its write lock when the statement starts, before the subquery reads.
_SQLITE_CLAIM = sa.text(
    """
    UPDATE main.audit_outbox
    SET lease_owner = :owner,
        lease_expires_at = strftime(:time_format, 'now', printf(:seconds_format, :lease_seconds))
    WHERE id IN (
        SELECT id FROM (
            SELECT id,
                   sum(length(CAST(payload AS BLOB)) + :overhead) OVER (ORDER BY id) AS running,
                   row_number() OVER (ORDER BY id) AS position
            FROM (
                SELECT id, payload FROM main.audit_outbox
                WHERE dead_lettered_at IS NULL
                  AND next_attempt_at <= strftime(:time_format, 'now')
                  AND (lease_expires_at IS NULL
                       OR lease_expires_at < strftime(:time_format, 'now'))
                ORDER BY id
                LIMIT :batch_size
            )
        )
        WHERE running <= :max_bytes OR position = 1
    )
    RETURNING id, event_id, payload, attempts
    """
).columns(_T.c.id, _T.c.event_id, _T.c.payload, _T.c.attempts)


class Outbox:
    """The ``audit_outbox`` table as a queue of batches, on PostgreSQL or SQLite.

    Creating it does nothing; each method runs one transaction on ``engine``. Database errors
    raise :class:`OutboxError`.
    """

    def __init__(self, engine: AsyncEngine, *, backoff: OutboxBackoff | None = None) -> None:
        if not isinstance(engine, AsyncEngine):
            raise TypeError(f"engine must be a sqlalchemy AsyncEngine, got {type(engine).__name__}")
        name = engine.dialect.name
        if name not in ("postgresql", "sqlite"):
            raise ValueError(f"the outbox runs on PostgreSQL or SQLite, not {name!r}")
        if backoff is not None and not isinstance(backoff, OutboxBackoff):
            raise TypeError(f"backoff must be an OutboxBackoff, got {type(backoff).__name__}")
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
        self._sql = _Dialect(name)

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
        _check_int("batch_size", batch_size, 1, MAX_INGEST_ITEMS)
        _check_int("max_bytes", max_bytes, 1, None)
        _check_seconds("lease_seconds", lease_seconds, positive=True)
        _check_owner(owner)
        params: dict[str, Any] = {
            "batch_size": batch_size,
            "max_bytes": max_bytes,
            "lease_seconds": float(lease_seconds),
            "owner": owner,
            "overhead": ITEM_OVERHEAD_BYTES,
        }
        if self._sql.sqlite:
            statement = _SQLITE_CLAIM
            params |= {"time_format": _SQLITE_TIME, "seconds_format": "%+.6f seconds"}
        else:
            statement = _PG_CLAIM
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
        _check_owner(owner)
        id_list = _check_ids(ids)
        if not id_list:
            return 0
        statement = sa.delete(_T).where(self._sql.id_in(id_list), _T.c.lease_owner == owner)
        async with self._transaction("acknowledge delivered outbox rows") as conn:
            return _rowcount(await conn.execute(statement))

    async def retry_later(
        self, ids: Iterable[int], error: str, *, owner: str, min_delay: float = 0.0
    ) -> int:
        """Give rows back with one more failed attempt, due again after backoff.

        The wait (at least ``min_delay`` seconds) is computed per row from its attempts, in
        database time; the lease is cleared and ``error`` kept as ``last_error``.
        """
        _check_owner(owner)
        _check_seconds("min_delay", min_delay)
        id_list = _check_ids(ids)
        if not id_list:
            return 0
        delay = self._sql.backoff_seconds(self._backoff, min_delay)
        statement = (
            sa.update(_T)
            .where(self._sql.id_in(id_list), _T.c.lease_owner == owner)
            .values(
                attempts=_T.c.attempts + 1,
                next_attempt_at=self._sql.now_plus(delay),
                lease_owner=None,
                lease_expires_at=None,
                last_error=_reason(error),
            )
        )
        async with self._transaction("reschedule outbox rows") as conn:
            return _rowcount(await conn.execute(statement))

    async def release(self, ids: Iterable[int], *, owner: str) -> int:
        """Give rows back unsent and due at once, without counting an attempt (shutdown)."""
        _check_owner(owner)
        id_list = _check_ids(ids)
        if not id_list:
            return 0
        statement = (
            sa.update(_T)
            .where(self._sql.id_in(id_list), _T.c.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )
        async with self._transaction("release outbox rows") as conn:
            return _rowcount(await conn.execute(statement))

    async def dead_letter(self, id: int, reason: str, *, owner: str | None) -> int:
        """Set one row aside as undeliverable, with ``reason``; see :meth:`dead_letter_many`."""
        return await self.dead_letter_many({id: reason}, owner=owner)

    async def dead_letter_many(self, reasons: Mapping[int, str], *, owner: str | None) -> int:
        """Set rows aside as undeliverable, each with its reason; they are kept, not deleted.

        With an ``owner``, only rows it holds are touched; ``owner=None`` is for operators.
        """
        if owner is not None:
            _check_owner(owner)
        if not isinstance(reasons, Mapping):
            raise TypeError(f"reasons must map row ids to reasons, got {type(reasons).__name__}")
        id_list = _check_ids(reasons)
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
        rows = [{"row_id": row_id, "reason": _reason(reasons[row_id])} for row_id in id_list]
        async with self._transaction("dead-letter outbox rows", single=False) as conn:
            return _rowcount(await conn.execute(statement, rows))

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
            dead_lettered=int(row[3]),
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
        _check_int("limit", limit, 1, 10_000)
        _check_int("after_id", after_id, 0, None)
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
            id_list = _check_ids(ids)
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
            return _rowcount(await conn.execute(statement))

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


def _rowcount(result: Any) -> int:
    count = result.rowcount
    return int(count) if count is not None and count >= 0 else 0


def _reason(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"a reason must be a str, got {type(text).__name__}")
    text = text.strip() or "(no reason given)"
    if len(text) > MAX_REASON_LENGTH:
        text = text[: MAX_REASON_LENGTH - 3] + "..."
    return text


def _check_owner(owner: object) -> None:
    if not isinstance(owner, str) or not owner.strip():
        raise ValueError(f"owner must be a non-empty string, got {owner!r}")


def _check_ids(ids: Iterable[int]) -> list[int]:
    if isinstance(ids, str | bytes):
        raise TypeError(f"ids must be row ids, not the string {ids!r}")
    id_list = list(ids)
    for value in id_list:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"an outbox row id must be an int, got {value!r}")
    return sorted(set(id_list))


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {span}, got {value!r}")


def _check_seconds(name: str, value: object, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")


def ids_of(items: Sequence[OutboxItem]) -> list[int]:
    """The row ids of ``items``, in order."""
    return [item.id for item in items]
