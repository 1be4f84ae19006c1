"""The entity a request acted on, derived from its matched route.

The rule (:func:`route_entity`): take the route's path template (``scope["route"].path``, set by
Starlette and FastAPI routing: ``/patients/{patient_id}/appointments/{id}``), drop ``api`` and
version segments (``v1``, ``v2.1``), and take the **last static segment** as the entity type
(``appointments``, singularised to ``appointment``). If the segment right after it is a path
parameter holding an integer, that is the entity id; otherwise the id is 0 (``POST /patients``
creates one whose id the route cannot know: report it with ``record(entity_id=...)``).

Without a matched route (a 404, or an app without Starlette routing) the same rule runs on the
request path itself, with all-digit and UUID-like segments taken as parameters.

A verb-like last segment (``POST /patients/{id}/archive``) yields ``archive``: override it from
the handler with ``record(entity_type="patient", entity_id=...)`` or pass your own resolver.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, TypeAlias

__all__ = ["EntityResolver", "route_entity", "singular"]

EntityResolver: TypeAlias = Callable[[Any], tuple[str, int]]
"""``(scope) -> (entity_type, entity_id)``, called when the response starts."""

_INT64_MAX = 2**63 - 1
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
_SKIPPED = re.compile(r"api|v\d+(?:\.\d+)*", re.IGNORECASE)
_ID_LIKE = re.compile(
    r"\d+|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


def singular(word: str) -> str:
    """A plural English noun made singular by the common rules; other words unchanged.

    ``patients`` -> ``patient``, ``policies`` -> ``policy``, ``addresses`` -> ``address``,
    ``statuses`` -> ``status``; words ending in ``ss``, ``us`` or ``is`` are kept.
    """
    lower = word.lower()
    if len(word) <= 3 or not lower.endswith("s") or lower.endswith(("ss", "us", "is")):
        return word
    if lower.endswith("ies"):
        return word[:-3] + ("Y" if word[-3].isupper() else "y")
    if lower.endswith(("sses", "xes", "zes", "ches", "shes", "uses")):
        return word[:-2]
    return word[:-1]


def _to_id(value: Any) -> int:
    if type(value) is int:
        return value if 0 <= value <= _INT64_MAX else 0
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
        return number if number <= _INT64_MAX else 0
    return 0


def _locate(segments: Sequence[str], singularize: bool) -> tuple[str, str | None]:
    """``(entity_type, name of the id parameter or None)``; segments are static names, or
    ``"\0name"`` for a parameter called name."""
    for index in range(len(segments) - 1, -1, -1):
        segment = segments[index]
        if segment.startswith("\0") or not segment or _SKIPPED.fullmatch(segment):
            continue
        following = segments[index + 1] if index + 1 < len(segments) else ""
        param = following[1:] if following.startswith("\0") else None
        return (singular(segment) if singularize else segment), param
    return "", None


@lru_cache(maxsize=1024)
def _template_entity(template: str, singularize: bool) -> tuple[str, str | None]:
    # Route templates are few and fixed: parse each once.
    segments = []
    for part in template.split("/"):
        match = _PARAM.search(part)
        segments.append("\0" + match.group(1) if match else part)
    return _locate(segments, singularize)


def route_entity(scope: Any, *, singularize: bool = True) -> tuple[str, int]:
    """``(entity_type, entity_id)`` of a request from its matched route (see the module doc)."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    # A Mount around a plain ASGI app matches only its prefix: the raw path says more.
    if isinstance(template, str) and not hasattr(route, "routes"):
        entity_type, param = _template_entity(template, singularize)
        if param is None:
            return entity_type, 0
        params: Mapping[str, Any] = scope.get("path_params") or {}
        return entity_type, _to_id(params.get(param))
    raw = [part for part in str(scope.get("path", "")).split("/") if part]
    segments = ["\0" + str(i) if _ID_LIKE.fullmatch(part) else part for i, part in enumerate(raw)]
    entity_type, param = _locate(segments, singularize)
    return entity_type, (0 if param is None else _to_id(raw[int(param)]))
