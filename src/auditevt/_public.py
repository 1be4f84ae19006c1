"""``report_public_module()``: what each package's ``__init__`` does last."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["report_public_module"]


def report_public_module(
    module: str, namespace: Mapping[str, object], names: Iterable[str]
) -> None:
    """Make the classes among ``names`` report ``module``, the public one, as httpx does.

    Tracebacks, reprs and docs then point at ``telemetry_client.X``, not at a private module.
    """
    for name in names:
        value = namespace[name]
        if isinstance(value, type):
            value.__module__ = module
