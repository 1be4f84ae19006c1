"""Event: byte-identical to Go's encoding/json both ways, strict where Go cannot read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from auditevt import Action, ActionContext, Event, Timestamp

GOLDEN = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "go-golden.jsonl").read_text().splitlines()
]
BASE: dict[str, Any] = json.loads(GOLDEN[0]["json"])


def with_field(**changes: Any) -> str:
    return json.dumps({**BASE, **changes})


def test_golden_file_has_all_24_vectors() -> None:
    assert len(GOLDEN) == 24
    assert len({vector["name"] for vector in GOLDEN}) == 24


@pytest.mark.parametrize("vector", GOLDEN, ids=[vector["name"] for vector in GOLDEN])
def test_event_round_trips_go_bytes(vector: dict[str, str]) -> None:
    event = Event.model_validate_json(vector["json"])
    assert event.to_json() == vector["json"]
    assert event.to_json_bytes() == vector["json"].encode()


@pytest.mark.parametrize("vector", GOLDEN, ids=[vector["name"] for vector in GOLDEN])
def test_event_golden_bytes_parse_from_bytes_too(vector: dict[str, str]) -> None:
    event = Event.model_validate_json(vector["json"].encode())
    assert Event.model_validate_json(event.to_json()) == event


def test_event_reads_go_values_exactly() -> None:
    by_name = {vector["name"]: Event.model_validate_json(vector["json"]) for vector in GOLDEN}
    assert by_name["ts_nanos_9_digits"].timestamp.nanosecond == 123_456_789
    assert by_name["ts_one_ns_minus_0800"].timestamp.offset_seconds == -8 * 3600
    assert by_name["ts_one_ns_minus_0800"].timestamp.nanosecond == 1
    assert by_name["pointers_to_zero"].break_glass_id == 0
    assert by_name["pointers_to_zero"].impersonation_id == 0
    assert by_name["changes_false"].changes is False
    assert by_name["changes_empty_map"].changes == {}
    assert by_name["max_int64_ids"].user_id == 2**63 - 1
    assert by_name["min_int64_ids"].organization_id == -(2**63)
    assert by_name["zero_entity_id"].entity_id == 0
    assert by_name["basic_update"].action is Action.UPDATE
    assert by_name["break_glass_with_id"].action_context is ActionContext.BREAK_GLASS
    assert by_name["go_zero_value"].action == ""
    assert by_name["changes_numbers"].changes["int_beyond_2_53"] == 9007199254740993


REJECTED = [
    ("timestamp", {"timestamp": "2026-11-27T10:11:12"}),  # no offset: Go cannot read it
    ("timestamp", {"timestamp": "2026-11-27 10:11:12Z"}),
    ("timestamp", {"timestamp": "2026-02-30T10:11:12Z"}),
    ("timestamp", {"timestamp": "2026-11-27T24:00:00Z"}),
    ("timestamp", {"timestamp": "2026-11-27T10:11:12+24:00"}),
    ("timestamp", {"timestamp": "2026-11-27T10:11:12.Z"}),
    ("timestamp", {"timestamp": 1764238272}),
    ("user_id", {"user_id": 2**63}),
    ("organization_id", {"organization_id": -(2**63) - 1}),
    ("user_id", {"user_id": "42"}),
    ("user_id", {"user_id": 42.0}),
    ("status_code", {"status_code": True}),
    ("entity_id", {"entity_id": 1.5}),
    ("break_glass_id", {"break_glass_id": "9001"}),
    ("impersonation_id", {"impersonation_id": 2**64}),
    ("ip_address", {"ip_address": 203}),
    ("user_agent", {"user_agent": None}),
    ("action", {"action": "READ"}),
    ("action", {"action": "update"}),
    ("action_context", {"action_context": "sudo"}),
    ("timestamp", {"timestamp": None}),
    ("organization_id", {"organization_id": None}),
]


@pytest.mark.parametrize(("field", "change"), REJECTED)
def test_event_rejects_what_go_cannot_read(field: str, change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        Event.model_validate_json(with_field(**change))
    locations = [error["loc"][0] for error in info.value.errors()]
    assert field in locations


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ('{"a": NaN}', "changes.a"),
        ('{"a": [1, Infinity]}', "changes.a[1]"),
        ('{"a": {"b": -Infinity}}', "changes.a.b"),
        ('{"big": 1e400}', "changes.big"),
        ('[1, 2, ' + "9" * 400 + "]", "changes[2]"),
    ],
)
def test_event_rejects_non_finite_changes_naming_the_path(raw: str, path: str) -> None:
    text = with_field()[:-1] + ', "changes": ' + raw + "}"
    with pytest.raises(ValidationError) as info:
        Event.model_validate_json(text)
    assert path in str(info.value)
    assert info.value.errors()[0]["loc"] == ("changes",)


def test_event_rejects_missing_required_fields_by_name() -> None:
    data = dict(BASE)
    del data["organization_id"]
    with pytest.raises(ValidationError) as info:
        Event.model_validate_json(json.dumps(data))
    assert info.value.errors()[0]["loc"] == ("organization_id",)
    assert info.value.errors()[0]["type"] == "missing"


def test_event_ignores_unknown_fields_like_go() -> None:
    event = Event.model_validate_json(with_field(severity="high"))
    assert event.to_json() == GOLDEN[0]["json"]


def test_event_empty_action_context_reads_as_absent() -> None:
    event = Event.model_validate_json(with_field(action_context=""))
    assert event.action_context is None
    assert "action_context" not in event.to_json()


def test_event_null_changes_are_omitted() -> None:
    event = Event.model_validate_json(with_field(changes=None))
    assert event.changes is None
    assert event.to_json() == GOLDEN[0]["json"]


def test_event_non_canonical_timestamp_is_written_as_go_would() -> None:
    event = Event.model_validate_json(with_field(timestamp="2026-11-27T10:11:12.120000+00:00"))
    assert event.timestamp.isoformat() == "2026-11-27T10:11:12.12Z"
    assert '"timestamp":"2026-11-27T10:11:12.12Z"' in event.to_json()


def make_event(**overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "action": Action.UPDATE,
        "entity_type": "appointment",
        "entity_id": 4711,
        "user_id": 42,
        "organization_id": 7,
        "ip_address": "203.0.113.9",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "request_path": "/api/v1/appointments/4711",
        "status_code": 200,
        "timestamp": datetime(2026, 11, 27, 10, 11, 12, tzinfo=UTC),
    }
    fields.update(overrides)
    return Event(**fields)


def test_event_built_in_python_matches_go_bytes() -> None:
    assert make_event().to_json() == GOLDEN[0]["json"]


def test_event_accepts_aware_datetime_in_any_offset() -> None:
    tz = timezone(timedelta(hours=5, minutes=30))
    event = make_event(timestamp=datetime(2026, 11, 27, 15, 41, 12, 500000, tzinfo=tz))
    assert event.timestamp.isoformat() == "2026-11-27T15:41:12.5+05:30"


def test_event_rejects_naive_datetime_naming_field() -> None:
    with pytest.raises(ValidationError) as info:
        make_event(timestamp=datetime(2026, 11, 27, 10, 11, 12))
    assert info.value.errors()[0]["loc"] == ("timestamp",)
    assert "no UTC offset" in str(info.value)


def test_event_context_id_needs_its_context_in_python() -> None:
    with pytest.raises(ValidationError, match="break_glass_id=9 needs action_context"):
        make_event(break_glass_id=9)
    with pytest.raises(ValidationError, match="impersonation_id=3 needs"):
        make_event(action_context=ActionContext.BREAK_GLASS, impersonation_id=3)
    event = make_event(action_context=ActionContext.IMPERSONATION, impersonation_id=3)
    assert event.to_json().endswith(',"action_context":"impersonation","impersonation_id":3}')


def test_event_python_changes_are_checked_with_path() -> None:
    with pytest.raises(ValidationError, match=r"changes\.after\.score: nan"):
        make_event(changes={"after": {"score": float("nan")}})
    with pytest.raises(ValidationError, match="object key 1 is not a string"):
        make_event(changes={1: "a"})
    with pytest.raises(ValidationError, match="type set is not JSON"):
        make_event(changes={"a": {1, 2}})
    with pytest.raises(ValidationError, match="lone surrogate"):
        make_event(user_agent="bad \ud800")


def test_event_python_tuples_become_arrays() -> None:
    event = make_event(changes={"tags": ("a", "b")})
    assert event.changes == {"tags": ["a", "b"]}
    assert event.to_json().endswith('"changes":{"tags":["a","b"]}}')


@pytest.mark.parametrize(
    ("value", "spelled"),
    [
        (1.0, "1"),
        (100.0, "100"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (1.5e-5, "0.000015"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.2345e25, "1.2345e+25"),
        (1e16, "10000000000000000"),
        (123456789.0, "123456789"),
        (5e-324, "5e-324"),
        (-0.0, "-0"),
        (0.0, "0"),
    ],
)
def test_event_changes_floats_are_spelled_as_go(value: float, spelled: str) -> None:
    event = make_event(changes={"v": value, "s": "1.0 e+5"})
    assert event.to_json().endswith('"changes":{"v":' + spelled + ',"s":"1.0 e+5"}}')


def test_event_is_frozen() -> None:
    event = make_event()
    with pytest.raises(ValidationError):
        event.user_id = 1  # type: ignore[misc]


# Hypothesis: any valid Event survives to_json then model_validate_json unchanged.

int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(texts, children, max_size=4),
    max_leaves=8,
)
timestamps = st.builds(
    Timestamp.from_unix_ns,
    st.integers(min_value=-62_135_596_800 * 10**9, max_value=253_402_214_400 * 10**9),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: m * 60),
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    context = draw(st.sampled_from([None, *ActionContext]))
    break_glass_id = (
        draw(st.none() | int64s) if context is ActionContext.BREAK_GLASS else None
    )
    impersonation_id = (
        draw(st.none() | int64s) if context is ActionContext.IMPERSONATION else None
    )
    return Event(
        action=draw(st.sampled_from([*Action, ""])),
        entity_type=draw(texts),
        entity_id=draw(int64s),
        user_id=draw(int64s),
        organization_id=draw(int64s),
        ip_address=draw(texts),
        user_agent=draw(texts),
        request_path=draw(texts),
        status_code=draw(int64s),
        timestamp=draw(timestamps),
        changes=draw(json_values),
        action_context=context,
        break_glass_id=break_glass_id,
        impersonation_id=impersonation_id,
    )


def as_go_numbers(value: Any) -> Any:
    """The value as Go holds it after decoding into an ``any``: every number a float64."""
    if isinstance(value, dict):
        return {key: as_go_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_go_numbers(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@settings(max_examples=100, deadline=None)
@given(events())
def test_event_property_round_trip_is_lossless(event: Event) -> None:
    text = event.to_json()
    again = Event.model_validate_json(text)
    # A whole float such as 6.6e16 is written as Go writes it, in integer digits, and so reads
    # back as an int; as float64 (what Go holds) it is the same number.
    assert again.model_copy(update={"changes": None}) == event.model_copy(update={"changes": None})
    assert as_go_numbers(again.changes) == as_go_numbers(event.changes)
    assert again.to_json() == text
    # Python's json module (a third reader) sees the same values.
    decoded = json.loads(text)
    assert decoded["user_id"] == event.user_id
    assert as_go_numbers(decoded.get("changes")) == as_go_numbers(event.changes)
    assert "<" not in text and ">" not in text and "&" not in text
