"""Start-up: check the audit store when the ASGI lifespan starts, and refuse to start if told.

The check (``check()`` of the sink or store, delegated through wrappers such as the relay's
``notifying()``) confirms the database is reachable, migrated and writable by the connected role.
With ``AuditConfig.startup_check="refuse"`` (the default) a failure answers
``lifespan.startup.failed`` and the app is never started, so the server exits instead of
serving requests it cannot audit; ``"warn"`` logs it at ERROR and starts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

from audit_middleware.request._config import AuditConfig

__all__ = ["run_lifespan"]

logger = logging.getLogger("audit_middleware")

Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Any, Receive, Send], Awaitable[None]]


async def _problem(sink: Any) -> str | None:
    try:
        await sink.check()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def run_lifespan(
    app: ASGIApp, sink: Any, config: AuditConfig, scope: Any, receive: Receive, send: Send
) -> None:
    """Pass a lifespan scope to ``app``, checking ``sink`` when ``lifespan.startup`` arrives."""
    if not callable(getattr(sink, "check", None)):
        logger.warning(
            "audit sink %r has no check(): whether it can write is known at the first request",
            sink,
        )
        await app(scope, receive, send)
        return
    first = await receive()
    if first["type"] == "lifespan.startup":
        problem = await _problem(sink)
        if problem is not None:
            if config.startup_check == "refuse":
                logger.error("audit store check at start-up failed; not starting: %s", problem)
                await send(
                    {
                        "type": "lifespan.startup.failed",
                        "message": f"the audit store cannot be written: {problem}",
                    }
                )
                return
            logger.error(
                "audit store check at start-up failed; audited requests will answer 503 until "
                "it works: %s",
                problem,
            )
    pending: Message | None = first

    async def replay() -> Message:
        nonlocal pending
        if pending is not None:
            message, pending = pending, None
            return message
        return await receive()

    await app(scope, replay, send)
