"""JSON spelled the way Go's ``encoding/json`` spells it.

Python's ``json`` module already escapes ``"``, ``\\`` and control characters exactly as Go
1.22+ does (``\\b \\f \\n \\r \\t``, otherwise ``\\u00XX``) and leaves other non-ASCII raw. Go
additionally escapes ``<``, ``>``, ``&``, U+2028 and U+2029, and spells float64 values its own
way; both are patched in here. Those five characters can only occur inside JSON strings, so
replacing them in finished JSON text is safe.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["encode_string", "encode_value", "format_float", "html_escape"]

_encode_basestring: Any = json.encoder.encode_basestring  # type: ignore[attr-defined]

_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False
).encode

# A float in Python's repr always has a "." or an exponent; ints never do. Only text that has a
# digit followed by one of those needs the (slower) token-by-token float rewrite.
_MAYBE_FLOAT = re.compile(r"\d[.eE]")
_TOKEN = re.compile(r'("(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)')


def html_escape(text: str) -> str:
    """Apply Go's extra escapes to JSON text (``SetEscapeHTML(true)``, the default)."""
    if "<" in text:
        text = text.replace("<", "\\u003c")
    if ">" in text:
        text = text.replace(">", "\\u003e")
    if "&" in text:
        text = text.replace("&", "\\u0026")
    if "\u2028" in text:
        text = text.replace("\u2028", "\\u2028")
    if "\u2029" in text:
        text = text.replace("\u2029", "\\u2029")
    return text


def encode_string(value: str) -> str:
    """One JSON string literal, quotes included, as Go writes it."""
    return html_escape(_encode_basestring(value))


def format_float(value: float) -> str:
    """Spell a float64 as Go's ``encoding/json`` does.

    Go writes the shortest digits that round-trip (as Python's ``repr`` does) in plain decimal
    notation when ``1e-6 <= |value| < 1e21`` and in exponent notation otherwise, with at least
    one exponent digit (``1e-7``, ``1e+21``).
    """
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not representable in JSON")
    if value == 0.0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    text = repr(value)
    magnitude = abs(value)
    if 1e-6 <= magnitude < 1e21:
        if "e" not in text and "E" not in text:
            return text[:-2] if text.endswith(".0") else text
        return _to_plain(text)
    # repr() switches to exponent notation from 1e16 and below 1e-4, so it already has one here.
    mantissa, _, exponent = text.partition("e")
    if mantissa.endswith(".0"):
        mantissa = mantissa[:-2]
    sign = "-" if exponent[0] == "-" else "+"
    return f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"


def _split_digits(text: str) -> tuple[str, str, int]:
    """Return (sign, significant digits, decimal exponent) with value = 0.DIGITS * 10**exp."""
    sign = ""
    if text.startswith("-"):
        sign, text = "-", text[1:]
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    leading_zeros = len(whole + fraction) - len((whole + fraction).lstrip("0"))
    point = len(whole) - leading_zeros + exponent
    return sign, digits.rstrip("0") or "0", point


def _to_plain(text: str) -> str:
    sign, digits, point = _split_digits(text)
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _rewrite_token(match: re.Match[str]) -> str:
    number = match.group(2)
    if number is None or ("." not in number and "e" not in number and "E" not in number):
        return match.group(0)
    return format_float(float(number))


def encode_value(value: Any) -> str:
    """Encode an already validated JSON value (see ``_changes``) as Go writes an ``any``."""
    text: str = _dumps(value)
    if _MAYBE_FLOAT.search(text) is not None:
        text = _TOKEN.sub(_rewrite_token, text)
    return html_escape(text)
