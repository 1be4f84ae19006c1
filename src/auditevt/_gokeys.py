"""An Event object's members resolved as Go's ``encoding/json`` resolves them.

Go matches each key to a struct field by exact name, else case-insensitively with Unicode
simple folding (``strings.EqualFold``), and lets the last match win; a JSON ``null`` leaves a
field that is not a pointer or an interface as it was. For our field names (ASCII lowercase and
``_``) folding adds exactly two runes to the ASCII cases: U+212A KELVIN SIGN for ``k`` and
U+017F LATIN SMALL LETTER LONG S for ``s`` (checked against Go in the tests).

:func:`go_canonical` rewrites the text so that each field appears once, under its exact name,
with the raw JSON value Go would keep; pydantic then reads it as usual. Only the object's own
members are scanned here, values are copied as raw text, so numbers and strings keep their
spelling. ``-0`` inside ``changes`` becomes ``-0.0``: Go holds it as a float64 negative zero,
while pydantic-core would read the integer 0.
"""

from __future__ import annotations

import json
import re

__all__ = [
    "EVENT_FIELDS",
    "array_elements",
    "field_of",
    "go_fields",
    "may_hold_negative_zero",
    "nesting",
    "object_members",
    "rewrite_negative_zero",
]

EVENT_FIELDS = frozenset(
    {
        "action",
        "entity_type",
        "entity_id",
        "user_id",
        "organization_id",
        "ip_address",
        "user_agent",
        "request_path",
        "status_code",
        "timestamp",
        "changes",
        "action_context",
        "break_glass_id",
        "impersonation_id",
    }
)
# Pointer and interface fields: null sets them to nil. For any other field null is a no-op.
_NULLABLE = frozenset({"changes", "break_glass_id", "impersonation_id"})

_FOLD = {**{c: c + 32 for c in range(ord("A"), ord("Z") + 1)}, 0x212A: ord("k"), 0x17F: ord("s")}

# One JSON token after optional whitespace. Strings are taken whole (escapes included), numbers
# and literals loosely: validity is pydantic's to judge, this only has to find where values end.
_TOKEN = re.compile(
    r'[ \t\n\r]*(?:("(?:[^"\\]|\\.)*")|([{}\[\]:,])|(-?[0-9A-Za-z.+\-]+))', re.DOTALL
)
# A string (kept) or an integer -0 (group 2): a minus, a zero, then neither digits, a
# fraction nor an exponent.
_NEGATIVE_ZERO = re.compile(r'("(?:[^"\\]|\\.)*")|(-0)(?![0-9.eE])', re.DOTALL)


_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|([\[\]{}])', re.DOTALL)


_MINUS_ZERO = re.compile(r"-0(?![0-9.eE])")
_MINUS_ZERO_BYTES = re.compile(rb"-0(?![0-9.eE])")


def may_hold_negative_zero(data: str | bytes | bytearray) -> bool:
    """False when JSON text holds no integer ``-0`` token (True may be a string's ``-0``)."""
    if isinstance(data, str):
        return _MINUS_ZERO.search(data) is not None
    return _MINUS_ZERO_BYTES.search(data) is not None


def rewrite_negative_zero(text: str) -> str:
    """Spell each integer ``-0`` token of JSON text as ``-0.0``, leaving strings alone."""
    return _NEGATIVE_ZERO.sub(lambda m: m.group(1) or "-0.0", text)


_OPEN = re.compile(r"[ \t\n\r]*\{")
_CLOSE = re.compile(r"[ \t\n\r]*\}")
_KEY = re.compile(r'[ \t\n\r]*("(?:[^"\\]|\\.)*")[ \t\n\r]*:', re.DOTALL)
_AFTER = re.compile(r"[ \t\n\r]*([,}])")
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _only_space_after(text: str, pos: int) -> bool:
    """Whether nothing but JSON white space follows ``pos`` (the top-level value ended)."""
    return not text[pos:].strip(" \t\n\r")


