"""Open enumerations: a string field whose known values are an enum, and that reads any string.

Go's struct types ``action`` and ``action_context`` as plain strings, so Go reads and writes
any value, and a newer Core API may send one this version does not know. JSON input is
therefore read as the enum member when the value is known and as the plain ``str`` otherwise
(``isinstance(value, Action)`` tells them apart, and mypy narrows on it); Python code building
an event passes a member (or its value), so a typo is still caught where it is made.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

__all__ = ["open_enum"]


class _OpenEnum:
    def __init__(self, members: type[enum.StrEnum], extra: tuple[str, ...]) -> None:
        self.members = members
        self.extra = extra

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        known = list(self.members)
        return core_schema.json_or_python_schema(
            # All in pydantic-core: the member when known, else the string as it came.
            json_schema=core_schema.union_schema(
                [core_schema.literal_schema(known), core_schema.str_schema(strict=True)],
                mode="left_to_right",
                custom_error_type="string_expected",
                custom_error_message="Input should be a string",
            ),
            python_schema=core_schema.no_info_plain_validator_function(self._member),
        )

    def _member(self, value: Any) -> Any:
        if type(value) is self.members:
            return value  # what Python code passes: the member itself
        if isinstance(value, str):
            try:
                return self.members(value)
            except ValueError:
                if value in self.extra:
                    return value
        allowed = ", ".join(repr(str(known)) for known in [*self.members, *self.extra])
        raise PydanticCustomError(
            "enum",
            "{value} is not one of {allowed}: Python builds events with {enum} members "
            "(other values are only read from JSON, and kept as strings)",
            {"value": repr(value), "allowed": allowed, "enum": self.members.__name__},
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "examples": [member.value for member in self.members]}


def open_enum(members: type[enum.StrEnum], *extra: str) -> Any:
    """Annotation metadata: read any string, build from ``members`` (and ``extra`` values)."""
    return _OpenEnum(members, extra)
