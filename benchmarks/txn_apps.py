"""The two FastAPI apps ``middleware.txn_overhead_ratio`` compares, run by uvicorn (``--factory``).

Both insert one appointment row through a unit of work (one connection, one transaction, an
``AsyncSession`` joined to it, ``session.commit()`` in the handler): ``BENCH_ARM=audited`` gets it
from ``AuditMiddleware(store=...)`` (``audit_session``), which also writes the audit row and its
outbox row in that transaction; ``BENCH_ARM=plain`` gets it from a dependency and commits it after
the handler, with no middleware. ``BENCH_DATABASE_URL`` names the database.
"""

# No "from __future__ import annotations": FastAPI must see the local Session alias.
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from sqlalchemy import BigInteger, Column, MetaData, Table, Text, insert
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from audit_middleware import AuditMiddleware, AuditStore, audit_session, record

POOL = {"pool_size": 20, "max_overflow": 0}
metadata = MetaData()
APPOINTMENTS = Table(
    "bench_appointments",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("item_id", BigInteger, nullable=False),
    Column("organization_id", BigInteger, nullable=False),
    Column("room", Text, nullable=False),
    Column("changes", JSONB, nullable=False),
)


def authenticate(request: Request) -> None:
    request.state.audit_user_id = 42
    request.state.audit_organization_id = 7


def create_app() -> FastAPI:
    arm = os.environ["BENCH_ARM"]
    store = AuditStore.from_url(os.environ["BENCH_DATABASE_URL"], **POOL)
    engine = store.engine

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await store.aclose()

    async def plain_session() -> AsyncIterator[AsyncSession]:
        async with engine.connect() as conn:
            await conn.begin()
            session = AsyncSession(bind=conn, join_transaction_mode="rollback_only")
            try:
                yield session
                await session.flush()
                await conn.commit()
            finally:
                await session.close()

    dependency: Any = audit_session if arm == "audited" else plain_session
    Session = Annotated[AsyncSession, Depends(dependency, scope="function")]
    app = FastAPI(lifespan=lifespan)

    @app.put("/appointments/{item_id}")
    async def update(item_id: int, request: Request, session: Session) -> dict[str, int]:
        authenticate(request)
        changes = await request.json()
        await session.execute(
            insert(APPOINTMENTS).values(
                item_id=item_id, organization_id=7, room=changes["after"]["room"], changes=changes
            )
        )
        await session.commit()
        if arm == "audited":
            record(request, changes=changes)
        return {"id": item_id}

    if arm == "audited":
        app.add_middleware(AuditMiddleware, store=store)
    return app
