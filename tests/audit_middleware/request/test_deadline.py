"""write_timeout on asyncio: one timer per loop for every write in flight (request._deadline)."""

from __future__ import annotations

import asyncio

import pytest

from audit_middleware.request._deadline import WriteDeadlines


async def _deadlines(seconds: float) -> WriteDeadlines:
    return WriteDeadlines(asyncio.get_running_loop(), seconds)


def test_a_write_past_its_deadline_raises_a_timeout_error_naming_it() -> None:
    async def main() -> None:
        deadlines = await _deadlines(0.05)
        with pytest.raises(TimeoutError, match=r"the audit write took longer than 0\.05 s"):
            await deadlines.run(asyncio.Event().wait())  # never set: a write that hangs
        assert not deadlines._writes

    asyncio.run(main())


def test_only_the_writes_past_their_deadline_are_cancelled() -> None:
    async def main() -> list[str]:
        deadlines = await _deadlines(0.05)
        hang = asyncio.Event()

        async def write(quick: bool) -> str:
            try:
                await deadlines.run(asyncio.sleep(0) if quick else hang.wait())
            except TimeoutError:
                return "timed out"
            return "written"

        return await asyncio.gather(*(write(i % 2 == 0) for i in range(6)))

    assert asyncio.run(main()) == ["written", "timed out"] * 3


def test_a_cancel_from_elsewhere_stays_a_cancellation() -> None:
    async def main() -> None:
        deadlines = await _deadlines(10.0)
        started = asyncio.Event()

        async def write() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(deadlines.run(write()))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not deadlines._writes

    asyncio.run(main())


def test_the_cancel_is_delivered_once_so_the_write_can_clean_up() -> None:
    # psycopg answers a cancellation by cancelling the statement in the server and awaiting
    # that: a second CancelledError would cut it short (anyio's scopes deliver one per step).
    async def main() -> list[str]:
        deadlines = await _deadlines(0.05)
        steps: list[str] = []

        async def write() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)  # longer than a tick: the timer fires again meanwhile
                steps.append("cleaned up")
                raise

        with pytest.raises(TimeoutError):
            await deadlines.run(write())
        return steps

    assert asyncio.run(main()) == ["cleaned up"]


def test_a_task_that_was_already_being_cancelled_stays_cancelled() -> None:
    async def main() -> None:
        deadlines = await _deadlines(0.05)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # pending from elsewhere, before the write starts
        with pytest.raises(asyncio.CancelledError):
            await deadlines.run(asyncio.Event().wait())
        task.uncancel()

    asyncio.run(main())
