from __future__ import annotations

import json
import uuid
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

import auditevt
from auditevt import (
    JSON_SCHEMA_DIALECT,
    MODELS,
    AnalyticsTrackRequest,
    BandwidthStatsQuery,
    DeviceContext,
    ErrorReportRequest,
    Event,
    HealthResponse,
    IngestItem,
    IngestRequest,
    IngestResponse,
    IngestResult,
    MediaEventRequest,
    PageViewEvent,
    PoseFramesRequest,
    PoseLandmark,
    Pseudonymizer,
    SessionStartEvent,
    Timestamp,
    json_schema,
)
from auditevt._schema import SCHEMA_DIR, stale_schema_files, write_schema_files

GOLDEN = Path(__file__).parent / "data" / "go-golden.jsonl"
REGENERATE = "auditevt schema --write src/auditevt/schemas"


def packaged_schema(name: str) -> dict[str, Any]:
    # Read through importlib.resources: the file a user of the installed package gets.
    text = files("auditevt").joinpath("schemas", f"{name}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validator(name: str) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(packaged_schema(name))


def golden_texts() -> list[str]:
    with GOLDEN.open(encoding="utf-8") as stream:
        return [json.loads(line)["json"] for line in stream if line.strip()]


def test_models_lists_event_and_every_endpoint_model() -> None:
    assert set(MODELS) == {
        "Event",
        "IngestItem",
        "IngestRequest",
        "IngestResult",
        "IngestResponse",
        "AnalyticsTrackRequest",
        "AnalyticsTrackResponse",
        "MediaEventRequest",
        "MediaEventResponse",
        "PoseFramesRequest",
        "PoseFramesResponse",
        "ErrorReportRequest",
        "ErrorReportResponse",
        "BandwidthStatsQuery",
        "BandwidthStatsResponse",
        "HealthResponse",
    }
    assert all(model.__name__ == name for name, model in MODELS.items())


def test_schema_files_are_up_to_date() -> None:
    stale = stale_schema_files()
    assert not stale, (
        f"schema files out of date with the models: {', '.join(stale)}; "
        f"regenerate them with `{REGENERATE}` and commit the result "
        "(a change an older reader cannot read needs a new major CONTRACT_VERSION)"
    )


def test_schema_files_live_inside_the_package() -> None:
    assert auditevt.__file__ is not None
    assert SCHEMA_DIR.parent == Path(auditevt.__file__).parent
    for name in MODELS:
        assert packaged_schema(name)["$schema"] == JSON_SCHEMA_DIALECT


def test_stale_schema_files_notices_every_kind_of_drift(tmp_path: Path) -> None:
    assert [path.name for path in write_schema_files(tmp_path)] == [f"{n}.json" for n in MODELS]
    assert stale_schema_files(tmp_path) == []
    edited = tmp_path / "Event.json"
    edited.write_text(edited.read_text().replace('"user_id"', '"actor_id"'))
    (tmp_path / "HealthResponse.json").unlink()
    (tmp_path / "OldModel.json").write_text("{}")
    assert stale_schema_files(tmp_path) == ["Event.json", "HealthResponse.json", "OldModel.json"]
    write_schema_files(tmp_path)
    assert stale_schema_files(tmp_path) == []
    assert not (tmp_path / "OldModel.json").exists()


def test_stale_schema_files_notices_a_changed_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_schema_files(tmp_path)

    class HealthResponse(BaseModel):  # the same name, one field more
        status: str
        region: str

    monkeypatch.setitem(MODELS, "HealthResponse", HealthResponse)
    assert stale_schema_files(tmp_path) == ["HealthResponse.json"]


@pytest.mark.parametrize("name", list(MODELS))
def test_json_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = json_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_json_schema_names_the_known_models_for_an_unknown_one() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'Evnt'; known models: .*Event"):
        json_schema("Evnt")


def test_event_schema_accepts_every_golden_vector() -> None:
    check = validator("Event")
    texts = golden_texts()
    assert len(texts) == 24
    for text in texts:
        errors = list(check.iter_errors(json.loads(text)))
        assert errors == [], (text, [error.message for error in errors])


BASE_EVENT: dict[str, Any] = json.loads(golden_texts()[0])


def _without(field: str) -> dict[str, Any]:
    return {key: value for key, value in BASE_EVENT.items() if key != field}


FULLWIDTH_2026 = "\uff12\uff10\uff12\uff16"
INVALID_EVENTS: dict[str, dict[str, Any]] = {
    "missing user_id": _without("user_id"),
    "missing timestamp": _without("timestamp"),
    "missing organization_id": _without("organization_id"),
    "user_id as string": {**BASE_EVENT, "user_id": "42"},
    "user_id as bool": {**BASE_EVENT, "user_id": True},
    "user_id as fraction": {**BASE_EVENT, "user_id": 4.5},
    "user_id above int64": {**BASE_EVENT, "user_id": 2**63},
    "entity_id below int64": {**BASE_EVENT, "entity_id": -(2**63) - 1},
    "action as number": {**BASE_EVENT, "action": 5},
    "context as number": {**BASE_EVENT, "action_context": 5},
    "fullwidth year": {**BASE_EVENT, "timestamp": FULLWIDTH_2026 + "-11-27T10:11:12Z"},
    "timestamp without offset": {**BASE_EVENT, "timestamp": "2026-11-27T10:11:12"},
    "timestamp as date": {**BASE_EVENT, "timestamp": "2026-11-27"},
    "timestamp as number": {**BASE_EVENT, "timestamp": 1764238272},
    "entity_type as number": {**BASE_EVENT, "entity_type": 5},
    "break_glass_id as string": {**BASE_EVENT, "break_glass_id": "5"},
    "not an object": [BASE_EVENT],  # type: ignore[dict-item]
}


# Go's struct holds any string there, so a newer writer's value must stay readable.
OPEN_VALUES: dict[str, dict[str, Any]] = {
    "unknown action": {**BASE_EVENT, "action": "PATCH"},
    "lowercase action": {**BASE_EVENT, "action": "update"},
    "unknown context": {**BASE_EVENT, "action_context": "sudo"},
}


@pytest.mark.parametrize("case", list(OPEN_VALUES))
def test_event_schema_and_model_accept_any_action_string(case: str) -> None:
    instance = OPEN_VALUES[case]
    assert list(validator("Event").iter_errors(instance)) == []
    text = json.dumps(instance, separators=(",", ":"))
    assert Event.model_validate_json(text).to_json() == text


@pytest.mark.parametrize("case", list(INVALID_EVENTS))
def test_event_schema_rejects_invalid_events(case: str) -> None:
    instance = INVALID_EVENTS[case]
    assert list(validator("Event").iter_errors(instance)), f"schema accepted {case}"


@pytest.mark.parametrize("case", list(INVALID_EVENTS))
def test_event_model_rejects_what_the_schema_rejects(case: str) -> None:
    # The schema and the model agree on each case.
    with pytest.raises(ValueError):
        Event.model_validate_json(json.dumps(INVALID_EVENTS[case]))


def _example_payloads() -> list[tuple[str, BaseModel]]:
    actor = Pseudonymizer(bytes(32), key_id="k1").pseudonymize(1)
    now = Timestamp.parse("2026-11-27T10:11:12.5+02:00")
    event = Event.model_validate_json(golden_texts()[5])
    device = DeviceContext(platform="web", app_version="1.0", downlink_mbps=2.5)
    mark = PoseLandmark(x=0.5, y=0.5, z=-0.25, visibility=0.9)
    return [
        ("IngestRequest", IngestRequest(events=[IngestItem(event_id=uuid.uuid4(), event=event)])),
        (
            "IngestResponse",
            IngestResponse(
                results=[IngestResult(event_id=uuid.uuid4(), status="rejected", error="x")]
            ),
        ),
        (
            "AnalyticsTrackRequest",
            AnalyticsTrackRequest(
                organization_id=1,
                actor=actor,
                session_id=uuid.uuid4(),
                sent_at=now,
                events=[
                    PageViewEvent(
                        event_id=uuid.uuid4(), occurred_at=now, path="/", properties={"a": 1.5}
                    )
                ],
            ),
        ),
        (
            "MediaEventRequest",
            MediaEventRequest(
                organization_id=1,
                actor=actor,
                session_id=uuid.uuid4(),
                events=[
                    SessionStartEvent(
                        event_id=uuid.uuid4(),
                        occurred_at=now,
                        kind="playback",
                        transport="hls",
                        device=device,
                    )
                ],
            ),
        ),
        (
            "PoseFramesRequest",
            PoseFramesRequest.model_validate(
                {
                    "organization_id": 1,
                    "actor": actor,
                    "session_id": uuid.uuid4(),
                    "frames": [{"frame_index": 0, "captured_at": now, "landmarks": [mark] * 33}],
                }
            ),
        ),
        (
            "ErrorReportRequest",
            ErrorReportRequest(
                organization_id=1,
                report_id=uuid.uuid4(),
                occurred_at=now,
                category="network",
                code="HTTP_502",
                message="bad gateway",
                http_status=502,
                device=device,
            ),
        ),
        ("BandwidthStatsQuery", BandwidthStatsQuery(organization_id=1, since=now)),
        ("HealthResponse", HealthResponse(status="ok", checks={"database": "ok"})),
    ]


@pytest.mark.parametrize(("name", "payload"), _example_payloads())
def test_schemas_accept_what_the_models_write(name: str, payload: BaseModel) -> None:
    check = validator(name)
    for text in (payload.model_dump_json(), payload.model_dump_json(exclude_none=True)):
        errors = [error.message for error in check.iter_errors(json.loads(text))]
        assert errors == []
    if isinstance(payload, IngestRequest):
        assert list(check.iter_errors(json.loads(payload.to_json()))) == []


def test_request_schemas_reject_unknown_fields_and_missing_organization() -> None:
    actor = Pseudonymizer(bytes(32), key_id="k1").pseudonymize(1)
    check = validator("PoseFramesRequest")
    frame: dict[str, Any] = {
        "frame_index": 0,
        "captured_at": "2026-11-27T10:11:12Z",
        "landmarks": [{"x": 0, "y": 0, "z": 0, "visibility": 1}] * 33,
    }
    good = {
        "organization_id": 1,
        "actor": actor,
        "session_id": str(uuid.uuid4()),
        "frames": [frame],
    }
    assert list(check.iter_errors(good)) == []
    assert list(check.iter_errors({**good, "user_id": 5}))
    assert list(check.iter_errors({k: v for k, v in good.items() if k != "organization_id"}))
    short_frame = {**frame, "landmarks": frame["landmarks"][:32]}
    assert list(check.iter_errors({**good, "frames": [short_frame]}))
    assert list(check.iter_errors({**good, "actor": "42"}))


def test_union_member_schemas_require_their_type_tag() -> None:
    # The models refuse a tagged event without "type"; the schemas must refuse it too.
    check = validator("AnalyticsTrackRequest")
    event = {
        "type": "page_view",
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-27T10:11:12Z",
        "path": "/",
    }
    good = {
        "organization_id": 1,
        "session_id": str(uuid.uuid4()),
        "sent_at": "2026-11-27T10:11:12Z",
        "events": [event],
    }
    assert list(check.iter_errors(good)) == []
    untagged = {key: value for key, value in event.items() if key != "type"}
    assert list(check.iter_errors({**good, "events": [untagged]}))
    assert "type" in json_schema("MediaEventRequest")["$defs"]["HeartbeatEvent"]["required"]
