"""An audit sink that wakes the relay once its write has committed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

from auditevt import Event

__all__ = ["NotifyingSink", "Sink"]


class Sink(Protocol):
    async def write(self, event: Event) -> uuid.UUID: ...


class NotifyingSink:
    """``sink`` that calls ``notify()`` after each committed write; otherwise the sink itself."""

    def __init__(self, sink: Sink, notify: Callable[[], None]) -> None:
        self._sink = sink
        self._notify = notify

    async def write(self, event: Event, **kwargs: Any) -> uuid.UUID:
        event_id = await self._sink.write(event, **kwargs)
        self._notify()
        return event_id

    async def commit_with(self, conn: Any, event: Event, **kwargs: Any) -> uuid.UUID:
        # Transactional mode: the rows are visible to the relay once this commit returns.
        commit_with = self._sink.commit_with  # type: ignore[attr-defined]
        event_id: uuid.UUID = await commit_with(conn, event, **kwargs)
        self._notify()
        return event_id

    async def commit_and_release(self, conn: Any, event: Event, **kwargs: Any) -> uuid.UUID:
        commit_and_release = self._sink.commit_and_release  # type: ignore[attr-defined]
        event_id: uuid.UUID = await commit_and_release(conn, event, **kwargs)
        self._notify()
        return event_id

    def __getattr__(self, name: str) -> Any:
        # Everything else (engine, check(), connect(), aclose(), ...) is the wrapped sink's, so
        # the start-up check runs through this wrapper.
        return getattr(self._sink, name)

    def __repr__(self) -> str:
        return f"notifying({self._sink!r})"