def _value_end(text: str, pos: int) -> int | None:
    """The end of the JSON value starting at or after ``pos`` (after whitespace), or None."""
    pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # matches "" at worst
    try:
        # The C decoder finds the end fastest; only nesting deeper than Python's recursion
        # limit (Go reads 10,000 levels) needs the token loop.
        return _DECODER.raw_decode(text, pos)[1]
    except RecursionError:
        return _token_end(text, pos)
    except ValueError:
        return None


def _token_end(text: str, pos: int) -> int | None:
    depth = 0
    while True:
        match = _TOKEN.match(text, pos)
        if match is None:
            return None
        pos = match.end()
        punct = match.group(2)
        if punct is None:
            if depth == 0:
                return pos
            continue
        if punct in "{[":
            depth += 1
        elif punct in "}]":
            depth -= 1
            if depth < 0:
                return None
            if depth == 0:
                return pos
        elif depth == 0:
            return None


def object_members(text: str) -> list[tuple[str, str]] | None:
    """(key, raw value) of each member of the top-level object in order, or None."""
    match = _OPEN.match(text)
    if match is None:
        return None
    pos = match.end()
    members: list[tuple[str, str]] = []
    close = _CLOSE.match(text, pos)
    if close is not None:
        pos = close.end()
    while close is None:
        key_match = _KEY.match(text, pos)
        if key_match is None:
            return None
        start = key_match.end()
        end = _value_end(text, start)
        if end is None:
            return None
        raw_key = key_match.group(1)
        try:
            key = json.loads(raw_key) if "\\" in raw_key else raw_key[1:-1]
        except ValueError:
            return None
        members.append((key, text[start:end].strip(" \t\n\r")))
        after = _AFTER.match(text, end)
        if after is None:
            return None
        pos = after.end()
        if after.group(1) == "}":
            break
    return members if _only_space_after(text, pos) else None


def array_elements(text: str) -> list[str] | None:
    """The raw JSON text of each element of a top-level array in order, or None."""
    match = _TOKEN.match(text, 0)
    if match is None or match.group(2) != "[":
        return None
    pos = match.end()
    elements: list[str] = []
    while True:
        close = _TOKEN.match(text, pos)
        if close is not None and close.group(2) == "]" and not elements:
            pos = close.end()
            break
        end = _value_end(text, pos)
        if end is None:
            return None
        elements.append(text[pos:end].strip(" \t\n\r"))
        after = _TOKEN.match(text, end)
        if after is None or after.group(2) not in (",", "]"):
            return None
        pos = after.end()
        if after.group(2) == "]":
            break
    return elements if _only_space_after(text, pos) else None


def field_of(key: str) -> str | None:
    """The field Go matches ``key`` to: exactly, else folded (``strings.EqualFold``)."""
    if key in EVENT_FIELDS:
        return key
    folded = key.translate(_FOLD)
    return folded if folded in EVENT_FIELDS else None


def nesting(text: str) -> int:
    """How deep arrays and objects nest in JSON text (strings skipped)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(text):
        bracket = match.group(1)
        if bracket is None:
            continue
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def go_fields(text: str) -> dict[str, str] | None:
    """Go's reading of an object's members: field name to the raw JSON value Go keeps.

    None when ``text`` is not one JSON object. ``-0`` inside ``changes`` is spelled ``-0.0``.
    """
    members = object_members(text)
    if members is None:
        return None
    kept: dict[str, str] = {}
    for key, raw in members:
        name = field_of(key)
        if name is None:
            continue  # Go ignores unknown fields
        if raw == "null" and name not in _NULLABLE and name in kept:
            continue  # null leaves a string, a number or a time as it was
        kept[name] = raw
    if kept.get("action_context") == "null":
        kept["action_context"] = '""'  # Go's zero value, as a lone null leaves it
    changes = kept.get("changes")
    if changes is not None and may_hold_negative_zero(changes):
        kept["changes"] = rewrite_negative_zero(changes)
    return kept
