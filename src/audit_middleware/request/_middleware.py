"""``AuditMiddleware``: a pure ASGI middleware that writes one audit event per mutating request.

The write is synchronous: ``http.response.start`` is held until the sink (an ``AuditStore``) has
committed the audit row and its outbox row. If the write fails, the client is answered
``503 {"error": "audit_unavailable"}`` instead of the app's response, so no success ever goes out
without its audit row (unless ``fail_open`` says otherwise, loudly).

Per request: the method decides whether it is audited (``AuditConfig.methods``); the timestamp
is taken when the request arrives; identity, entity and ``changes`` are read when the response
starts (after FastAPI dependencies and the handler ran); an exception before the response is
audited as 500 (499 when the client had gone away) and re-raised; a request is written exactly
once, whatever happens.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol, TypeAlias
from uuid import UUID

import anyio

from audit_middleware._ratelimit_log import RateLimitedLog
from audit_middleware.request._changes import ChangesLimits
from audit_middleware.request._client_ip import (
    TrustedProxies,
    resolve_client_ip,
    server_rewrote_peer,
)
from audit_middleware.request._context import STATE_KEY, RequestAudit, reset_current, set_current
from audit_middleware.request._entity import EntityResolver, route_entity
from audit_middleware.request._metrics import AuditStats, track
from audit_middleware.request._redaction import RedactionPolicy, Redactor
from audit_middleware.request._summary import settle_changes
from auditevt import Action, ActionContext, Event, Timestamp

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

Identity: TypeAlias = tuple[int | None, int | None]
IdentityResolver: TypeAlias = Callable[[Scope], Identity | Awaitable[Identity]]
"""``(scope) -> (user_id, organization_id)``, sync or async; ``None`` for unknown."""

DEFAULT_METHODS: Mapping[str, Action] = MappingProxyType(
    {
        "POST": Action.CREATE,
        "PUT": Action.UPDATE,
        "PATCH": Action.UPDATE,
        "DELETE": Action.DELETE,
    }
)
"""Audited HTTP methods and the action each is recorded as; GET, HEAD, OPTIONS are not audited."""

# Seconds between two tracebacks of failed writes (each failure still logs one line).
_TRACEBACK_INTERVAL = 60.0
# Status recorded when the client went away before any response (nginx's convention).
CLIENT_CLOSED_REQUEST = 499
_INT64_MAX = 2**63 - 1

_UNAVAILABLE_BODY = (
    b'{"error":"audit_unavailable","detail":"The request could not be recorded in the audit '
    b'log, so its result is withheld. It may have taken effect: check before retrying."}'
)
_UNAVAILABLE_START: Message = {
    "type": "http.response.start",
    "status": 503,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_UNAVAILABLE_BODY)).encode()),
        (b"cache-control", b"no-store"),
    ],
}


class AuditSink(Protocol):
    """Where events go: ``AuditStore`` in production; anything with this method in tests."""

    async def write(self, event: Event) -> UUID:
        """Commit ``event`` durably and return its ``event_id``; raise if it was not written."""
        ...


def _check_prefixes(prefixes: tuple[str, ...] | None, name: str) -> None:
    if prefixes is None:
        return
    if isinstance(prefixes, str):
        raise TypeError(f"{name} must be a tuple of path prefixes, not the string {prefixes!r}")
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ValueError(f"{name} holds {prefix!r}: a path prefix must start with '/'")


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """How ``AuditMiddleware`` decides what to audit and where it finds each field."""

    methods: Mapping[str, Action] = field(default_factory=lambda: DEFAULT_METHODS)
    """Audited methods and their action; any method not listed passes through unaudited."""
    include_paths: tuple[str, ...] | None = None
    """If set, only paths equal to or under one of these prefixes are audited."""
    exclude_paths: tuple[str, ...] = ()
    """Paths equal to or under these prefixes are not audited (``/login`` excludes
    ``/login/sso``, not ``/login-help``)."""
    should_audit: Callable[[Scope], bool] | None = None
    """Called when the response starts (the route is known then); False leaves it out."""
    user_id_key: str = "audit_user_id"
    """``request.state`` attribute holding the actor's id (an int); missing means 0."""
    organization_id_key: str = "audit_organization_id"
    """``request.state`` attribute holding the authenticated organization's id (an int)."""
    action_context_key: str = "audit_action_context"
    """``request.state`` attribute holding an ``ActionContext`` (or its value); inferred from
    the two ids below when unset."""
    break_glass_id_key: str = "audit_break_glass_id"
    """``request.state`` attribute holding the break-glass grant id (an int)."""
    impersonation_id_key: str = "audit_impersonation_id"
    """``request.state`` attribute holding the impersonation session id (an int)."""
    identity_resolver: IdentityResolver | None = None
    """Replaces the two id keys: ``(scope) -> (user_id, organization_id)``, sync or async."""
    entity_resolver: EntityResolver = route_entity
    """``(scope) -> (entity_type, entity_id)`` from the matched route; handlers override it."""
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    """Which peers may speak for the client in X-Forwarded-For; the default trusts none."""
    redaction: Redactor = field(default_factory=RedactionPolicy)
    """Applied to ``changes`` before anything is written."""
    changes_limits: ChangesLimits = field(default_factory=ChangesLimits)
    """How much of ``changes`` a request may record; past it, a summary is recorded."""
    max_user_agent_length: int = 512
    """User-Agent is cut to this many characters."""
    on_missing_organization: Literal["audit", "skip"] = "audit"
    """No authenticated organization: ``"audit"`` writes the row under
    ``anonymous_organization_id`` (a mutation is never left out of the log); ``"skip"`` does
    not write it."""
    anonymous_organization_id: int = 0
    """The organization recorded for requests with none authenticated."""
    fail_open: bool = False
    """If True, a failed write is logged at ERROR and counted, and the app's response goes out
    anyway. The default answers 503."""
    write_timeout: float | None = 10.0
    """Seconds a write may take before it counts as failed; None waits indefinitely."""
    metrics: bool = True
    """Report the counters to Prometheus (read at scrape time) when ``prometheus_client`` is
    installed (the same switch as ``RelayConfig.metrics``)."""
    prometheus: bool | None = None
    """Deprecated name of ``metrics``; when given, it sets ``metrics``."""

    def __post_init__(self) -> None:
        if self.prometheus is not None:
            warnings.warn(
                "AuditConfig(prometheus=...) is deprecated: use AuditConfig(metrics=...)",
                DeprecationWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "metrics", bool(self.prometheus))
            object.__setattr__(self, "prometheus", None)
        for method, action in self.methods.items():
            if not isinstance(method, str) or method != method.upper():
                raise ValueError(f"methods key {method!r} must be an upper-case HTTP method")
            if not isinstance(action, Action):
                raise TypeError(f"methods[{method!r}]={action!r} must be an Action")
        object.__setattr__(self, "methods", MappingProxyType(dict(self.methods)))
        _check_prefixes(self.include_paths, "include_paths")
        _check_prefixes(self.exclude_paths, "exclude_paths")
        for name in (
            "user_id_key",
            "organization_id_key",
            "action_context_key",
            "break_glass_id_key",
            "impersonation_id_key",
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}={value!r} must be a non-empty string")
        if not isinstance(self.trusted_proxies, TrustedProxies):
            raise TypeError(
                f"trusted_proxies={self.trusted_proxies!r} must be a TrustedProxies"
            )
        if not callable(self.redaction):
            raise TypeError(f"redaction={self.redaction!r} must be callable")
        if not isinstance(self.changes_limits, ChangesLimits):
            raise TypeError(f"changes_limits={self.changes_limits!r} must be a ChangesLimits")
        if type(self.max_user_agent_length) is not int or self.max_user_agent_length < 0:
            raise ValueError(
                f"max_user_agent_length={self.max_user_agent_length!r} must be an int >= 0"
            )
        if self.on_missing_organization not in ("audit", "skip"):
            raise ValueError(
                f"on_missing_organization={self.on_missing_organization!r} must be "
                "'audit' or 'skip'"
            )
        if type(self.anonymous_organization_id) is not int or not (
            -(2**63) <= self.anonymous_organization_id <= _INT64_MAX
        ):
            raise ValueError(
                f"anonymous_organization_id={self.anonymous_organization_id!r} must be an int64"
            )
        if self.write_timeout is not None and not (
            isinstance(self.write_timeout, int | float) and self.write_timeout > 0
        ):
            raise ValueError(f"write_timeout={self.write_timeout!r} must be > 0 or None")


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    for prefix in prefixes:
        if path.startswith(prefix):
            stem = prefix.rstrip("/")
            if len(path) == len(stem) or path[len(stem)] == "/" or prefix.endswith("/"):
                return True
    return False


