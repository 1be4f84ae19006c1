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

    def __getattr__(self, name: str) -> Any:
        # Everything else (engine, check(), aclose(), ...) is the wrapped sink's.
        return getattr(self._sink, name)

    def __repr__(self) -> str:
        return f"notifying({self._sink!r})"
