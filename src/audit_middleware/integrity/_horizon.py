"""The safe horizon on PostgreSQL: the highest id below which no row can still appear.

Ids come from a sequence, drawn inside the write statement, and transactions commit in any
order: row 10's transaction may still be open while rows 11 to 500 are committed. A seal over
the range 1..500 taken then would leave row 10 out for ever. The rows' ``xmin`` and
``pg_snapshot_xmin(pg_current_snapshot())`` alone cannot rule that out: a transaction gets its
xid when it first writes a tuple, *after* the sequence handed it an id, so a writer with a low id
may hold a high xid, or none yet.

What does rule it out is the lock every INSERT takes first: ``RowExclusiveLock`` on
``audit_log`` is acquired when the statement starts, before ``nextval()`` runs, and held until the
transaction ends (after its commit is visible). So each observation reads, in this order,

1. ``L``: the sequence's last value (every id handed out so far is <= L), then
2. ``W``: the transactions holding ``RowExclusiveLock`` on ``audit_log`` (or a partition).

Every writer that can still commit an id <= L is in ``W``. A writer absent from one observation
and present in the next drew its ids after the first one's ``L``, so its ids are above that L.
The horizon is the smallest such bound over the writers still present (their ids are all above
it), or the newest ``L`` when no writer is present. Everything at or below the horizon is
committed or never will be; a fresh snapshot taken afterwards sees it. The state kept between
observations is one bound per open writer.

This needs the sequence's ``CACHE 1`` (the default): with a larger cache a backend hands out
ids it reserved earlier, below a later ``L``. :func:`observe_writers` refuses otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from audit_middleware._exceptions import IntegrityError

__all__ = ["WriterHorizon", "observe_writers"]

_SEQUENCE = """\
SELECT s.seqcache, pg_sequence_last_value(s.seqrelid)
FROM pg_sequence s WHERE s.seqrelid = pg_get_serial_sequence('public.audit_log', 'id')::regclass"""

# Granted only: a writer still waiting for the lock has not drawn an id yet.
_WRITERS = """\
SELECT DISTINCT l.virtualtransaction FROM pg_locks l
WHERE l.locktype = 'relation' AND l.mode = 'RowExclusiveLock' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation IN (SELECT 'public.audit_log'::regclass
                     UNION ALL SELECT relid FROM pg_partition_tree('public.audit_log'::regclass))
  AND l.pid <> pg_backend_pid()"""


async def observe_writers(conn: AsyncConnection) -> tuple[int, frozenset[str]]:
    """One observation ``(L, W)`` on ``conn``: two statements, in this order (see above)."""
    row = (await conn.exec_driver_sql(_SEQUENCE)).one_or_none()
    if row is None:
        raise IntegrityError("audit_log.id has no sequence: cannot find the safe horizon")
    cache, last = tuple(row)
    if cache != 1:
        raise IntegrityError(
            f"the sequence of audit_log.id has CACHE {cache}; sealing needs CACHE 1 "
            "(ALTER SEQUENCE audit_log_id_seq CACHE 1)"
        )
    writers = frozenset(str(v) for (v,) in await conn.exec_driver_sql(_WRITERS))
    return (int(last) if last is not None else 0), writers


@dataclass
class WriterHorizon:
    """The horizon's memory between observations: the last ``L`` and each open writer's bound."""

    last: int | None = None
    """``L`` of the previous observation (None before the first)."""
    bounds: dict[str, int | None] = field(default_factory=dict)
    """For each writer seen open: every id it holds is above this (None: not known)."""

    def advance(self, last: int, writers: frozenset[str]) -> int | None:
        """Take the observation ``(last, writers)``; return the safe horizon (None: unknown)."""
        bounds = {writer: self.bounds.get(writer, self.last) for writer in writers}
        self.bounds, self.last = bounds, last
        if not bounds:
            return last
        values = list(bounds.values())
        if any(value is None for value in values):
            return None
        return min(value for value in values if value is not None)
