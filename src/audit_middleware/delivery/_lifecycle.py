"""A relay's lifecycle: running, waking, pausing, starting, draining and stopping.

``RelayLifecycle`` is the part of :class:`OutboxRelay` that is about time and tasks, not about
the outbox: it owns the run state (the wake-up event, the stop request, the background task)
and leaves the work itself to the subclass's ``run_forever()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Self

from audit_middleware._exceptions import ConfigurationError
from audit_middleware.delivery._config import check_seconds
from audit_middleware.delivery._notify import NotifyingSink, Sink

__all__ = ["RelayLifecycle"]

logger = logging.getLogger("audit_middleware.relay")


class RelayLifecycle:
    """Start, stop, drain and wake a relay; the subclass implements ``run_forever()``."""

    def __init__(
        self, *, owner: str, drain_timeout: float, sleep: Callable[[float], Awaitable[None]]
    ) -> None:
        self._owner = owner
        self._drain_timeout = drain_timeout
        self._sleep = sleep
        # Run state: created when a run starts, in the running loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._draining = False
        self._stop_after_batch = False
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def run_forever(self) -> None:
        """Work until ``stop()`` is called or the task is cancelled (the subclass's)."""
        raise NotImplementedError

    def _starting(self) -> None:
        """Called as each run starts, in the running loop (the subclass sets up its metrics)."""

    @property
    def running(self) -> bool:
        """Whether a run (``start``, ``run_forever`` or ``run_until_empty``) is in progress."""
        return self._running

    def notify(self) -> None:
        """Wake the relay at once: call it after each committed audit write.

        Cheap, never blocks, never raises; safe from any thread. Does nothing while the relay
        is not running (its first look at the outbox will find the row anyway).
        """
        wake, loop = self._wake, self._loop
        if wake is None or loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
            return
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody to wake
            loop.call_soon_threadsafe(wake.set)

    def notifying(self, sink: Sink) -> Sink:
        """``sink`` (an ``AuditStore``) wrapped to call :meth:`notify` after each committed write.

        Give the result to ``AuditMiddleware(store=...)`` (or ``sink=...``): a healthy
        Telemetry then sees each event within milliseconds, instead of at the next sweep.
        """
        if not callable(getattr(sink, "write", None)):
            raise ConfigurationError(f"sink={sink!r} has no write(event) method")
        return NotifyingSink(sink, self.notify)

    async def start(self) -> None:
        """Run the relay in a background task of the running loop (returns at once)."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("this relay is already running")
        if self._running:
            raise RuntimeError("this relay is already running")
        self._task = asyncio.create_task(self.run_forever(), name=f"OutboxRelay({self._owner})")
        # Let the task set itself up, so that notify() right after start() is not lost.
        await asyncio.sleep(0)

    # The timeout bounds the drain before cancelling, which asyncio.timeout around it cannot do.
    async def stop(self, timeout: float | None = None, *, drain: bool = True) -> None:  # noqa: ASYNC109
        """Stop the background task within ``timeout`` seconds (default ``drain_timeout``).

        With ``drain`` (the default) the relay first keeps delivering whatever is due, then
        stops; without it, it stops after the batch in flight. When ``timeout`` runs out, the
        batch in flight is abandoned and its rows given back (due at once for the next start;
        Telemetry deduplicates any that did arrive). Never hangs: it returns within
        ``timeout`` plus a couple of seconds. Never raises either: an error that ended the
        relay is logged. Idempotent. (A relay run with ``run_forever()`` or
        ``run_until_empty()`` is stopped with ``request_stop()`` or by cancelling it.)
        """
        task = self._task
        if task is None:
            return
        if timeout is None:
            timeout = self._drain_timeout
        check_seconds("timeout", timeout, positive=False)
        self.request_stop(drain=drain)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            logger.warning(
                "relay %s did not finish within %.1f s; cancelling", self._owner, timeout
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception:
            # Shutdown goes on: what the relay did not deliver waits in the outbox.
            logger.error("relay %s had stopped with an error", self._owner, exc_info=True)
        finally:
            self._task = None

    def request_stop(self, *, drain: bool = False) -> None:
        """Ask a running relay to stop after the batch in flight (or, with ``drain``, once
        nothing is due); returns at once. Signal handlers call this."""
        if drain:
            self._draining = True
        else:
            self._stop_after_batch = True
        if self._stopping is not None:
            self._stopping.set()
        self.notify()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Run the relay for the lifetime of an ASGI app: ``Starlette(lifespan=relay.lifespan)``.

        Starts it at start-up; at shutdown drains for ``drain_timeout`` seconds and stops.
        """
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextlib.asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        if self._running:
            raise RuntimeError("this relay is already running")
        self._running = True
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        if self._draining or self._stop_after_batch:
            self._stopping.set()  # stop() came before the task got going
        self._starting()
        try:
            yield
        finally:
            self._running = False
            self._wake = None
            self._stopping = None
            self._loop = None
            self._draining = False
            self._stop_after_batch = False

    async def _wait(self, seconds: float) -> None:
        wake = self._wake
        if wake is None or wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` (through the injectable sleep), cut short only by a stop."""
        stopping = self._stopping
        if stopping is None or stopping.is_set():
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (sleeper, stopper):
                future.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)
