"""``write_timeout`` on asyncio: every write of one event loop watched by one timer.

``asyncio.timeout()`` schedules a timer per call: a ``TimerHandle`` pushed onto the loop's heap,
whose comparisons are Python calls, and cancelled afterwards. That measured 3.8 us a write, and
with the default 10 s timeout at 1,000 requests/s the heap holds ten thousand cancelled
handles. Here a write enters and leaves a set; one timer per loop, running only while writes are
in flight, cancels a write whose deadline has passed. It cancels once, as ``asyncio.timeout()``
does, so psycopg can still cancel the statement in the server; and it fires at most one tick
after the deadline (a tenth of the timeout, at most a quarter of a second).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

__all__ = ["WriteDeadlines"]

_MAX_TICK = 0.25  # seconds


class _Write:
    __slots__ = ("cancelling", "deadline", "expired", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.cancelling = task.cancelling()  # cancel requests from elsewhere, already pending
        self.expired = False


class WriteDeadlines:
    """The writes in flight on ``loop``, each cancelled once its ``timeout`` has passed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.tick = min(timeout / 10, _MAX_TICK)
        self._writes: set[_Write] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, write: Awaitable[Any]) -> None:
        """Await ``write``; past the deadline, a ``TimeoutError`` naming it.

        A cancellation from elsewhere stays a ``CancelledError``, as with ``asyncio.timeout()``.
        """
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("WriteDeadlines.run() must be awaited in a task")
        watched = _Write(task, self.loop.time() + self.timeout)
        self._writes.add(watched)
        if self._timer is None:
            self._timer = self.loop.call_later(self.tick, self._check)
        try:
            await write
        except asyncio.CancelledError:
            if watched.expired and task.uncancel() <= watched.cancelling:
                raise TimeoutError(f"the audit write took longer than {self.timeout} s") from None
            raise
        else:
            if watched.expired:
                # Expired as it finished: withdraw the cancel request, as asyncio.timeout does.
                task.uncancel()
        finally:
            self._writes.discard(watched)

    def _check(self) -> None:
        now = self.loop.time()
        for watched in self._writes:
            if not watched.expired and watched.deadline <= now:
                watched.expired = True
                watched.task.cancel()
        self._timer = self.loop.call_later(self.tick, self._check) if self._writes else None
