"""``Sealer``: seals every committed row below the safe horizon into a signed, chained seal.

One pass (:meth:`Sealer.run_once`):

1. find the safe horizon ``H`` (PostgreSQL: :mod:`._horizon`; SQLite has one writer at a time,
   so every row a reader sees is below any row still being written and ``H`` is the highest
   visible id);
2. in one transaction, under an advisory lock so concurrent sealers queue: read the latest
   seal, the rows after it up to ``H`` (ids and row hashes only), build the RFC 6962 tree, sign
   the seal and insert it, with the sealed ids and hashes;
3. publish it to the sink (after the commit, so a published seal is always in the database);
   a seal the sink refused is tried again on every later pass, and a new sealer publishes the
   latest seal again first (a process that died between commit and publication).

:meth:`Sealer.run_forever` repeats it every ``interval`` seconds; run it next to the relay
(``docs/operations.md``).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy.exc
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from audit_middleware._exceptions import IntegrityError, map_database_error
from audit_middleware.integrity._horizon import WriterHorizon, observe_writers
from audit_middleware.integrity._keys import SigningKey
from audit_middleware.integrity._merkle import leaf_hash, merkle_root
from audit_middleware.integrity._metrics import IntegrityStats, track
from audit_middleware.integrity._rowhash import PG_ROW_HASH, row_hash
from audit_middleware.integrity._seal import GENESIS, Seal, SealFormatError, make_seal
from audit_middleware.integrity._sink import SealSink
from audit_middleware.storage._closing import EngineCloser
from audit_middleware.storage._tables import AUDIT_LOG, AUDIT_SEALS, qualified
from audit_middleware.storage._urls import async_url

__all__ = ["SEAL_LOCK_KEY", "Sealer", "SealerConfig", "create_engine"]

logger = logging.getLogger("audit_middleware.integrity")

SEAL_LOCK_KEY = 0x7365616C6572  # "sealer": the transaction-scoped advisory lock
_ID = struct.Struct(">q")

_LATEST_SEAL = (
    select(AUDIT_SEALS.c.seq, AUDIT_SEALS.c.last_id, AUDIT_SEALS.c.body, AUDIT_SEALS.c.signature)
    .order_by(AUDIT_SEALS.c.seq.desc())
    .limit(1)
)
# Content only where the writer left no hash (a writer older than migration 0003).
# SQLite: one writer at a time, every visible row is due (see the module doc).
_ROWS = """\
SELECT id, row_hash, CASE WHEN row_hash IS NULL THEN event_id END,
       CASE WHEN row_hash IS NULL THEN event_json END
