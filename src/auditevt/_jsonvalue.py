"""Validation of free-form JSON values (``Event.changes``) against what Go can read back.

Go decodes ``changes`` into an ``any``: objects with string keys, arrays, strings, bools, null and
float64 numbers. So NaN and the infinities are refused, and so is an integer too large for a
float64; a string must be valid Unicode (no lone surrogates). Tuples are accepted as arrays.

Containers nest at most ``MAX_CHANGES_DEPTH`` (64) deep, the same limit for Python input and
JSON input. It sits well below pydantic-core's JSON parser limit (a document about 200 levels
deep is refused as a whole), so everything ``Event.to_json()`` writes, alone or inside the
ingest envelope, reads back; and the checks below recurse at most 64 frames deep, so no input
raises ``RecursionError``.
"""

from __future__ import annotations

import math
import re
import sys
from contextvars import ContextVar
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetPydanticSchema, WithJsonSchema
from pydantic_core import PydanticCustomError, core_schema

__all__ = [
    "MAX_CHANGES_DEPTH",
    "ZERO_SEEN",
    "GoString",
    "JsonValue",
    "check_json_value",
    "check_text",
    "too_deep",
]

#: Deepest nesting of arrays and objects in ``Event.changes``: ``{}`` is 1, ``{"a": [1]}`` is 2.
MAX_CHANGES_DEPTH = 64
#: Set to True when JSON input of ``changes`` held an integer 0: the parser reads ``-0`` as that
#: integer, while Go holds a negative zero and writes ``-0`` back, so a reader of the raw text
#: (``Event.model_validate_json``) must look again. A ContextVar, so threads and tasks never
#: see each other's; setting it costs nothing when there is no 0.
ZERO_SEEN: ContextVar[bool] = ContextVar("auditevt_zero_seen", default=False)

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


def too_deep(path: str) -> PydanticCustomError:
    """The error for containers nested deeper than ``MAX_CHANGES_DEPTH`` at ``path``."""
    return _fail(
        path,
        "arrays and objects nest deeper than {limit} levels (auditevt.MAX_CHANGES_DEPTH)",
        limit=MAX_CHANGES_DEPTH,
    )


def check_json_value(value: Any, path: str, depth: int = 0) -> Any:
    """Return ``value`` (tuples turned into lists) or raise naming the path of the bad part.

    ``depth`` is how many containers enclose ``value``.
    """
    kind = type(value)
    if kind is str:
        return check_text(value, path)
    if value is None or kind is bool:
        return value
    if kind is int:
        if -_FLOAT64_INT_LIMIT <= value <= _FLOAT64_INT_LIMIT:
            return value
        raise _fail(
            path, "integer {value} is beyond float64, which Go reads numbers into", value=value
        )
    if kind is float:
        if math.isfinite(value):
            return value
        raise _fail(path, "{value} is not a JSON number", value=repr(value))
    if kind is dict or kind is list or kind is tuple:
        if depth >= MAX_CHANGES_DEPTH:
            raise too_deep(path)
        depth += 1
    if kind is dict:
        changed: dict[str, Any] | None = None
        for key, item in value.items():
            if type(key) is not str:
                raise _fail(path, "object key {key} is not a string", key=repr(key))
            checked = check_json_value(item, f"{path}.{key}", depth)
            if checked is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = checked
        return value if changed is None else changed
    if kind is list or kind is tuple:
        items = []
        same = kind is list
        for i, item in enumerate(value):
            checked = check_json_value(item, f"{path}[{i}]", depth)
            same = same and checked is item
            items.append(checked)
        return value if same else items
    raise _fail(path, "a value of type {type} is not JSON", type=kind.__name__)


def _valid_text(value: str) -> str:
    # No field name: a validator given one costs pydantic a ValidationInfo per call, and the
    # error's location names the field anyway.
    if value.isascii() or _SURROGATE.search(value) is None:
        return value
    raise PydanticCustomError(
        "json_value", "string holds a lone surrogate, which is not valid Unicode"
    )


