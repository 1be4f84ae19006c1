"""The outbox's SQL: the few expressions that differ between PostgreSQL and SQLite, and the
claim statements."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from audit_middleware.storage._outbox_types import OutboxBackoff
from audit_middleware.storage._tables import AUDIT_OUTBOX

__all__ = ["PG_CLAIM", "SQLITE_CLAIM", "SQLITE_TIME", "Dialect"]

_T = AUDIT_OUTBOX
_ID_ARRAY = postgresql.ARRAY(sa.BigInteger())
SQLITE_TIME = "%Y-%m-%d %H:%M:%f"
_SQLITE_TIME = SQLITE_TIME


class Dialect:
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


PG_CLAIM = sa.text(
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
SQLITE_CLAIM = sa.text(
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
