"""``AuditMiddleware``: a pure ASGI middleware that writes one audit event per mutating request.

Two modes, chosen by the keyword the store is passed with:

- ``store=`` (**transactional**, recommended): the audited request runs in one transaction on one
  connection of the store's engine (its unit of work, :func:`audit_session`). When the response
  starts, the audit row and its outbox row are written in that transaction and it commits, before
  the response is released: the handler's changes and their audit row commit together or not at
  all. A failure rolls everything back and answers 503 "nothing was changed".
- ``sink=`` (**separate store**): for an audit database apart from the business database. The
  row is written in a transaction of its own when the response starts (held until it committed);
  the handler's own commit happened before, so a crash in between leaves a change without its
  row, and a failed write answers 503 "it may have taken effect".

Either way: the method decides whether a request is audited (``AuditConfig.methods``); the
timestamp is taken when the request arrives; identity, entity and ``changes`` are read when the
response starts; an exception before the response is audited as 500 (499 when the client had
gone away), in a write of its own, and re-raised; a request is written exactly once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias
from uuid import UUID

import anyio

from audit_middleware._ratelimit_log import RateLimitedLog
from audit_middleware.request._config import DEFAULT_METHODS, AuditConfig, IdentityResolver, under
from audit_middleware.request._context import STATE_KEY, RequestAudit, reset_current, set_current
from audit_middleware.request._deadline import WriteDeadlines
from audit_middleware.request._event import IdentityTypeError, build_event
from audit_middleware.request._lifespan import run_lifespan
from audit_middleware.request._metrics import AuditStats, track
from audit_middleware.request._shield import shielded
from audit_middleware.request._summary import settle_changes
from auditevt import Event, Timestamp

if TYPE_CHECKING:
    from audit_middleware.request._transactional import TransactionalResponder

__all__ = [
    "DEFAULT_METHODS",
    "AuditConfig",
    "AuditMiddleware",
    "AuditSink",
    "IdentityResolver",
]

logger = logging.getLogger("audit_middleware")

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

# Seconds between two tracebacks of failed writes (each failure still logs one line).
_TRACEBACK_INTERVAL = 60.0
# Status recorded when the client went away before any response (nginx's convention).
CLIENT_CLOSED_REQUEST = 499


def error_response(error: str, detail: str) -> tuple[Message, Message]:
    """The ``http.response.start`` and body messages of a 503 JSON error."""
    body = b'{"error":"' + error.encode() + b'","detail":"' + detail.encode() + b'"}'
    start = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


SEPARATE_UNAVAILABLE = error_response(
    "audit_unavailable",
    "The request could not be recorded in the audit log, so its result is withheld. "
    "It may have taken effect: check before retrying.",
)
ROLLED_BACK = error_response(
    "audit_unavailable",
    "The request could not be recorded in the audit log, so it was rolled back: nothing was "
    "changed. It is safe to retry.",
)
OUTCOME_UNKNOWN = error_response(
    "audit_commit_unknown",
    "The database connection broke while the request was committing: its changes and their "
    "audit record were committed together or not at all. Check before retrying.",
)


class AuditSink(Protocol):
    """Where events go: ``AuditStore`` in production; anything with this method in tests."""

    async def write(self, event: Event) -> UUID:
        """Commit ``event`` durably and return its ``event_id``; raise if it was not written."""
        ...


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None  # trio, through anyio


class AuditMiddleware:
    """Writes an audit ``Event`` for each mutating request before its response is released.

    ``app.add_middleware(AuditMiddleware, store=store)`` runs each audited request in one
    transaction with its audit row (``audit_session(request)`` is its ``AsyncSession``);
    ``sink=store`` writes the row in a transaction of its own (the separate-store mode). Pass
    ``stats`` to read the counters when the framework builds the middleware for you.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Any = None,
        sink: AuditSink | None = None,
        config: AuditConfig | None = None,
        stats: AuditStats | None = None,
    ) -> None:
        if (store is None) == (sink is None):
            raise TypeError(
                "pass store= (one transaction with the request's changes) or sink= "
                "(a separate audit store), not both or neither"
            )
        target: Any = store if store is not None else sink
        if not callable(getattr(target, "write", None)):
            name = "store" if store is not None else "sink"
            raise TypeError(f"{name}={target!r} has no write(event) method")
        if store is not None:
            missing = [
                name
                for name in ("connect", "commit_and_release", "release")
                if not callable(getattr(store, name, None))
            ]
            if missing:
                raise TypeError(
                    f"store={store!r} has no {', '.join(f'{m}()' for m in missing)}: "
                    "pass an AuditStore"
                )
        if config is not None and not isinstance(config, AuditConfig):
            raise TypeError(f"config={config!r} must be an AuditConfig")
        if stats is not None and not isinstance(stats, AuditStats):
            raise TypeError(f"stats={stats!r} must be an AuditStats")
        self.app = app
        self.sink = target
        self.transactional = store is not None
        self._responder: type[TransactionalResponder] | None = None
        if self.transactional:
            # Imported here, once: the responder's module imports this one.
            from audit_middleware.request._transactional import TransactionalResponder

            self._responder = TransactionalResponder
        self.config = config if config is not None else AuditConfig()
        if self.transactional and self.config.fail_open:
            raise ValueError("fail_open applies to sink= only: a failed store= write rolls back")
        self.stats = stats if stats is not None else AuditStats()
        # Log throttles (not request state: shared by every request, like the counters).
        self._anonymous_log = RateLimitedLog(logger, interval=60.0)
        self._rewritten_peer_log = RateLimitedLog(logger, interval=60.0)
        self._identity_log = RateLimitedLog(logger, interval=math.inf)  # once per route
        self.early_commit_log = RateLimitedLog(logger, interval=60.0)
        self._last_traceback = -math.inf
        self._deadlines: WriteDeadlines | None = None  # of the loop the last write ran on
        self._tracked = not self.config.metrics  # reported to Prometheus on first request

    def _audited_path(self, path: str) -> bool:
        config = self.config
        if config.include_paths is not None and not under(path, config.include_paths):
            return False
        return not (config.exclude_paths and under(path, config.exclude_paths))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await run_lifespan(self.app, self.sink, self.config, scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return

        if not self._tracked:
            self._tracked = True
            track(self.stats, self)
        action = self.config.methods.get(scope["method"])
        audited = action is not None and self._audited_path(scope["path"])
        audit = RequestAudit(audited=audited, limits=self.config.changes_limits)
        # Created here, before anything below can copy the scope, so that the handler's
        # request.state writes land in the dict this middleware reads.
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state[STATE_KEY] = audit
        token = set_current(audit)
        try:
            if action is None or not audited:
                await self.app(scope, receive, send)
            else:
                audit.action = action
                audit.timestamp = Timestamp.now()
                if self._responder is not None:
                    await self._responder(self, scope, audit)(receive, send)
                else:
                    await self._separate(scope, receive, send, audit)
        finally:
            reset_current(token)

    async def _separate(
        self, scope: Scope, receive: Receive, send: Send, audit: RequestAudit
    ) -> None:
        done = False  # the event was handled (written, failed or skipped): exactly once
        replaced = False  # the app's response was swapped for a 503
        disconnected = False

        async def receive_wrapper() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal done, replaced
            if replaced:
                return  # the client already has its 503; drop the app's body
            if not done and message["type"] == "http.response.start":
                done = True
                status: Any = message.get("status")  # not an int: the event fails, and so a 503
                if not await self.audit_separately(scope, audit, status):
                    replaced = True
                    for reply in SEPARATE_UNAVAILABLE:
                        await send(dict(reply))
                    return
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except BaseException as exc:
            if not done:
                done = True
                gone = disconnected or isinstance(exc, anyio.get_cancelled_exc_class())
                status = CLIENT_CLOSED_REQUEST if gone else 500
                await self.audit_separately(scope, audit, status)
            raise
        else:
            if not done:
                # The app returned without a response: the server answers 500.
                done = True
                await self.audit_separately(scope, audit, 500)

    async def build(
        self, scope: Scope, audit: RequestAudit, status: int, *, attempt: bool = False
    ) -> Event | None:
        """The request's event (None: not to be written); logs identity errors once per route."""
        action, timestamp = audit.action, audit.timestamp
        if action is None or timestamp is None:
            raise RuntimeError("build() is for audited requests (action and timestamp set)")
        audit.sealed = True
        config = self.config
        resolved: Any = None
        if config.identity_resolver is not None:
            resolved = config.identity_resolver(scope)
            if inspect.isawaitable(resolved):
                resolved = await resolved
        if not attempt:
            # Redacted here (an oversized one summarised in slices that yield to the loop).
            audit.changes = await settle_changes(
                audit.changes, config.redaction, light=audit.changes_light
            )
        path = scope["path"]

        def on_anonymous(organization_id: int) -> None:
            self.stats.anonymous += 1
            if isinstance(status, int) and status < 400:
                # Usually a route missing its authentication: say so once a minute per route.
                route = getattr(scope.get("route"), "path", path)
                self._anonymous_log.log(
                    logging.WARNING,
                    f"{scope['method']} {route}",
                    "%s %s succeeded (status %d) with no authenticated organization; audited "
                    "as organization_id=%d",
                    scope["method"],
                    path,
                    status,
                    organization_id,
                )

        def on_rewritten_peer() -> None:
            self._rewritten_peer_log.log(
                logging.WARNING,
                "server rewrote the peer",
                "the server replaced the client address with an X-Forwarded-For entry, which "
                "any local client can write; audited with ip_address='' instead. Run uvicorn "
                "with proxy_headers=False (--no-proxy-headers) and name your proxies in "
                "AuditConfig(trusted_proxies=TrustedProxies([...]))",
            )

        try:
            event = build_event(
                config, scope, audit, action=action, path=path, timestamp=timestamp,
                status=status, resolved=resolved, attempt=attempt, on_anonymous=on_anonymous,
                on_rewritten_peer=on_rewritten_peer,
            )  # fmt: skip
        except IdentityTypeError as exc:
            route = getattr(scope.get("route"), "path", path)
            self._identity_log.log(
                logging.ERROR,
                f"{scope['method']} {route} {exc.where}",
                "%s %s cannot be audited: %s",
                scope["method"],
                route,
                exc,
            )
            raise
        if event is None:
            self.stats.skipped += 1
        return event

    async def bounded(self, write: Awaitable[Any]) -> None:
        """Await ``write`` within ``config.write_timeout``; then a ``TimeoutError`` naming it."""
        timeout = self.config.write_timeout
        if timeout is None:
            await write
        elif (loop := _asyncio_loop()) is not None:
            # One timer for all the loop's writes, not one per write (see _deadline).
            deadlines = self._deadlines
            if deadlines is None or deadlines.loop is not loop:
                deadlines = self._deadlines = WriteDeadlines(loop, timeout)
            await deadlines.run(write)
        else:
            with anyio.fail_after(timeout):
                await write

    def log_failure(
        self, scope: Scope, status: Any, event: Event | None, exc: BaseException, outcome: str
    ) -> None:
        """One ERROR line per failed write; its traceback at most once a minute."""
        self.stats.failed += 1
        where = (
            f"{scope['method']} {scope['path']} status={status}"
            + ("" if event is None else f" organization_id={event.organization_id}")
            + f": {type(exc).__name__}: {exc}"
        )
        # An outage under load must not bury the log (and the disk) in identical stacks.
        now = time.monotonic()
        traceback = now - self._last_traceback >= _TRACEBACK_INTERVAL
        if traceback:
            self._last_traceback = now
        logger.error("audit write failed, %s (%s)", outcome, where, exc_info=traceback)

    async def audit_separately(
        self, scope: Scope, audit: RequestAudit, status: int, *, attempt: bool = False
    ) -> bool:
        """Build and write the event in a transaction of its own; False: answer 503."""
        event: Event | None = None
        try:
            # Shielded: a request cancelled mid-write (Starlette cancels a streaming response
            # when the client goes away) is still audited.
            with shielded():
                event = await self.build(scope, audit, status, attempt=attempt)
                if event is None:
                    return True
                await self.bounded(self.sink.write(event))
        except Exception as exc:
            if self.config.fail_open and not self.transactional:
                self.stats.failed_open += 1
                self.log_failure(
                    scope, status, event, exc, "and fail_open is set: the response goes out "
                    "WITHOUT an audit row",
                )  # fmt: skip
                return True
            self.log_failure(scope, status, event, exc, "answering 503")
            return False
        self.stats.written += 1
        return True
