"""The request's unit of work: one connection, one transaction, one ``AsyncSession`` on it.

In transactional mode ``AuditMiddleware`` opens it when an audited request arrives and commits it
with the audit row when the response starts. Handlers reach it with :func:`audit_session` (the
ORM) or :func:`audit_connection` (Core), both usable as FastAPI dependencies.

The session joins the transaction with ``join_transaction_mode="rollback_only"``:
``session.commit()`` flushes but does not commit (the middleware commits once, with the audit
row), ``session.rollback()`` rolls the request's transaction back (and a fresh one is begun on
the same connection at once, so later work still waits for the middleware's commit). This mode
costs no round trip; ``"create_savepoint"`` would add a SAVEPOINT and a RELEASE to every
``commit()``, and SQLite's driver handles savepoints poorly.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from auditevt import Event

__all__ = ["UOW_STATE_KEY", "TransactionalStore", "UnitOfWork", "audit_connection", "audit_session"]

UOW_STATE_KEY = "audit_middleware.unit_of_work"
"""The ``scope["state"]`` key holding the request's :class:`UnitOfWork`."""

_UOW_INFO = "audit_middleware.unit_of_work"


class _RequestSession(Session):
    """The request's session: a ``rollback()`` leaves a new transaction begun behind it."""

    def rollback(self) -> None:
        super().rollback()
        # Without this, the session's next commit() would own, and commit, a transaction.
        uow = self.info.get(_UOW_INFO)
        if isinstance(uow, UnitOfWork):
            uow.begin_again()


class TransactionalStore(Protocol):
    """What transactional mode needs of a store: ``AuditStore`` (or a wrapper of one)."""

    async def connect(self) -> AsyncConnection:
        """A connection with its transaction begun."""
        ...

    async def release(self, conn: AsyncConnection, *, session: AsyncSession | None = None) -> None:
        """Close ``session`` (if any), then a connection from :meth:`connect`."""
        ...

    async def commit_and_release(
        self, conn: AsyncConnection, event: Event, *, session: AsyncSession | None = None
    ) -> UUID:
        """Write the audit row in ``conn``'s transaction, commit it, then
        ``release(conn, session=session)``; on failure, nothing is released."""
        ...

    async def write(self, event: Event) -> UUID:
        """Write the audit row in a transaction of its own (failed attempts)."""
        ...


class UnitOfWork:
    """One audited request's connection and transaction, and the session on it."""

    __slots__ = ("_connection", "_root", "_session", "_store", "commit_sent", "finishing")

    def __init__(self, store: TransactionalStore, connection: AsyncConnection) -> None:
        self._store = store
        self._connection: AsyncConnection | None = connection
        self._session: AsyncSession | None = None
        self.finishing = False  # the middleware commits or rolls back from here on
        self.commit_sent = False  # the COMMIT of the request's changes may have happened
        self._root = self._transaction()  # the transaction the middleware will commit

    def _transaction(self) -> Any:
        sync = self._connection.sync_connection if self._connection is not None else None
        return None if sync is None else sync.get_transaction()

    @property
    def committed_early(self) -> bool:
        """Something committed (or rolled back) the request's transaction on its connection."""
        return self._transaction() is not self._root

    @property
    def connection(self) -> AsyncConnection:
        """The request's connection; its transaction is committed by the middleware."""
        if self._connection is None or self.finishing:
            raise RuntimeError(
                "the request's unit of work is already committed (or rolled back): the response "
                "has started; open a session of your own for work after it"
            )
        return self._connection

    @property
    def session(self) -> AsyncSession:
        """The request's ``AsyncSession``, created on first use."""
        if self._session is None:
            self._session = AsyncSession(
                bind=self.connection,
                join_transaction_mode="rollback_only",
                expire_on_commit=False,
                sync_session_class=_RequestSession,
                info={_UOW_INFO: self},
            )
        return self._session

    def begin_again(self) -> None:
        """After ``session.rollback()`` ended the request's transaction, begin the next one."""
        conn = self._connection
        if self.finishing or conn is None:
            return
        sync = conn.sync_connection
        if sync is not None and not sync.closed and not sync.in_transaction():
            self._root = sync.begin()  # sends nothing: the driver begins with the next statement

    async def _flush(self) -> None:
        session = self._session
        # What Session.flush() checks first, without the greenlet (about 8 us) it runs in.
        if session is not None and (session.new or session.dirty or session.deleted):
            await session.flush()

    async def commit_with(self, event: Event | None) -> None:
        """Flush the session, write ``event``'s rows (if any) and commit, all in one
        transaction; then close (a failure leaves the connection to :meth:`rollback`)."""
        conn = self.connection
        await self._flush()
        self.finishing = self.commit_sent = True
        if event is None:
            await conn.commit()
        else:
            await self._store.commit_and_release(conn, event, session=self._session)
            self._connection = self._session = None

    async def commit_alone(self, event: Event | None) -> None:
        """Roll back the request's changes, then write ``event``'s rows (if any) and commit;
        then close (a failure leaves the connection to :meth:`rollback`)."""
        conn = self.connection
        await self.rollback()
        if event is not None:
            await self._store.commit_and_release(conn, event)
            self._connection = self._session = None

    async def rollback(self) -> None:
        """Roll back everything the request did."""
        self.finishing = True
        if self._session is not None:
            await self._session.close()
        if self._connection is not None and not self._connection.closed:
            await self._connection.rollback()

    @property
    def closed(self) -> bool:
        """The session is closed and the connection given back (:meth:`close` ran)."""
        return self._connection is None and self._session is None

    async def close(self) -> None:
        """Close the session and give the connection back (idempotent)."""
        self.finishing = True
        session, self._session = self._session, None
        conn, self._connection = self._connection, None
        if conn is not None:
            await self._store.release(conn, session=session)
        elif session is not None:
            await session.close()


def _find(request: Any) -> UnitOfWork:
    scope = getattr(request, "scope", request)
    if not isinstance(scope, MutableMapping):
        raise TypeError(
            f"expected a Starlette/FastAPI Request or an ASGI scope, not {type(request).__name__}"
        )
    state = scope.get("state")
    found = state.get(UOW_STATE_KEY) if isinstance(state, MutableMapping) else None
    if not isinstance(found, UnitOfWork):
        raise RuntimeError(
            "this request has no unit of work: it is not audited (a GET, an excluded path), or "
            "AuditMiddleware runs without store= (the separate-store mode)"
        )
    return found


async def audit_session(request: HTTPConnection) -> AsyncSession:
    """The request's ``AsyncSession``: its changes commit with the audit row, or not at all.

    ``session = await audit_session(request)`` with the ``Request`` (or its ASGI scope), or as a
    FastAPI dependency, ``Depends(audit_session)`` (a coroutine, so FastAPI calls it on the event
    loop, not in its thread pool). ``await session.commit()`` flushes and
    leaves the commit to the middleware. Raises ``RuntimeError`` when the request has no unit
    of work, or once its response has started (the transaction is committed by then).
    """
    return _find(request).session


async def audit_connection(request: HTTPConnection) -> AsyncConnection:
    """The request's ``AsyncConnection`` (Core), in the transaction :func:`audit_session` uses.

    Do not call ``commit()`` on it: the middleware commits when the response starts. Raises as
    :func:`audit_session` does.
    """
    return _find(request).connection
