"""Validation of free-form JSON values (``Event.changes``) against what Go can read back.

Go decodes ``changes`` into an ``any``: objects with string keys, arrays, strings, bools, null and
float64 numbers. So NaN and the infinities are refused, and so is an integer too large for a
float64; a string must be valid Unicode (no lone surrogates). Tuples are accepted as arrays.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

from pydantic_core import PydanticCustomError

__all__ = ["check_json_value", "check_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")
# The largest integer a float64 can hold; Go refuses a JSON number beyond it.
_FLOAT64_INT_LIMIT = int(sys.float_info.max)


def _fail(path: str, message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError("json_value", "{path}: " + message, {"path": path, **context})


def check_text(value: str, path: str) -> str:
    """Refuse a string holding lone surrogates: it cannot be written as UTF-8."""
    if not value.isascii() and _SURROGATE.search(value) is not None:
        raise _fail(path, "string holds a lone surrogate, which is not valid Unicode")
    return value


def check_json_value(value: Any, path: str) -> Any:
    """Return ``value`` (tuples turned into lists) or raise naming the path of the bad part."""
    kind = type(value)
    if kind is str:
        return check_text(value, path)
    if value is None or kind is bool:
        return value
    if kind is int:
        if -_FLOAT64_INT_LIMIT <= value <= _FLOAT64_INT_LIMIT:
            return value
        raise _fail(path, "integer {value} is beyond float64, which Go reads numbers into",
                    value=value)
    if kind is float:
        if math.isfinite(value):
            return value
        raise _fail(path, "{value} is not a JSON number", value=repr(value))
    if kind is dict:
        changed: dict[str, Any] | None = None
        for key, item in value.items():
            if type(key) is not str:
                raise _fail(path, "object key {key} is not a string", key=repr(key))
            checked = check_json_value(item, f"{path}.{key}")
            if checked is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = checked
        return value if changed is None else changed
    if kind is list or kind is tuple:
        items = [check_json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if kind is list and all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items
    raise _fail(path, "a value of type {type} is not JSON", type=kind.__name__)
