"""The pieces without a database: filter parsing, CSRF tokens and origin checks, CSV cells."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest
from starlette.requests import Request

from audit_middleware.review import CSRF_TOKEN_TTL, EventFilter, ReviewApp
from audit_middleware.review._csrf import CsrfTokens, cross_origin_reason
from audit_middleware.review._export import csv_row
from audit_middleware.storage._reader import AuditRecord
from auditevt import Action, ActionContext, Event, Timestamp


def test_filter_parses_every_field() -> None:
    parsed = EventFilter.from_query(
        {
            "since": "2024-05-01T09:00:00Z",
            "until": "2024-05-01 12:00:00 02:00",  # "+" lost to query-string decoding
            "user_id": " 3 ",
            "entity_type": "patient",
            "entity_id": "12",
            "action": "delete",
            "action_context": "BREAK_GLASS",
            "status_class": "4XX",
            "path_prefix": "/patients/",
            "limit": "5",
        },
        ignore=frozenset({"limit"}),
    )
    assert parsed == EventFilter(
        since=datetime(2024, 5, 1, 9, tzinfo=UTC),
        until=datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2))),
        user_id=3,
        entity_type="patient",
        entity_id=12,
        action=Action.DELETE,
        action_context=ActionContext.BREAK_GLASS,
        status_class="4xx",
        path_prefix="/patients/",
    )
    assert EventFilter.from_query(parsed.as_query()) == parsed


def test_filter_empty_values_are_absent_and_naive_times_are_utc() -> None:
    assert EventFilter.from_query({"user_id": "", "action": "  "}) == EventFilter()
    naive = EventFilter.from_query({"since": "2024-05-01T09:00"})  # a datetime-local field
    assert naive.since == datetime(2024, 5, 1, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": datetime(2024, 5, 1)}, "must be a timezone-aware datetime"),
        ({"user_id": True}, "user_id=True must be an int64"),
        ({"entity_id": 2**63}, "entity_id=9223372036854775808 must be an int64"),
        ({"status_class": "2XX"}, "status_class='2XX' must be one of"),
        ({"entity_type": ""}, "entity_type='' must be 1 to 2048 characters"),
        ({"path_prefix": "x" * 2049}, "must be 1 to 2048 characters"),
    ],
)
def test_filter_built_in_code_checks_its_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventFilter(**kwargs)  # type: ignore[arg-type]


def test_filter_type_errors_name_the_value() -> None:
    with pytest.raises(TypeError, match="action='DELETE' must be an Action"):
        EventFilter(action="DELETE")  # type: ignore[arg-type]


def test_csrf_token_is_bound_to_the_admin_and_expires() -> None:
    tokens = CsrfTokens(b"0123456789abcdef")
    token = tokens.issue(7, 41, now=1_000_000)
    assert tokens.valid(token, 7, 41, now=1_000_000 + CSRF_TOKEN_TTL)
    assert not tokens.valid(token, 7, 41, now=1_000_001 + CSRF_TOKEN_TTL)
    assert not tokens.valid(token, 7, 41, now=999_999)  # issued in the future
    assert not tokens.valid(token, 8, 41, now=1_000_000)
    assert not tokens.valid(token, 7, 42, now=1_000_000)
    assert not CsrfTokens(b"another secret!!").valid(token, 7, 41, now=1_000_000)
    for garbage in ("", ".", "abc.def", "1" * 40 + ".x", token + "0"):
        assert not tokens.valid(garbage, 7, 41, now=1_000_000)


def test_csrf_secret_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        CsrfTokens(b"short")


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": raw,
            "query_string": b"",
            "scheme": "http",
            "server": ("core-api", 80),
        }
    )


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"host": "core-api"}, None),
        ({"host": "core-api", "origin": "http://core-api"}, None),
        ({"host": "core-api", "origin": "https://core-api"}, None),  # TLS ends at the proxy
        ({"host": "core-api", "sec-fetch-site": "same-origin"}, None),
        ({"host": "core-api", "origin": "http://core-api:8080"}, "is not this host"),
        ({"host": "core-api", "origin": "null"}, "is not this host"),
        ({"host": "core-api", "sec-fetch-site": "same-site"}, "Sec-Fetch-Site is 'same-site'"),
    ],
)
def test_cross_origin_reason(headers: dict[str, str], reason: str | None) -> None:
    found = cross_origin_reason(_request(headers))
    assert (found is None) if reason is None else (found is not None and reason in found)


def test_csv_row_defuses_formulas_and_keeps_exact_values() -> None:
    event = Event(
        action=Action.UPDATE,
        entity_type="patient",
        entity_id=5,
        user_id=9,
        organization_id=7,
        ip_address="203.0.113.5",
        user_agent="+SUM(A1)",
        request_path="@evil",
        status_code=200,
        timestamp=Timestamp.parse("2024-05-01T09:00:00.000000001+02:00"),
        changes={"a": [1, "=x"]},
        action_context=ActionContext.BREAK_GLASS,
        break_glass_id=0,
    )
    record = AuditRecord(
        id=1, event_id=UUID(int=1), event=event, inserted_at=datetime(2024, 5, 1, tzinfo=UTC)
    )
    row = csv_row(record)
    assert row[1] == "2024-05-01T09:00:00.000000001+02:00"
    assert row[9:11] == ["'+SUM(A1)", "'@evil"]
    assert row[12:] == ["0", "", '{"a":[1,"=x"]}']


def test_review_app_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="store must be an AuditStore"):
        ReviewApp(
            store=object(),
            reader=object(),
            organization_resolver=len,  # type: ignore[arg-type]
            user_resolver=len,
        )
