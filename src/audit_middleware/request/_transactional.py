"""The transactional mode's per-request object: the unit of work from arrival to response start.

On arrival: a connection from the store, a transaction begun, the :class:`UnitOfWork` put where
``audit_session(request)`` finds it. At ``http.response.start`` (the status is known): a status
below 400 flushes the session, writes the audit row and its outbox row on that connection and
commits; 400 and above rolls the handler's changes back and commits the audit row alone. Only
then is the response released. Anything failing on the way rolls back, and the client gets 503
"nothing was changed" (the attempt is recorded by a write of its own). After the commit the unit
of work is closed: a streamed body or a background task cannot write through it.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from audit_middleware._exceptions import CommitOutcomeUnknown
from audit_middleware.request._context import RequestAudit
from audit_middleware.request._middleware import (
    CLIENT_CLOSED_REQUEST,
    OUTCOME_UNKNOWN,
    ROLLED_BACK,
    Receive,
    Send,
)
from audit_middleware.request._shield import shielded
from audit_middleware.request._unit_of_work import UOW_STATE_KEY, UnitOfWork
from auditevt import Event

if TYPE_CHECKING:
    from audit_middleware.request._middleware import AuditMiddleware

__all__ = ["TransactionalResponder"]

logger = logging.getLogger("audit_middleware")

Message: TypeAlias = MutableMapping[str, Any]


class TransactionalResponder:
    """One audited request in transactional mode (a new one per request)."""

    __slots__ = (
        "_receive",
        "_send",
        "audit",
        "disconnected",
        "done",
        "middleware",
        "replaced",
        "scope",
        "uow",
    )

    def __init__(
        self, middleware: AuditMiddleware, scope: MutableMapping[str, Any], audit: RequestAudit
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self.audit = audit
        self.uow: UnitOfWork | None = None
        self.done = False  # the response started, or the attempt was recorded: exactly once
        self.replaced = False  # the app's response was swapped for a 503
        self.disconnected = False

    async def __call__(self, receive: Receive, send: Send) -> None:
        middleware = self.middleware
        try:
            conn = await middleware.sink.connect()
        except Exception as exc:
            # Nothing ran: the database is unreachable, so the attempt cannot be recorded either.
            middleware.log_failure(self.scope, None, None, exc, "answering 503 (nothing ran)")
            for reply in ROLLED_BACK:
                await send(dict(reply))
            return
        uow = self.uow = UnitOfWork(middleware.sink, conn)
        self.scope["state"][UOW_STATE_KEY] = uow
        self._receive, self._send = receive, send
        try:
            await middleware.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if not self.done:
                gone = self.disconnected or isinstance(exc, anyio.get_cancelled_exc_class())
                await self._attempt(CLIENT_CLOSED_REQUEST if gone else 500)
            raise
        else:
            if not self.done:  # the app returned without a response: the server answers 500
                await self._attempt(500)
        finally:
            if not uow.closed:  # usually closed by the commit already: skip the shield's cost
                with shielded():
                    await uow.close()

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    async def send(self, message: Message) -> None:
        if self.replaced:
            return  # the client already has its 503; drop the app's body
        if not self.done and message["type"] == "http.response.start":
            self.done = True
            reply = await self._commit(message.get("status"))
            if reply is not None:
                self.replaced = True
                for part in reply:
                    await self._send(dict(part))
                return
        await self._send(message)

    async def _attempt(self, status: int) -> None:
        """Roll back, then record the failed attempt in a write of its own."""
        self.done = True
        uow = self.uow
        with shielded():
            if uow is not None:
                try:
                    await uow.rollback()
                finally:
                    await uow.close()  # releases SQLite's writer lock before the next write
            await self.middleware.audit_separately(self.scope, self.audit, status)

    async def _commit(self, status: Any) -> tuple[Message, Message] | None:
        """Commit the unit of work with its audit row; the 503 to answer instead, if any."""
        middleware = self.middleware
        uow = self.uow
        if uow is None:
            raise RuntimeError("the unit of work is gone before the response started")
        event: Event | None = None
        try:
            with shielded():
                if uow.committed_early:
                    route = getattr(self.scope.get("route"), "path", self.scope["path"])
                    middleware.early_commit_log.log(
                        logging.ERROR,
                        f"{self.scope['method']} {route}",
                        "%s %s committed or rolled back the request's transaction itself, "
                        "before its response: what it committed is outside the audit "
                        "transaction (leave the commit to the middleware)",
                        self.scope["method"],
                        route,
                    )
                event = await middleware.build(self.scope, self.audit, status)
                if isinstance(status, int) and status < 400:
                    await middleware.bounded(uow.commit_with(event))
                else:
                    # A failed request changes nothing; its audit row commits on its own.
                    await middleware.bounded(uow.commit_alone(event))
                await uow.close()
        except Exception as exc:
            unknown = isinstance(exc, CommitOutcomeUnknown | TimeoutError) and uow.commit_sent
            with shielded():
                try:
                    await uow.rollback()
                except Exception:
                    logger.debug("rollback after a failed audit write failed", exc_info=True)
                await uow.close()
                if unknown:
                    middleware.log_failure(self.scope, status, event, exc, "outcome unknown")
                    return OUTCOME_UNKNOWN
                middleware.log_failure(self.scope, status, event, exc, "rolled back, answering 503")
                # The attempt is still recorded: what the client got, without its changes.
                await middleware.audit_separately(self.scope, self.audit, 503, attempt=True)
            return ROLLED_BACK
        if event is not None:
            middleware.stats.written += 1
        return None
