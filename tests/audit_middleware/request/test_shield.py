"""shielded(): the shield is entered where anyio could cancel the task, and only there."""

from __future__ import annotations

import asyncio
import contextlib

import anyio
import anyio.lowlevel

from audit_middleware.request._shield import anyio_may_cancel, shielded


def test_a_plain_asyncio_task_needs_no_shield() -> None:
    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        assert not anyio_may_cancel(task)
        assert isinstance(shielded(), contextlib.nullcontext)
        with anyio.CancelScope():
            assert anyio_may_cancel(task)
            assert isinstance(shielded(), anyio.CancelScope)
            await anyio.lowlevel.checkpoint()
        assert not anyio_may_cancel(task)  # the scope is left: nothing can cancel it again

    asyncio.run(main())


def test_a_task_of_a_task_group_is_shielded() -> None:
    async def main() -> list[bool]:
        seen: list[bool] = []

        async def child() -> None:
            seen.append(isinstance(shielded(), anyio.CancelScope))

        async with anyio.create_task_group() as group:
            group.start_soon(child)
        return seen

    assert asyncio.run(main()) == [True]


def test_the_shield_holds_when_the_group_is_cancelled_mid_write() -> None:
    async def main() -> list[str]:
        steps: list[str] = []

        async def write() -> None:
            with shielded():
                await anyio.sleep(0.05)
                steps.append("written")

        async with anyio.create_task_group() as group:
            group.start_soon(write)
            await anyio.sleep(0.01)
            group.cancel_scope.cancel()
        return steps

    assert asyncio.run(main()) == ["written"]

