"""What ``record(changes=...)`` accepts, how it is encoded, and how much of it is kept.

At the call, on the event loop, :func:`prepare_changes` walks ``changes`` once, and stops early:

- it refuses what cannot be written (``ConfigurationError``, also a ``ValueError`` and a
  ``TypeError``, naming the path and the value): NaN and the infinities, numbers beyond
  float64 (Go reads numbers into float64), strings with lone surrogates, non-string keys
  other than ints, naive datetimes, nesting deeper than ``MAX_CHANGES_DEPTH``, and types that
  are not JSON;
- it encodes the values users naturally pass as Go's ``encoding/json`` would see them (see
  :func:`prepare_changes`);
- it counts elements and bytes as it goes, and once either passes its :class:`ChangesLimits`
  it stops: the value is kept as :class:`Oversized`, whose summary (size, top-level keys, SHA-256
  of the redacted content) is computed when the event is built, in slices that yield to the
  event loop (``_summary``). No step of the work per request blocks the loop for long,
  whatever arrives.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic_core import PydanticCustomError

from audit_middleware._exceptions import ConfigurationError
from auditevt import MAX_CHANGES_DEPTH
from auditevt._jsonvalue import check_json_value

__all__ = [
    "MAX_CHANGES_DEPTH",
    "ChangesLimits",
    "Oversized",
    "encode_natural",
    "prepare_weighed",
]

_MAX_SHOWN = 80  # characters of a bad value (or key) quoted in an error message
_FLOAT64_MAX = 1.7976931348623157e308


@dataclass(frozen=True, kw_only=True)
class ChangesLimits:
    """How much of ``changes`` one request may record; past a limit it becomes a summary."""

    max_bytes: int = 128 * 1024
    """Size of ``changes`` in bytes (UTF-8 of its strings and keys, plus punctuation)."""
    max_elements: int = 5_000
    """Values in ``changes`` in total (every object member and array item, at any depth)."""
    max_summary_keys: int = 32
    """Top-level keys (each cut to 64 characters) listed in the summary of an oversized one."""

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_elements", "max_summary_keys"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ConfigurationError(f"ChangesLimits({name}={value!r}): must be an int >= 0")


class _Exceeded(Exception):
    """Internal: a limit was passed; the walk stops."""


@dataclass(frozen=True)
class Oversized:
    """``changes`` past a limit: kept as given, summarised when the event is built."""

    value: Any
    """What the handler passed, unchanged (not encoded past the point the walk stopped)."""
    reason: str
    """Which limit it passed, e.g. ``"more than 5000 elements (max_elements)"``."""
    limits: ChangesLimits
    """The limits in force at the call."""


# -- the walk at the call --------------------------------------------------------------------

Path = tuple[Any, ...]  # (parent path, key or index), built cheaply; spelled only on error


def _spell(path: Path) -> str:
    parts: list[str] = []
    while path:
        path, step = path
        if type(step) is int:
            parts.append(f"[{step}]")
        elif isinstance(step, str) and step.isidentifier() and len(step) <= 64:
            parts.append(f".{step}")
        else:
            parts.append(f"[{_show(step)}]")
    return "changes" + "".join(reversed(parts))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _bad_value(path: Path, value: Any, why: str) -> ConfigurationError:
    # ConfigurationError is a ValueError and a TypeError: either clause catches it.
    return ConfigurationError(f"record(changes=...): {_spell(path)} = {_show(value)}: {why}")


_bad_type = _bad_value


def _rfc3339(value: dt.datetime, path: Path) -> str:
    offset = value.utcoffset()
    if offset is None:
        raise _bad_value(
            path, value, "a naive datetime has no UTC offset; pass an aware one (tzinfo=...)"
        )
    if offset.microseconds or offset.seconds % 60:
        raise _bad_value(path, value, "RFC 3339 cannot write a UTC offset with seconds")
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


def _decimal(value: Decimal, path: Path) -> int | float:
    if not value.is_finite():
        raise _bad_value(path, value, "is not a JSON number")
    if abs(value) > Decimal(_FLOAT64_MAX):
        raise _bad_value(path, value, "is beyond float64, which Go reads numbers into")
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def encode_natural(value: Any, path: Path) -> Any:
    """A non-JSON Python value as Go would see it (not containers; see _walk)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return _rfc3339(value, path)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return _decimal(value, path)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")  # as Go encodes a []byte
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    raise _bad_type(
        path,
        value,
        f"a value of type {type(value).__name__} is not JSON; pass dicts, lists, str, int, "
        "float, bool, None, datetime, date, UUID, Decimal, enums, bytes, tuples or sets",
    )


