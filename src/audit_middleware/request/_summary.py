"""What is recorded instead of an oversized ``changes``, computed without stalling the loop.

``{"$oversized": {...}}`` holds why (``reason``), what it was (``type``: ``object``, ``array``,
``string``...; ``length``: its top-level members), its first top-level keys (``keys``, at most
``ChangesLimits.max_summary_keys``, each cut to 64 characters, redacted as text), and the size
(``bytes``) and SHA-256 (``sha256``) of the redacted content as compact JSON in UTF-8, as
``json.dumps(redacted, ensure_ascii=False, separators=(",", ":"))`` writes it.

The content can be 16 MB with a million keys, so it is redacted and hashed in slices on the
event loop: batches of about ``_BATCH`` elements (strings weigh by their length), each through
the configured redactor, with a yield to the loop once a slice has taken ``_SLICE`` seconds. A
worker thread would not do: a thread holding the GIL in one C call (a dict resize, a regular
expression over a long string) stalls the loop as surely. Members too big for a batch are
walked into; before that the redactor is asked about their key alone (``{key: probe}``), so a
big value under a sensitive key is replaced whole, as it would be in one call. Two limits of
slicing, which affect only the digest (the content is never stored): a name/value pair split
across two batches, and a secret across two 64 KiB pieces of a longer string, are not seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any

import anyio.lowlevel
import anyio.to_thread

from audit_middleware.request._changes import (
    LIGHT_WEIGHT,
    ChangesLimits,
    Oversized,
    encode_natural,
)

__all__ = ["settle_changes", "summarize"]

_SLICE = 0.001  # seconds of work between two yields to the event loop
_BATCH = 128  # weight of the members redacted and encoded by one redactor call
_PIECE = 1 << 16  # characters of a longer string redacted at a time
_PROBE = "\x00audit_middleware.probe\x00"
# Heavier changes than this (elements, strings by length) are redacted in a worker thread.
_INLINE = LIGHT_WEIGHT


def _json_default(value: Any) -> Any:
    # Past the limit nothing was checked at the call: encode what can be, name what cannot.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        items = list(value)
        with contextlib.suppress(TypeError):
            items.sort()
        return items
    try:
        return encode_natural(value, ())
    except (TypeError, ValueError):
        return f"<{type(value).__name__}>"


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default).encode


def _weight(value: Any, budget: int) -> int:
    """``budget`` less the weight of ``value``; negative once it is heavier (stops there)."""
    if isinstance(value, str):
        return budget - 1 - len(value) // 64
    if isinstance(value, Mapping):
        items: Any = value.values()
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    else:
        return budget - 1
    budget -= 1
    for item in items:
        budget = _weight(item, budget)
        if budget < 0:
            return budget
    return budget


class _Digest:
    """Hashes and counts the JSON text as it comes; yields to the loop between slices."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.deadline = time.perf_counter() + _SLICE

    async def add(self, text: str) -> None:
        data = text.encode("utf-8", "surrogatepass")
        self.size += len(data)
        self.sha256.update(data)
        if time.perf_counter() >= self.deadline:
            await anyio.lowlevel.checkpoint()
            self.deadline = time.perf_counter() + _SLICE


async def _stream(value: Any, redaction: Callable[[Any], Any], out: _Digest) -> None:
    if isinstance(value, str) and len(value) > _PIECE:
        await out.add('"')
        for start in range(0, len(value), _PIECE):
            piece = redaction(value[start : start + _PIECE])
            await out.add(_dumps(piece if isinstance(piece, str) else str(piece))[1:-1])
        await out.add('"')
        return
    if _weight(value, _BATCH) >= 0:
        await out.add(_dumps(redaction(value)))
        return
    is_object = isinstance(value, Mapping)
    await out.add("{" if is_object else "[")
    first = True
    batch: list[Any] = []
    weight = 0

    async def flush() -> None:
        nonlocal first, batch, weight
        if batch:
            redacted = redaction(dict(batch) if is_object else batch)
            text = _dumps(redacted)[1:-1]
            await out.add(text if first else "," + text)
            first, batch, weight = False, [], 0

    members: Any = value.items() if is_object else ((None, item) for item in value)
    for key, item in members:
        left = _weight(item, _BATCH)
        if left >= 0:
            if weight + _BATCH - left > _BATCH:
                await flush()
            batch.append((key, item) if is_object else item)
            weight += _BATCH - left
            continue
        await flush()
        await out.add("" if first else ",")
        first = False
        if not is_object:
            await _stream(item, redaction, out)
            continue
        await out.add(_dumps({key: 0})[1:-3] + ":")  # the key as json.dumps spells it
        probed = redaction({key: _PROBE})
        replaced = probed.get(key, _PROBE) if isinstance(probed, dict) else _PROBE
        if replaced != _PROBE:
            await out.add(_dumps(replaced))  # a sensitive key: its value replaced whole
        else:
            await _stream(item, redaction, out)
    await flush()
    await out.add("}" if is_object else "]")


async def summarize(
    value: Any, reason: str, limits: ChangesLimits, redaction: Callable[[Any], Any]
) -> dict[str, Any]:
    """``{"$oversized": {...}}`` for ``value`` (see the module doc); never raises."""
    info: dict[str, Any] = {"reason": reason}
    if isinstance(value, Mapping):
        info["type"] = "object"
        info["length"] = len(value)
        shown = [str(key)[:64] for key in islice(value, limits.max_summary_keys)]
        try:
            info["keys"] = redaction(shown)
        except Exception:  # a custom redactor that cannot take a list: show no keys
            info["keys"] = []
    elif isinstance(value, list | tuple | set | frozenset):
        info["type"] = "array"
        info["length"] = len(value)
    else:
        info["type"] = "string" if isinstance(value, str) else type(value).__name__
    digest = _Digest()
    try:
        await _stream(value, redaction, digest)
    except Exception as exc:  # never lose the event over its summary
        info["bytes"] = None
        info["sha256"] = None
        info["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    else:
        info["bytes"] = digest.size
        info["sha256"] = digest.sha256.hexdigest()
    return {"$oversized": info}


async def settle_changes(
    changes: Any, redaction: Callable[[Any], Any], *, light: bool = False
) -> Any:
    """The ``changes`` to write: redacted, or, when oversized, its summary.

    Small ``changes`` (the common case) are redacted on the loop: a thread would cost more than
    the work. Larger ones, up to the limits, are redacted in one call in a worker thread: the
    result is exact, and a Python-level walk gives the GIL back to the loop every switch
    interval (5 ms). An oversized one is summarised in slices on the loop (module doc).
    """
    if changes is None:
        return None
    if light:  # known from record()'s walk (prepare_weighed): no need to weigh it again
        return redaction(changes)
    if isinstance(changes, Oversized):
        return await summarize(changes.value, changes.reason, changes.limits, redaction)
    if _weight(changes, _INLINE) < 0:
        return await anyio.to_thread.run_sync(redaction, changes)
    return redaction(changes)
