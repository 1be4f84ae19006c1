"""``EngineCloser``: ``aclose()`` and ``async with`` for objects that may own their engine."""

from __future__ import annotations

from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["EngineCloser"]


class EngineCloser:
    """Disposes of ``_engine`` on :meth:`aclose` when ``_owns_engine`` says it was created here.

    An engine the caller passed in is theirs: it stays open for their other users.
    """

    _engine: AsyncEngine
    _owns_engine: bool

    async def aclose(self) -> None:
        """Dispose of the engine if it was created from a URL here; a shared one stays open."""
        if self._owns_engine:
            await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
