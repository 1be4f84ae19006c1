"""The entity of a request, derived from its matched route (or its path when none matched)."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from audit_middleware import route_entity
from audit_middleware.request._entity import singular


class FakeRoute:
    def __init__(self, path: str) -> None:
        self.path = path


@pytest.mark.parametrize(
    ("template", "params", "expected"),
    [
        ("/patients", {}, ("patient", 0)),
        ("/patients/{patient_id:int}", {"patient_id": 12}, ("patient", 12)),
        ("/patients/{patient_id}", {"patient_id": "12"}, ("patient", 12)),
        ("/patients/{patient_id}", {"patient_id": "abc"}, ("patient", 0)),
        ("/patients/{patient_id}", {"patient_id": str(2**63)}, ("patient", 0)),
        ("/patients/{pid}/appointments", {"pid": 3}, ("appointment", 0)),
        ("/api/v1/patients/{pid}/appointments/{id}", {"pid": "3", "id": "44"}, ("appointment", 44)),
        ("/api/v2.1/policies/{id}", {"id": "9"}, ("policy", 9)),
        ("/patients/{id}/archive", {"id": 5}, ("archive", 0)),
        ("/care-plans/{id}.json", {"id": "7"}, ("care-plan", 7)),
        ("/", {}, ("", 0)),
    ],
)
def test_route_entity_from_template(
    template: str, params: dict[str, Any], expected: tuple[str, int]
) -> None:
    scope = {"route": FakeRoute(template), "path_params": params, "path": "/ignored/99"}
    assert route_entity(scope) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/nowhere/12", ("nowhere", 12)),
        ("/api/v1/forms/7/", ("form", 7)),
        ("/x/3fa85f64-5717-4562-b3fc-2c963f66afa6", ("x", 0)),
        ("/a/b", ("b", 0)),
        ("/", ("", 0)),
        ("", ("", 0)),
    ],
)
def test_route_entity_without_a_route_uses_the_path(path: str, expected: tuple[str, int]) -> None:
    assert route_entity({"path": path}) == expected


def test_route_entity_mount_uses_the_path() -> None:
    class Mount(FakeRoute):
        routes: tuple[Any, ...] = ()

    scope = {"route": Mount("/legacy"), "path": "/legacy/forms/5", "path_params": {}}
    assert route_entity(scope) == ("form", 5)


def test_route_entity_can_keep_plurals() -> None:
    keep = partial(route_entity, singularize=False)
    assert keep({"route": FakeRoute("/patients/{id}"), "path_params": {"id": 1}}) == ("patients", 1)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("patients", "patient"),
        ("policies", "policy"),
        ("Categories", "Category"),
        ("addresses", "address"),
        ("boxes", "box"),
        ("batches", "batch"),
        ("statuses", "status"),
        ("status", "status"),
        ("analysis", "analysis"),
        ("access", "access"),
        ("bus", "bus"),
        ("form", "form"),
        ("ids", "ids"),  # too short to guess
    ],
)
def test_singular(word: str, expected: str) -> None:
    assert singular(word) == expected
