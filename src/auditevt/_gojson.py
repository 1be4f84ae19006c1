"""JSON spelled the way Go's ``encoding/json`` spells it.

pydantic-core already writes strings as Go 1.22+ does (``\\b \\f \\n \\r \\t``, otherwise
``\\u00XX`` for control characters; other non-ASCII raw). Go additionally escapes ``<``, ``>``,
``&``, U+2028 and U+2029, and spells some float64 values differently; both are patched here.
Those five characters can only occur inside JSON strings, so replacing them in finished JSON
text is safe.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic_core import to_json

__all__ = ["encode_value", "format_float", "html_escape"]

# A number token (group 2) that is not inside a string (group 1 eats strings whole).
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
    if 1e-6 <= abs(value) < 1e21:
        if "e" not in text:
            return text[:-2] if text.endswith(".0") else text
        return _to_plain(text)
    # repr() switches to exponent notation from 1e16 and below 1e-4, so it already has one here.
    mantissa, _, exponent = text.partition("e")
    if mantissa.endswith(".0"):
        mantissa = mantissa[:-2]
    sign = "-" if exponent[0] == "-" else "+"
    return f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"


def _to_plain(text: str) -> str:
    """Rewrite ``repr`` exponent notation (``1.5e+20``, ``1e-05``) as plain decimal digits."""
    sign = ""
    if text.startswith("-"):
        sign, text = "-", text[1:]
    mantissa, _, exp_text = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    digits = all_digits.lstrip("0")
    # value = 0.DIGITS * 10**point
    point = len(whole) - (len(all_digits) - len(digits)) + int(exp_text)
    digits = digits.rstrip("0") or "0"
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
    """Encode a validated JSON value (``Event.changes``) as Go writes an ``any``.

    pydantic-core spells a float like Python's ``repr`` except that it writes ``1e-05`` as
    ``0.00001`` and pads no exponent; Go differs from that only for a trailing ``.0`` and for
    exponents from 1e16 up to 1e21. Text with neither needs no token-by-token rewrite.
    """
    text = to_json(value).decode()
    if ".0" in text or "e+" in text or "e-" in text:
        text = _TOKEN.sub(_rewrite_token, text)
    return html_escape(text)