def _state_int(state: Mapping[str, Any], key: str) -> int | None:
    value = state.get(key)
    if value is None:
        return None
    if type(value) is not int:
        raise TypeError(f"request.state.{key}={value!r} must be an int")
    return value


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False  # trio, through anyio
    return True


def _clean_text(value: str) -> str:
    # Lone surrogates (from undecodable bytes) would make the event unwritable.
    if value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


class AuditMiddleware:
    """Writes an audit ``Event`` for each mutating request before its response is released.

    ``app.add_middleware(AuditMiddleware, sink=store, config=AuditConfig(...))`` in Starlette
    or FastAPI, or ``AuditMiddleware(app, sink=store)`` around any ASGI app. Pass ``stats`` to
    read the counters when the framework builds the middleware for you.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        sink: AuditSink,
        config: AuditConfig | None = None,
        stats: AuditStats | None = None,
    ) -> None:
        if not callable(getattr(sink, "write", None)):
            raise TypeError(f"sink={sink!r} has no write(event) method")
        if config is not None and not isinstance(config, AuditConfig):
            raise TypeError(f"config={config!r} must be an AuditConfig")
        if stats is not None and not isinstance(stats, AuditStats):
            raise TypeError(f"stats={stats!r} must be an AuditStats")
        self.app = app
        self.sink = sink
        self.config = config if config is not None else AuditConfig()
        self.stats = stats if stats is not None else AuditStats()
        # Log throttles (not request state: shared by every request, like the counters).
        self._anonymous_log = RateLimitedLog(logger, interval=60.0)
        self._rewritten_peer_log = RateLimitedLog(logger, interval=60.0)
        self._last_traceback = -math.inf
        self._tracked = not self.config.metrics  # reported to Prometheus on first request

    def _audited_path(self, path: str) -> bool:
        config = self.config
        if config.include_paths is not None and not _under(path, config.include_paths):
            return False
        return not (config.exclude_paths and _under(path, config.exclude_paths))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and callable(getattr(self.sink, "check", None)):
                receive = self._checking_sink_at_startup(receive)
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
        if action is None or not audited:
            try:
                await self.app(scope, receive, send)
            finally:
                reset_current(token)
            return

        timestamp = Timestamp.now()
        path = scope["path"]
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
                if not await self._audit(scope, audit, action, path, timestamp, status):
                    replaced = True
                    await send(dict(_UNAVAILABLE_START))
                    await send({"type": "http.response.body", "body": _UNAVAILABLE_BODY})
                    return
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except BaseException as exc:
            if not done:
                done = True
                gone = disconnected or isinstance(exc, anyio.get_cancelled_exc_class())
                status = CLIENT_CLOSED_REQUEST if gone else 500
                await self._audit(scope, audit, action, path, timestamp, status)
            raise
        else:
            if not done:
                # The app returned without a response: the server answers 500.
                done = True
                await self._audit(scope, audit, action, path, timestamp, 500)
        finally:
            reset_current(token)

    def _checking_sink_at_startup(self, receive: Receive) -> Receive:
        async def receive_and_check() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._check_sink()
            return message

        return receive_and_check

    async def _check_sink(self) -> None:
        # At start-up, say loudly what would make the audit trail unsafe (a role that bypasses
        # row-level security) or unwritable (no tables); requests then answer 503, so the app
        # still starts and the problem is in the log before the first request.
        try:
            await self.sink.check()  # type: ignore[attr-defined]
        except Exception as exc:
            logger.error(
                "audit store check at start-up failed; audited requests will answer 503 until "
                "it works: %s: %s",
                type(exc).__name__,
                exc,
            )

    async def _audit(
        self,
        scope: Scope,
        audit: RequestAudit,
        action: Action,
        path: str,
        timestamp: Timestamp,
        status: int,
    ) -> bool:
        """Build and write the event; False when the response must become a 503."""
        audit.sealed = True
        config = self.config
        event: Event | None = None
        try:
            # Shielded: a request cancelled mid-write (Starlette cancels a streaming response
            # when the client goes away) is still audited.
            with anyio.CancelScope(shield=True):
                resolved: Any = None
                if config.identity_resolver is not None:
                    resolved = config.identity_resolver(scope)
                    if inspect.isawaitable(resolved):
                        resolved = await resolved
                # Redacted here (an oversized one summarised in slices), not in _build.
                audit.changes = await settle_changes(audit.changes, config.redaction)
                event = self._build(scope, audit, action, path, timestamp, status, resolved)
                if event is None:
                    self.stats.skipped += 1
                    return True
                timeout = config.write_timeout
                if timeout is None:
                    await self.sink.write(event)
                elif _on_asyncio():
                    # A quarter of anyio.fail_after's cost, on the path every request takes.
                    async with asyncio.timeout(timeout):
                        await self.sink.write(event)
                else:
                    with anyio.fail_after(timeout):
                        await self.sink.write(event)
        except Exception as exc:
            self.stats.failed += 1
            where = (
                f"{scope['method']} {path} status={status}"
                + ("" if event is None else f" organization_id={event.organization_id}")
                + f": {type(exc).__name__}: {exc}"
            )
            # Every failure gets its ERROR line; the traceback comes once a minute, so an
            # outage under load does not bury the log (and the disk) in identical stacks.
            now = time.monotonic()
            traceback = now - self._last_traceback >= _TRACEBACK_INTERVAL
            if traceback:
                self._last_traceback = now
            if config.fail_open:
                self.stats.failed_open += 1
                logger.error(
                    "audit write FAILED and fail_open is set: the response goes out WITHOUT "
                    "an audit row (%s)",
                    where,
                    exc_info=traceback,
                )
                return True
            logger.error("audit write failed, answering 503 (%s)", where, exc_info=traceback)
            return False
        self.stats.written += 1
        return True

    def _build(
        self,
        scope: Scope,
        audit: RequestAudit,
        action: Action,
        path: str,
        timestamp: Timestamp,
        status: int,
        resolved: Any,
    ) -> Event | None:
        """The event, or None when it is not to be written; ``resolved`` is what the
        identity resolver returned (None without one)."""
        config = self.config
        if audit.skip or (config.should_audit is not None and not config.should_audit(scope)):
            return None
        state: Mapping[str, Any] = scope.get("state") or {}

        if config.identity_resolver is not None:
            user_id, organization_id = resolved
            for name, value in (("user_id", user_id), ("organization_id", organization_id)):
                if value is not None and type(value) is not int:
                    raise TypeError(f"identity_resolver returned {name}={value!r}, not an int")
        else:
            user_id = _state_int(state, config.user_id_key)
            organization_id = _state_int(state, config.organization_id_key)
        if organization_id is None:
            if config.on_missing_organization == "skip":
                return None
            organization_id = config.anonymous_organization_id
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

        break_glass_id = _state_int(state, config.break_glass_id_key)
        impersonation_id = _state_int(state, config.impersonation_id_key)
        context = state.get(config.action_context_key)
        if context is None:
            if break_glass_id is not None:
                context = ActionContext.BREAK_GLASS
            elif impersonation_id is not None:
                context = ActionContext.IMPERSONATION
        elif not isinstance(context, ActionContext):
            context = ActionContext(context)

        entity_type, entity_id = audit.entity_type, audit.entity_id
        if entity_type is None or entity_id is None:
            route_type, route_id = config.entity_resolver(scope)
            entity_type = route_type if entity_type is None else entity_type
            entity_id = route_id if entity_id is None else entity_id

        user_agent = ""
        forwarded_for: list[str] = []
        for name, value in scope.get("headers") or ():
            if name == b"user-agent" and not user_agent:
                user_agent = value.decode("latin-1")[: config.max_user_agent_length]
            elif name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))

        peer = scope.get("client")
        ip_address = resolve_client_ip(peer, forwarded_for, config.trusted_proxies)
        if not ip_address and forwarded_for and server_rewrote_peer(peer, forwarded_for):
            self._rewritten_peer_log.log(
                logging.WARNING,
                "server rewrote the peer",
                "the server replaced the client address with an X-Forwarded-For entry, which "
                "any local client can write; audited with ip_address='' instead. Run uvicorn "
                "with proxy_headers=False (--no-proxy-headers) and name your proxies in "
                "AuditConfig(trusted_proxies=TrustedProxies([...]))",
            )

        return Event(
            action=action,
            entity_type=_clean_text(entity_type),
            entity_id=entity_id,
            user_id=0 if user_id is None else user_id,
            organization_id=organization_id,
            ip_address=ip_address,
            user_agent=user_agent,
            request_path=_clean_text(path),
            status_code=status,
            timestamp=timestamp,
            changes=audit.changes,
            action_context=context,
            break_glass_id=break_glass_id,
            impersonation_id=impersonation_id,
        )
