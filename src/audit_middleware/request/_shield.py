"""``shielded()``: anyio's shield against cancellation, entered only where anyio could cancel.

The audit write must not be cut short by a cancelled scope (Starlette cancels a streaming
response's task group when the client goes away). Entering ``anyio.CancelScope(shield=True)``
costs 2.6 us, most of it registering the task with anyio, on a path every request takes. On
asyncio anyio cancels a task only through a cancel scope it is in; a task in none (uvicorn's
task for a request, with no task group around the handler) has nothing to be shielded from.
That is read from anyio's own record of tasks, a private one: when it cannot be read, the shield
is always entered.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import anyio

__all__ = ["shielded"]

_task_states: Any
try:
    from anyio._backends._asyncio import _task_states
except ImportError:  # another anyio: always shield
    _task_states = None

_UNSHIELDED = contextlib.nullcontext()


def anyio_may_cancel(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` is in an anyio cancel scope (True when that cannot be told)."""
    try:
        state = _task_states.get(task)
        return state is not None and state.cancel_scope is not None
    except Exception:
        return True


def shielded() -> contextlib.AbstractContextManager[Any]:
    """A shield from anyio's cancellation for the block, where one is needed."""
    if _task_states is not None:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no asyncio loop: trio, through anyio
            task = None
        if task is not None and not anyio_may_cancel(task):
            return _UNSHIELDED
    return anyio.CancelScope(shield=True)