def _go_string_schema(source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    # JSON input is already valid Unicode (the JSON parser refuses lone surrogates); Python
    # input is checked.
    return core_schema.json_or_python_schema(
        json_schema=core_schema.str_schema(strict=True),
        python_schema=core_schema.no_info_after_validator_function(
            _valid_text, core_schema.str_schema(strict=True)
        ),
    )


GoString = Annotated[str, GetPydanticSchema(_go_string_schema)]
"""A Go ``string``: any valid Unicode text, strictly a string."""


def _plain(value: Any, depth: int) -> int:
    """0 when ``value`` needs nothing more; ``_BAD`` when the full check must name a bad part;
    ``_ZERO`` (or-ed in) when it holds an integer 0.

    JSON input has only JSON types, valid strings and string keys, so what is left to check is
    NaN, the infinities, integers beyond float64 and the depth. It is on the hot path of every
    parse, hence the unrolled type tests.
    """
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list:
        items = value
    elif kind is float:
        return 0 if value - value == 0.0 else _BAD
    elif kind is int:
        if value == 0:
            return _ZERO
        return 0 if -_FLOAT64_INT_LIMIT <= value <= _FLOAT64_INT_LIMIT else _BAD
    else:
        return 0
    if depth >= MAX_CHANGES_DEPTH:
        return _BAD
    found = 0
    for item in items:
        item_kind = type(item)
        if item_kind is str:
            continue
        if item_kind is int:
            if item == 0:
                found = _ZERO
            elif not -_FLOAT64_INT_LIMIT <= item <= _FLOAT64_INT_LIMIT:
                return _BAD
        elif item_kind is float:
            if item - item != 0.0:
                return _BAD
        elif item_kind is dict or item_kind is list:
            found |= _plain(item, depth + 1)
            if found & _BAD:
                return _BAD
    return found


_BAD = 1
_ZERO = 2


def _scan(value: Any) -> int:
    """``_plain(value, 0)``, with the two levels of the usual ``changes`` (an object of
    objects: before and after) walked inline: a call per container is a tenth of a parse.

    The inner loop is ``_plain``'s, repeated on purpose (change both together): shared, as a
    function over the items or as one loop over a list of both levels' items, it measured
    1.5-3% slower parses (``contract.parse_ratio`` below 0.70 in half the runs).
    """
    if type(value) is not dict:
        return _plain(value, 0)
    found = 0
    for child in value.values():
        kind = type(child)
        if kind is str:
            continue
        if kind is dict:
            items: Any = child.values()
        elif kind is list:
            items = child
        else:
            found |= _plain(child, 0)
            if found & _BAD:
                return _BAD
            continue
        for item in items:
            item_kind = type(item)
            if item_kind is str:
                continue
            if item_kind is int:
                if item == 0:
                    found |= _ZERO
                elif not -_FLOAT64_INT_LIMIT <= item <= _FLOAT64_INT_LIMIT:
                    return _BAD
            elif item_kind is float:
                if item - item != 0.0:
                    return _BAD
            elif item_kind is dict or item_kind is list:
                found |= _plain(item, 2)
                if found & _BAD:
                    return _BAD
    return found


def _plain_python(value: Any, depth: int) -> bool:
    """Whether Python input ``value`` is JSON as it stands: what check_json_value would return
    unchanged, found without building a path per element (only a failure is checked again, to
    name the bad part). Unrolled like _plain: it runs for every event built in Python."""
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                return False
        items: Any = value.values()
    elif kind is list:
        items = value
    else:
        items = (value,)
        depth -= 1
    if depth >= MAX_CHANGES_DEPTH:
        return False
    for item in items:
        kind = type(item)
        if kind is dict or kind is list:
            if not _plain_python(item, depth + 1):
                return False
        elif not (
            (kind is str and (item.isascii() or _SURROGATE.search(item) is None))
            or (kind is int and -_FLOAT64_INT_LIMIT <= item <= _FLOAT64_INT_LIMIT)
            or (kind is float and item - item == 0.0)  # not NaN or an infinity
            or item is None
            or kind is bool
        ):
            return False
    return True


def _check_python_input(value: Any, info: core_schema.ValidationInfo) -> Any:
    if _plain_python(value, 0):
        return value
    return check_json_value(value, info.field_name or "value")


def _check_json_input(value: Any) -> Any:
    found = _scan(value)
    if not found:
        return value
    if found & _BAD:
        return check_json_value(value, "changes")
    ZERO_SEEN.set(True)
    return value


def _json_value_schema(source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    return core_schema.json_or_python_schema(
        # pydantic-core checks JSON input; only a failure (rare) is re-checked in Python
        # to name the bad part by its path instead of listing every union branch.
        json_schema=core_schema.no_info_after_validator_function(
            _check_json_input, core_schema.any_schema()
        ),
        python_schema=core_schema.with_info_plain_validator_function(_check_python_input),
    )


JsonValue = Annotated[
    Any,
    GetPydanticSchema(_json_value_schema),
    WithJsonSchema(
        {
            "description": "Any JSON value; numbers must fit a float64; arrays and objects nest "
            f"at most {MAX_CHANGES_DEPTH} deep."
        }
    ),
]
"""Any JSON value Go can decode into an ``any``."""
