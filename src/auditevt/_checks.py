"""Argument checks shared by the packages above ``auditevt``; each raises its own error type."""

from __future__ import annotations

import math

__all__ = ["check_seconds"]


def check_seconds(
    name: str, value: object, *, positive: bool = False, error: type[Exception] = ValueError
) -> None:
    """Raise ``error`` unless ``value`` is a finite number of seconds >= 0 (> 0 if ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise error(f"{name} must be a finite number of seconds {bound}, got {value!r}")