FROM main.audit_log WHERE id > :after ORDER BY id LIMIT :limit"""
# PostgreSQL: one row back, whatever the count: the 8-byte ids and the 32-byte hashes,
# concatenated by the database, so no Python object is made per row. Both aggregates see the
# rows in one order; that it is id order is not guaranteed, so _split checks it.
_PG_ROWS = f"""\
SELECT count(*), max(id), string_agg(int8send(id), ''::bytea), string_agg(h, ''::bytea)
FROM (SELECT id, COALESCE(row_hash, {PG_ROW_HASH}) AS h FROM public.audit_log
      WHERE id > :after AND id <= :upto ORDER BY id LIMIT :limit) AS due"""


@dataclass(frozen=True)
class SealerConfig:
    """How a sealer paces itself."""

    max_rows: int = 1_000_000
    """Most rows one seal covers; a larger backlog is sealed over several passes."""
    settle: float = 2.0
    """Seconds a pass keeps watching writers still in flight before sealing what is safe."""
    poll_interval: float = 0.01
    """Seconds between two looks at the writers in flight."""
    interval: float = 60.0
    """Seconds between passes of :meth:`Sealer.run_forever`."""

    def __post_init__(self) -> None:
        if isinstance(self.max_rows, bool) or not isinstance(self.max_rows, int):
            raise TypeError(f"max_rows must be an int, not {self.max_rows!r}")
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {self.max_rows}")
        for name in ("settle", "poll_interval", "interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")


def create_engine(url: str | URL) -> AsyncEngine:
    """An engine for the sealer or verifier (fails fast when PostgreSQL is unreachable)."""
    parsed = async_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.drivername.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 5}
    return create_async_engine(parsed, **kwargs)


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _split(ids: bytes, hashes: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """(ids, row hashes, leaf hashes) in id order, from packed ids and hashes in any order."""
    values = [value for (value,) in _ID.iter_unpack(ids)]
    if any(a >= b for a, b in itertools.pairwise(values)):
        order = sorted(range(len(values)), key=values.__getitem__)
        ids = b"".join(ids[8 * i : 8 * i + 8] for i in order)
        hashes = b"".join(hashes[32 * i : 32 * i + 32] for i in order)
    sha256 = hashlib.sha256
    # A leaf is SHA-256(0x00 || id || row_hash), the id as the 8 bytes int8send gave.
    leaves = [
        sha256(b"\x00" + ids[8 * i : 8 * i + 8] + hashes[32 * i : 32 * i + 32]).digest()
        for i in range(len(values))
    ]
    return ids, hashes, leaves


class Sealer(EngineCloser):
    """Seals ``audit_log`` with ``key`` and publishes each seal to ``sink``.

    Give it an ``AsyncEngine`` (the store's ``engine`` will do, if its role may read every
    organization: a member of ``auditevt_sealer``) or use :meth:`from_url`. Nothing connects
    until :meth:`run_once`. ``stats`` collects what it did and is reported to Prometheus
    (``registry``, default the global one) when ``prometheus_client`` is installed.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        key: SigningKey,
        *,
        sink: SealSink | None = None,
        config: SealerConfig | None = None,
        stats: IntegrityStats | None = None,
        registry: Any = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not isinstance(engine, AsyncEngine):
            raise TypeError(f"engine must be a sqlalchemy AsyncEngine, not {type(engine).__name__}")
        if not isinstance(key, SigningKey):
            raise TypeError(f"key must be a SigningKey, not {type(key).__name__}")
        self._engine = engine
        # Core statements name the tables' schema (a TEMP table of the same name never wins).
        self._db = qualified(engine)
        self._owns_engine = False
        self._postgresql = engine.dialect.name == "postgresql"
        self._key = key
        self._sink = sink
        self.config = config if config is not None else SealerConfig()
        self.stats = stats if stats is not None else IntegrityStats()
        self._registry = registry
        self._tracked = False
        self._sleep = sleep
        self._horizon = WriterHorizon()
        self._republish_latest = sink is not None
        self._unpublished: dict[int, Seal] = {}

    @classmethod
    def from_url(cls, url: str | URL, key: SigningKey, **kwargs: Any) -> Sealer:
        """A sealer on a new engine for ``url`` (closed by :meth:`aclose`)."""
        sealer = cls(create_engine(url), key, **kwargs)
        sealer._owns_engine = True
        return sealer


    async def run_once(self) -> Seal | None:
        """Seal what is safe to seal now; return the new seal, or None when nothing was due.

        Raises ``IntegrityError`` when the database or the sink fails (a seal committed before
        a sink failure stays committed and is published again on the next pass).
        """
        if not self._tracked:
            track(self.stats, self._registry)
            self._tracked = True
        try:
            if self._republish_latest and self._sink is not None:
                await self._queue_latest()
            horizon = await self._safe_horizon() if self._postgresql else None
            seal = await self._seal(horizon)
            await self._note_unsealed(seal)
            if seal is not None and self._sink is not None:
                self._unpublished[seal.seq] = seal
            await self._publish_pending()
        except IntegrityError:
            self.stats.seal_failures += 1
            raise
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            self.stats.seal_failures += 1
            raise map_database_error(exc, IntegrityError, "seal audit_log") from exc
        except SealFormatError as exc:
            self.stats.seal_failures += 1
            message = f"the latest seal is damaged ({exc}): run auditevt verify"
            raise IntegrityError(message) from exc
        return seal

    async def run_forever(self) -> None:
        """:meth:`run_once` every ``config.interval`` seconds until cancelled; logs failures."""
        while True:
            try:
                while True:  # a backlog: full seals back to back
                    seal = await self.run_once()
                    if seal is None or seal.count < self.config.max_rows:
                        break
            except IntegrityError as exc:
                logger.error("sealing failed: %s", exc)
            await self._sleep(self.config.interval)

    async def _safe_horizon(self) -> int | None:
        async with self._db.connect() as raw:
            conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
            first, writers = await observe_writers(conn)
            horizon = self._horizon.advance(first, writers)
            deadline = time.monotonic() + self.config.settle
            # Writers in flight usually finish within milliseconds; a late one holds the
            # horizon below its ids until it ends (it is sealed by a later pass).
            while (horizon is None or horizon < first) and time.monotonic() < deadline:
                await self._sleep(self.config.poll_interval)
                horizon = self._horizon.advance(*await observe_writers(conn))
        return horizon

    async def _seal(self, horizon: int | None) -> Seal | None:
        if self._postgresql and horizon is None:
            return None
        async with self._db.begin() as conn:
            if self._postgresql:
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SEAL_LOCK_KEY})")
            latest = (await conn.execute(_LATEST_SEAL)).one_or_none()
            prev_seq, after = (0, 0) if latest is None else (int(latest[0]), int(latest[1]))
            prev_hash = GENESIS if latest is None else Seal.parse(latest[2], latest[3]).hash
            if horizon is not None and horizon <= after:
                return None
            count, top, ids_blob, hashes_blob, leaves = await self._rows(conn, after, horizon)
            if not count:
                return None
            full = count == self.config.max_rows
            last_id = top if full or horizon is None else horizon
            sealed_at = datetime.now(UTC)
            seal = make_seal(
                self._key,
                seq=prev_seq + 1,
                first_id=after + 1,
                last_id=last_id,
                count=count,
                root=merkle_root(leaves),
                prev=prev_hash,
                sealed_at=_utc_text(sealed_at),
            )
            await conn.execute(
                AUDIT_SEALS.insert().values(
                    seq=seal.seq,
                    first_id=seal.first_id,
                    last_id=seal.last_id,
                    row_count=seal.count,
                    key_id=seal.key_id,
                    sealed_at=sealed_at,
                    body=seal.body,
                    signature=seal.signature,
                    ids=ids_blob,
                    row_hashes=hashes_blob,
                )
            )
        self.stats.seals_written += 1
        self.stats.rows_sealed += seal.count
        logger.info(
            "sealed ids %d..%d (%d rows) as seal %d",
            seal.first_id,
            seal.last_id,
            seal.count,
            seal.seq,
        )
        return seal

    async def _rows(
        self, conn: AsyncConnection, after: int, horizon: int | None
    ) -> tuple[int, int, bytes, bytes, list[bytes]]:
        """(count, highest id, packed ids, packed row hashes, leaf hashes) of the rows due."""
        params: dict[str, Any] = {"after": after, "limit": self.config.max_rows}
        if self._postgresql:
            params["upto"] = horizon
            count, top, ids, hashes = (await conn.execute(text(_PG_ROWS), params)).one()
            if not count:
                return 0, 0, b"", b"", []
            return (int(count), int(top), *_split(bytes(ids), bytes(hashes)))
        result = await conn.execute(text(_ROWS), params)
        id_list: list[int] = []
        hash_list: list[bytes] = []
        for row_id, stored, event_id, event_json in result:
            id_list.append(row_id)
            if stored is None:
                stored = row_hash(uuid.UUID(str(event_id)), event_json)
            hash_list.append(bytes(stored))
        if not id_list:
            return 0, 0, b"", b"", []
        return (
            len(id_list),
            id_list[-1],
            b"".join(_ID.pack(i) for i in id_list),
            b"".join(hash_list),
            [leaf_hash(i, h) for i, h in zip(id_list, hash_list, strict=True)],
        )

    async def _note_unsealed(self, seal: Seal | None) -> None:
        async with self._db.connect() as conn:
            if seal is None:
                latest = (await conn.execute(_LATEST_SEAL)).one_or_none()
                after = 0 if latest is None else int(latest[1])
            else:
                after = seal.last_id
            oldest = (
                await conn.execute(
                    select(func.min(AUDIT_LOG.c.inserted_at)).where(AUDIT_LOG.c.id > after)
                )
            ).scalar()
        self.stats.oldest_unsealed_at = None if oldest is None else _as_utc(oldest).timestamp()

    async def _queue_latest(self) -> None:
        # A process that died between a commit and its publication: publish the latest again.
        async with self._db.connect() as conn:
            latest = (await conn.execute(_LATEST_SEAL)).one_or_none()
        if latest is not None:
            self._unpublished.setdefault(int(latest[0]), Seal.parse(latest[2], bytes(latest[3])))
        self._republish_latest = False

    async def _publish_pending(self) -> None:
        """Publish every committed seal the sink has not taken yet, oldest first."""
        if self._sink is None or not self._unpublished:
            return
        error: Exception | None = None
        for seq in sorted(self._unpublished):
            try:
                self._sink.publish(self._unpublished[seq])
            except Exception as exc:  # any sink's failure; kept, and tried again next pass
                error = exc
            else:
                del self._unpublished[seq]
        if error is not None:
            waiting = ", ".join(map(str, sorted(self._unpublished)))
            raise IntegrityError(f"seal {waiting} committed but not published: {error}")
