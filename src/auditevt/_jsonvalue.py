"""Validation of free-form JSON values (``Event.changes``) against what Go can read back.

Go decodes ``changes`` into an ``any``: objects with string keys, arrays, strings, bools, null and
float64 numbers. So NaN and the infinities are refused, and so is an integer too large for a
float64; a string must be valid Unicode (no lone surrogates). Tuples are accepted as arrays.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

__all__ = ["GoString", "JsonValue", "check_json_value", "check_text"]

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
        raise _fail(
            path, "integer {value} is beyond float64, which Go reads numbers into", value=value
        )
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


class _GoStringSchema:
    """A string field: JSON input is already valid Unicode (the JSON parser refuses lone
    surrogates), Python input is checked."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.json_or_python_schema(
            json_schema=core_schema.str_schema(strict=True),
            python_schema=core_schema.with_info_after_validator_function(
                lambda value, info: check_text(value, info.field_name or "value"),
                core_schema.str_schema(strict=True),
            ),
        )


GoString = Annotated[str, _GoStringSchema]
"""A Go ``string``: any valid Unicode text, strictly a string."""


def _finite(value: Any) -> bool:
    """True when no float in ``value`` is NaN or infinite and no integer is beyond float64.

    JSON input has only JSON types, valid strings and string keys, so this is all that is left
    to check there. It is on the hot path of every parse, hence the unrolled type tests; the
    full check names the bad part when this says no.
    """
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list:
        items = value
    elif kind is float:
        return bool(value - value == 0.0)
    elif kind is int:
        return bool(-_FLOAT64_INT_LIMIT <= value <= _FLOAT64_INT_LIMIT)
    else:
        return True
    for item in items:
        item_kind = type(item)
        if item_kind is str:
            continue
        if item_kind is int:
            if not -_FLOAT64_INT_LIMIT <= item <= _FLOAT64_INT_LIMIT:
                return False
        elif item_kind is float:
            if item - item != 0.0:
                return False
        elif (item_kind is dict or item_kind is list) and not _finite(item):
            return False
    return True


def _check_json_input(value: Any, info: core_schema.ValidationInfo) -> Any:
    if _finite(value):
        return value
    return check_json_value(value, info.field_name or "value")


class _JsonValueSchema:
    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.json_or_python_schema(
            # pydantic-core checks JSON input; only a failure (rare) is re-checked in Python
            # to name the bad part by its path instead of listing every union branch.
            json_schema=core_schema.with_info_after_validator_function(
                _check_json_input, core_schema.any_schema()
            ),
            python_schema=core_schema.with_info_plain_validator_function(
                lambda value, info: check_json_value(value, info.field_name or "value")
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"description": "Any JSON value; numbers must fit a float64."}


JsonValue = Annotated[Any, _JsonValueSchema]
"""Any JSON value Go can decode into an ``any``."""