class _Walk:
    __slots__ = ("bytes_left", "elements_left", "limits")

    def __init__(self, limits: ChangesLimits) -> None:
        self.limits = limits
        self.bytes_left = limits.max_bytes
        self.elements_left = limits.max_elements

    def spend(self, size: int) -> None:
        self.bytes_left -= size
        if self.bytes_left < 0:
            raise _Exceeded(f"more than {self.limits.max_bytes} bytes (max_bytes)")

    def count(self, elements: int) -> None:
        self.elements_left -= elements
        if self.elements_left < 0:
            raise _Exceeded(f"more than {self.limits.max_elements} elements (max_elements)")

    def text(self, value: str, path: Path) -> str:
        if len(value) > self.bytes_left:
            self.spend(len(value))  # at least that many bytes: no need to look further
        if value.isascii():
            self.spend(len(value) + 2)
            return value
        try:
            check_json_value(value, "")
        except PydanticCustomError:
            raise _bad_value(
                path, value, "holds a lone surrogate, which is not valid Unicode"
            ) from None
        self.spend(len(value.encode("utf-8")) + 2)
        return value

    def scalar(self, value: Any, path: Path) -> Any:
        try:
            check_json_value(value, "")
        except PydanticCustomError:
            why = (
                "is beyond float64, which Go reads numbers into"
                if type(value) is int
                else "is not a JSON number (Go cannot read NaN or the infinities)"
            )
            raise _bad_value(path, value, why) from None
        self.spend(5 if type(value) is int else 24)
        return value

    def key(self, key: Any, path: Path) -> str:
        if type(key) is not str:
            if isinstance(key, enum.Enum):
                key = key.value
            if isinstance(key, str):
                key = str.__str__(key)
            elif isinstance(key, int) and not isinstance(key, bool):
                key = str(int(key))  # as Go writes a map[int]T's keys
            else:
                raise _bad_type((path, key), key, "an object key must be a str (or an int)")
        return self.text(key, (path, key))

    def value(self, value: Any, path: Path, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return self.text(value, path)
        if value is None or kind is bool:
            self.spend(5)
            return value
        if kind is int or kind is float:
            return self.scalar(value, path)
        if kind is dict or kind is list or kind is tuple:
            return self.container(value, path, depth)
        if isinstance(value, Mapping | list | tuple | set | frozenset):
            return self.container(value, path, depth)
        return self.value(encode_natural(value, path), path, depth)

    def container(self, value: Any, path: Path, depth: int) -> Any:
        if depth >= MAX_CHANGES_DEPTH:
            raise _bad_value(
                path,
                value,
                f"arrays and objects nest deeper than {MAX_CHANGES_DEPTH} levels "
                "(auditevt.MAX_CHANGES_DEPTH)",
            )
        depth += 1
        self.count(len(value))  # early exit: a million keys cost one len() here
        self.spend(2)
        if isinstance(value, Mapping):
            result: dict[str, Any] = {}
            for key, item in value.items():
                name = self.key(key, path)
                if name in result:
                    raise _bad_value(
                        (path, key), key, f"two keys of this object both read {name!r}"
                    )
                result[name] = self.value(item, (path, name), depth)
            return result
        items = [self.value(item, (path, i), depth) for i, item in enumerate(value)]
        if isinstance(value, set | frozenset):
            with contextlib.suppress(TypeError):  # mixed types: kept in iteration order
                items.sort()
        return items


# How much settle_changes redacts on the event loop (its _INLINE): elements, strings by length.
LIGHT_WEIGHT = 256


_NOT_PLAIN: Any = object()
_FLOAT64_INT_LIMIT = int(_FLOAT64_MAX)


def _plain_copy(value: Any, depth: int, left: list[int]) -> Any:
    """A copy of ``value`` when it is plain JSON that needs no encoding (dicts with ASCII str
    keys, lists, ASCII str, ints and floats Go can read, bools, None), its elements and bytes
    taken from ``left`` as _Walk counts them; else ``_NOT_PLAIN``, also as soon as either count
    goes below zero (the walk then stops as early). The usual ``changes`` take this path: a loop
    per container instead of four calls per element (a test holds the two to each other)."""
    kind = type(value)
    if (kind is not dict and kind is not list) or depth >= MAX_CHANGES_DEPTH:
        return _NOT_PLAIN
    left[0] -= len(value)  # a million keys cost one len() here, as in the walk
    if left[0] < 0:
        return _NOT_PLAIN
    size = left[1] - 2  # bytes left, in a local while this container is walked
    result: Any = {} if kind is dict else []
    for key, item in value.items() if kind is dict else enumerate(value):
        if kind is dict:
            if type(key) is not str:
                return _NOT_PLAIN
            size -= len(key) + 2
            if size < 0 or not key.isascii():
                return _NOT_PLAIN
        item_kind = type(item)
        if item_kind is str:
            size -= len(item) + 2
            if size < 0 or not item.isascii():
                left[1] = size  # where it stopped (a test reads it)
                return _NOT_PLAIN
        elif item_kind is int:
            if not -_FLOAT64_INT_LIMIT <= item <= _FLOAT64_INT_LIMIT:
                return _NOT_PLAIN
            size -= 5
        elif item_kind is float:
            if item - item != 0.0:  # NaN and the infinities
                return _NOT_PLAIN
            size -= 24
        elif item is None or item_kind is bool:
            size -= 5
        else:
            left[1] = size
            item = _plain_copy(item, depth + 1, left)
            if item is _NOT_PLAIN:
                return _NOT_PLAIN
            size = left[1]
        if kind is dict:
            result[key] = item
        else:
            result.append(item)
    left[1] = size
    return result if left[1] >= 0 else _NOT_PLAIN


def prepare_weighed(changes: Any, limits: ChangesLimits) -> tuple[Any, bool]:
    """``changes`` checked and encoded for the event (or :class:`Oversized` past a limit), and
    whether it is light enough for settle_changes to redact on the loop.

    Encoded as Go's ``encoding/json`` would see them: an aware ``datetime`` as RFC 3339 text
    (``2026-12-01T09:30:00.5+01:00``, ``Z`` for UTC), a ``date`` as ``2026-12-01``, a ``UUID`` as
    its hyphenated text, a finite ``Decimal`` as a number (an int when integral), an enum by its
    value, tuples as arrays, sets as arrays (sorted when their items sort), ``bytes`` as base64
    text (as Go writes a ``[]byte``), any ``Mapping`` as an object and int keys as their decimal
    text. Raises ``ConfigurationError`` (a ``ValueError`` and a ``TypeError``) naming the path
    and the value otherwise.

    The walk's own tally bounds the weight settle_changes would measure (each element once, and
    every string's length at most its UTF-8 size), so the usual small ``changes`` are not
    walked a second time to find that out.
    """
    left = [limits.max_elements, limits.max_bytes]
    plain = _plain_copy(changes, 0, left)
    if plain is not _NOT_PLAIN:
        elements = limits.max_elements - left[0] + 1  # the value itself too, as the walk counts
        size = limits.max_bytes - left[1]
        return plain, elements + size // 64 <= LIGHT_WEIGHT
    return _walk_weighed(changes, limits)


def _walk_weighed(changes: Any, limits: ChangesLimits) -> tuple[Any, bool]:
    """:func:`prepare_weighed` by the general walk, which also encodes, limits and names."""
    walk = _Walk(limits)
    try:
        prepared = walk.value(changes, (), 0)
    except _Exceeded as exceeded:
        return Oversized(changes, str(exceeded), limits), False
    elements = limits.max_elements - walk.elements_left + 1
    size = limits.max_bytes - walk.bytes_left
    return prepared, elements + size // 64 <= LIGHT_WEIGHT
