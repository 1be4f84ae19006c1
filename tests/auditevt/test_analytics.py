from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from auditevt import (
    MAX_ANALYTICS_EVENTS,
    MAX_ANALYTICS_PROPERTIES,
    MAX_PATH_LENGTH,
    MAX_PROPERTY_VALUE_LENGTH,
    AnalyticsTrackRequest,
    AnalyticsTrackResponse,
    ClickEvent,
    FeatureUsageEvent,
    PageViewEvent,
    Pseudonymizer,
    Timestamp,
)

ACTOR = Pseudonymizer(bytes(32), key_id="k1").pseudonymize(42)
AT = "2026-11-27T10:11:12.5Z"


def page_view(n: int = 1, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "page_view",
        "event_id": str(uuid.UUID(int=n)),
        "occurred_at": AT,
        "path": "/exercises/knee",
        **overrides,
    }


def body(*events: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "organization_id": 7,
        "actor": ACTOR,
        "session_id": str(uuid.UUID(int=99)),
        "sent_at": AT,
        "events": list(events) or [page_view()],
        **overrides,
    }


def errors_at(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as info:
        AnalyticsTrackRequest.model_validate_json(json.dumps(data))
    return [tuple(error["loc"]) for error in info.value.errors()]


def test_analytics_track_request_reads_all_three_event_types() -> None:
    request = AnalyticsTrackRequest.model_validate_json(
        json.dumps(
            body(
                page_view(1, referrer_path="/home", title="Knee exercises"),
                {
                    "type": "click",
                    "event_id": str(uuid.UUID(int=2)),
                    "occurred_at": AT,
                    "path": "/exercises/knee",
                    "target": "start-exercise",
                    "properties": {"variant": "b", "position": 3, "ratio": 0.5, "new": True},
                },
                {
                    "type": "feature_usage",
                    "event_id": str(uuid.UUID(int=3)),
                    "occurred_at": AT,
                    "path": "/exercises/knee",
                    "feature": "pose-feedback",
                    "action": "completed",
                    "duration_ms": 93_000,
                },
            )
        )
    )
    page, click, feature = request.events
    assert isinstance(page, PageViewEvent) and page.referrer_path == "/home"
    assert isinstance(click, ClickEvent) and click.properties["position"] == 3
    assert isinstance(click.properties["new"], bool)
    assert isinstance(feature, FeatureUsageEvent) and feature.duration_ms == 93_000
    assert request.sent_at == Timestamp.parse(AT)
    assert request.actor == ACTOR


def test_analytics_track_request_round_trips_through_json() -> None:
    request = AnalyticsTrackRequest.model_validate(body(page_view(1), page_view(2)))
    assert AnalyticsTrackRequest.model_validate_json(request.model_dump_json()) == request
    text = request.model_dump_json(exclude_none=True)
    assert AnalyticsTrackRequest.model_validate_json(text) == request


def test_analytics_track_request_builds_from_python_objects() -> None:
    request = AnalyticsTrackRequest(
        organization_id=7,
        session_id=uuid.uuid4(),
        sent_at=Timestamp.now(),
        events=[
            ClickEvent(
                event_id=uuid.uuid4(),
                occurred_at=Timestamp.now(),
                path="/",
                target="sign-in",
            )
        ],
    )
    assert request.actor is None
    assert request.events[0].type == "click"


def test_analytics_track_request_has_no_raw_user_id_field() -> None:
    assert errors_at(body(user_id=42)) == [("user_id",)]
    assert errors_at(body(page_view(user_id=42))) == [("events", 0, "page_view", "user_id")]


def test_analytics_track_request_refuses_a_raw_id_as_actor() -> None:
    assert errors_at(body(actor="42")) == [("actor",)]
    assert errors_at(body(actor=42)) == [("actor",)]


@pytest.mark.parametrize("value", [0, -1, "7", 7.0, True, 2**63])
def test_analytics_track_request_refuses_a_bad_organization_id(value: Any) -> None:
    assert errors_at(body(organization_id=value)) == [("organization_id",)]


def test_analytics_track_request_requires_the_organization_id() -> None:
    data = body()
    del data["organization_id"]
    assert errors_at(data) == [("organization_id",)]


def test_analytics_track_request_bounds_the_batch() -> None:
    assert errors_at(body(events=[])) == [("events",)]
    events = [page_view(n) for n in range(MAX_ANALYTICS_EVENTS + 1)]
    assert errors_at(body(*events)) == [("events",)]
    assert len(AnalyticsTrackRequest.model_validate(body(*events[:-1])).events) == 100


def test_analytics_track_request_names_a_duplicate_event_id() -> None:
    with pytest.raises(ValidationError, match=str(uuid.UUID(int=5))):
        AnalyticsTrackRequest.model_validate(body(page_view(5), page_view(6), page_view(5)))


def test_analytics_track_request_refuses_an_unknown_type() -> None:
    assert errors_at(body(page_view(type="scroll"))) == [("events", 0)]


def test_analytics_event_refuses_nan_and_infinity_in_properties() -> None:
    for text in ("NaN", "Infinity", "-Infinity"):
        data = json.dumps(body(page_view())).replace(
            '"path": "/exercises/knee"', f'"path": "/x", "properties": {{"v": {text}}}'
        )
        with pytest.raises(ValidationError):
            AnalyticsTrackRequest.model_validate_json(data)
    with pytest.raises(ValidationError):
        AnalyticsTrackRequest.model_validate(body(page_view(properties={"v": float("nan")})))


def test_analytics_event_bounds_properties() -> None:
    many = {f"k{i}": i for i in range(MAX_ANALYTICS_PROPERTIES + 1)}
    assert errors_at(body(page_view(properties=many))) == [("events", 0, "page_view", "properties")]
    long_value = {"k": "v" * (MAX_PROPERTY_VALUE_LENGTH + 1)}
    assert errors_at(body(page_view(properties=long_value)))
    assert errors_at(body(page_view(properties={"bad key": 1})))
    assert errors_at(body(page_view(properties={"nested": {"a": 1}})))
    assert errors_at(body(page_view(properties={"list": [1]})))


def test_analytics_event_bounds_the_path() -> None:
    assert AnalyticsTrackRequest.model_validate(body(page_view(path="/" + "a" * 2047)))
    assert errors_at(body(page_view(path="/" + "a" * MAX_PATH_LENGTH))) == [
        ("events", 0, "page_view", "path")
    ]
    assert errors_at(body(page_view(path="exercises"))) == [("events", 0, "page_view", "path")]
    assert errors_at(body(page_view(path="/a b"))) == [("events", 0, "page_view", "path")]


def test_analytics_event_refuses_a_timestamp_without_offset() -> None:
    assert errors_at(body(page_view(occurred_at="2026-11-27T10:11:12"))) == [
        ("events", 0, "page_view", "occurred_at")
    ]


def test_analytics_event_refuses_control_characters_in_labels() -> None:
    assert errors_at(body(page_view(title="a\x00b"))) == [("events", 0, "page_view", "title")]


def test_analytics_models_are_immutable() -> None:
    request = AnalyticsTrackRequest.model_validate(body())
    with pytest.raises(ValidationError):
        request.organization_id = 8  # type: ignore[misc]


def test_analytics_track_response_reads_counts_and_ignores_new_fields() -> None:
    response = AnalyticsTrackResponse.model_validate_json(
        '{"accepted": 3, "duplicates": 1, "server_time": "later"}'
    )
    assert (response.accepted, response.duplicates) == (3, 1)
    with pytest.raises(ValidationError):
        AnalyticsTrackResponse.model_validate_json('{"accepted": -1, "duplicates": 0}')
