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

from pydantic import (
    AllowInfNan,
    ValidationError,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
)
from typing_extensions import TypeAliasType
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


# In JSON mode the whole check runs in pydantic-core: a recursive union of the JSON types,
# with finite floats and integers a float64 can hold.
_StrictJson = TypeAliasType(  # type: ignore[misc]
    "_StrictJson",
    "Annotated[str, Strict()] | Annotated[bool, Strict()] "
    "| Annotated[int, Strict(), Field(ge=-_FLOAT64_INT_LIMIT, le=_FLOAT64_INT_LIMIT)] "
    "| Annotated[float, Strict(), AllowInfNan(False)] "
    "| Annotated[dict[str, _StrictJson], Strict()] | Annotated[list[_StrictJson], Strict()] "
    "| None",
)


def _explain_failure(
    value: Any, handler: core_schema.ValidatorFunctionWrapHandler, info: core_schema.ValidationInfo
) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return check_json_value(value, info.field_name or "value")


class _JsonValueSchema:
    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.json_or_python_schema(
            # pydantic-core checks JSON input; only a failure (rare) is re-checked in Python
            # to name the bad part by its path instead of listing every union branch.
            json_schema=core_schema.with_info_wrap_validator_function(
                _explain_failure, handler(_StrictJson)
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
