"""``record()`` and its per-request slot, without the middleware (with it: test_middleware)."""

from __future__ import annotations

import pytest

from audit_middleware import record
from audit_middleware.request._context import STATE_KEY, RequestAudit, reset_current, set_current


def test_record_without_middleware_raises() -> None:
    with pytest.raises(RuntimeError, match="no AuditMiddleware"):
        record(changes={"a": 1})
    with pytest.raises(RuntimeError, match="no AuditMiddleware"):
        record({"type": "http", "state": {}}, changes={"a": 1})
    with pytest.raises(TypeError, match="Request or an ASGI scope"):
        record(42)


def test_record_stores_into_the_scope_slot_and_keeps_earlier_values() -> None:
    audit = RequestAudit(audited=True)
    scope = {"type": "http", "state": {STATE_KEY: audit}}
    assert record(scope, entity_type="patient", changes={"a": 1}) is True
    assert record(scope, entity_id=5) is True
    assert (audit.entity_type, audit.entity_id, audit.changes, audit.skip) == (
        "patient",
        5,
        {"a": 1},
        False,
    )
    assert record(scope, skip=True) is True and audit.skip


def test_record_through_the_context_variable() -> None:
    audit = RequestAudit(audited=True)
    token = set_current(audit)
    try:
        record(entity_id=0, changes=[1, 2])
    finally:
        reset_current(token)
    assert (audit.entity_id, audit.changes) == (0, [1, 2])
    with pytest.raises(RuntimeError):
        record(changes={})


def test_record_on_an_unaudited_request_returns_false() -> None:
    audit = RequestAudit(audited=False)
    assert record({"state": {STATE_KEY: audit}}, changes={"a": 1}) is False
    assert audit.changes is None


def test_record_after_the_event_was_built_raises() -> None:
    audit = RequestAudit(audited=True)
    audit.sealed = True
    with pytest.raises(RuntimeError, match="after the response started"):
        record({"state": {STATE_KEY: audit}}, changes={"late": True})


@pytest.mark.parametrize(
    "kwargs", [{"entity_id": "5"}, {"entity_id": True}, {"entity_id": 1.0}, {"entity_type": 5}]
)
def test_record_rejects_bad_types(kwargs: dict[str, object]) -> None:
    audit = RequestAudit(audited=True)
    with pytest.raises(TypeError, match="entity_"):
        record({"state": {STATE_KEY: audit}}, **kwargs)  # type: ignore[arg-type]
