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

from auditevt import MAX_CHANGES_DEPTH, Action, ActionContext, Event, Timestamp
from conftest import make_event

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
    ("action", {"action": 1}),
    ("action", {"action": None}),
    ("action_context", {"action_context": 7}),
    ("timestamp", {"timestamp": "\u0662\u0660\u0662\u0666-11-27T10:11:12Z"}),  # Arabic-Indic
    ("timestamp", {"timestamp": "2026-11-27T10:11:\uff11\uff12Z"}),  # fullwidth 12
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
        ("[1, 2, " + "9" * 400 + "]", "changes[2]"),
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


def test_event_built_in_python_matches_go_bytes() -> None:
    # make_event() is that vector; built here from a datetime, as a Python caller would.
    event = make_event(timestamp=datetime(2026, 11, 27, 10, 11, 12, tzinfo=UTC))
    assert event.to_json() == GOLDEN[0]["json"]


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


_PYTHON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**1030), max_value=2**1030)
    | st.floats()
    | st.text()
    | st.sampled_from(["\ud800", "a\udfffb", "é"]),
    lambda children: st.lists(children, max_size=4)
    | st.tuples(children)
    | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=600, deadline=None)
@given(_PYTHON_VALUES)
def test_the_plain_python_check_agrees_with_the_full_check(value: Any) -> None:
    # _plain_python spares the paths of the usual changes; it must say "plain" exactly when
    # check_json_value would take the value as it is.
    from auditevt._jsonvalue import _plain_python, check_json_value

    try:
        unchanged = check_json_value(value, "changes") is value
    except ValueError:
        unchanged = False
    assert _plain_python(value, 0) is unchanged


def test_the_plain_python_check_keeps_the_depth_limit() -> None:
    from auditevt._jsonvalue import _plain_python

    assert _plain_python(nested(MAX_CHANGES_DEPTH), 0)
    assert not _plain_python(nested(MAX_CHANGES_DEPTH + 1), 0)


def test_event_python_changes_are_checked_with_path() -> None:
    with pytest.raises(ValidationError, match=r"changes\.after\.score: nan"):
        make_event(changes={"after": {"score": float("nan")}})
    with pytest.raises(ValidationError, match="object key 1 is not a string"):
        make_event(changes={1: "a"})
    with pytest.raises(ValidationError, match="type set is not JSON"):
        make_event(changes={"a": {1, 2}})
    with pytest.raises(ValidationError, match="lone surrogate") as refused:
        make_event(user_agent="bad \ud800")
    [error] = refused.value.errors()
    assert (error["loc"], error["input"]) == (("user_agent",), "bad \ud800")


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
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
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
    break_glass_id = draw(st.none() | int64s) if context is ActionContext.BREAK_GLASS else None
    impersonation_id = draw(st.none() | int64s) if context is ActionContext.IMPERSONATION else None
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


# Reading as Go reads: key matching, duplicates, null, -0 (the Go-driven proof is in
# test_go_differential.py; these name each rule).

BASE_TEXT = GOLDEN[0]["json"]


def read_with(*members: str, text: str = BASE_TEXT) -> Event:
    return Event.model_validate_json(text[:-1] + "," + ",".join(members) + "}")


@pytest.mark.parametrize(
    ("members", "field", "value"),
    [
        (['"ORGANIZATION_ID":8'], "organization_id", 8),  # after the exact key: last wins
        (['"ORGANIZATION_ID":8', '"organization_id":9'], "organization_id", 9),
        (
            ['"organization_id":8', '"Organization_Id":10', '"organization_id":9'],
            "organization_id",
            9,
        ),
        (['"\u017ftatus_code":500'], "status_code", 500),  # long s folds to s
        (['"action_context":"break_glass"', '"brea\u212a_glass_id":9'], "break_glass_id", 9),
        (['"ENTITY_ID":0'], "entity_id", 0),
        (['"entity-id":5'], "entity_id", 4711),  # a dash is not an underscore
        (['"entity_\u0130d":5'], "entity_id", 4711),  # dotted capital I does not fold to i
        (['"user_id":null'], "user_id", 42),  # null leaves a number as it was
        (['"action_context":"normal"', '"ACTION_CONTEXT":null'], "action_context", "normal"),
        (['"action_context":null'], "action_context", None),  # a lone null: Go's ""
        (['"changes":{"a":1}', '"CHANGES":null'], "changes", None),  # null clears an any
        (['"changes":{"a":1}', '"changes":{"b":2}'], "changes", {"b": 2}),  # replaced, not merged
    ],
)
def test_event_matches_keys_as_go_does(members: list[str], field: str, value: Any) -> None:
    event = read_with(*members)
    assert getattr(event, field) == value
    # Written back with exact keys, once each.
    assert event.to_json().count(f'"{field}":') == (0 if value in (None, 0) else 1)


def test_event_reads_a_lone_case_variant_of_a_required_key() -> None:
    event = Event.model_validate_json(BASE_TEXT.replace('"action"', '"Action"'))
    assert event.action is Action.UPDATE
    assert event.to_json() == BASE_TEXT


def test_event_changes_keep_negative_zero_as_go_does() -> None:
    event = read_with('"changes":[-0,{"a":-0, "b": [ -0 ]},"-0",0,-0.0,-0e3]')
    assert event.to_json().endswith('"changes":[-0,{"a":-0,"b":[-0]},"-0",0,-0,-0]}')
    assert read_with('"entity_id":-0').entity_id == 0  # an int64 has no negative zero


def test_event_reads_any_action_string_and_writes_it_back() -> None:
    text = BASE_TEXT.replace('"UPDATE"', '"ARCHIVE"')[:-1] + ',"action_context":"sudo\\u003c"}'
    event = Event.model_validate_json(text)
    assert event.action == "ARCHIVE" and not isinstance(event.action, Action)
    assert event.action_context == "sudo<" and not isinstance(event.action_context, ActionContext)
    assert event.to_json() == text
    known = Event.model_validate_json(BASE_TEXT)
    assert isinstance(known.action, Action)


def test_event_is_built_from_the_enums_only() -> None:
    with pytest.raises(ValidationError, match="'ARCHIVE' is not one of 'CREATE'") as info:
        make_event(action="ARCHIVE")
    assert info.value.errors()[0]["loc"] == ("action",)
    with pytest.raises(ValidationError, match="Python builds events with ActionContext"):
        make_event(action_context="sudo")
    assert make_event(action="DELETE").action is Action.DELETE  # a member's value is fine


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_event_changes_nest_up_to_the_limit_and_round_trip() -> None:
    event = make_event(changes={"a": nested(MAX_CHANGES_DEPTH - 1)})
    assert Event.model_validate_json(event.to_json()) == event


@pytest.mark.parametrize("depth", [MAX_CHANGES_DEPTH + 1, 200, 500, 5000])
def test_event_refuses_deeper_changes_naming_the_path(depth: int) -> None:
    with pytest.raises(ValidationError) as built:
        make_event(changes={"a": nested(depth - 1)})
    assert built.value.errors()[0]["loc"] == ("changes",)
    assert "changes.a" + "[0]" * (
        MAX_CHANGES_DEPTH - 1
    ) + ": arrays and objects nest deeper" in str(built.value)
    text = BASE_TEXT[:-1] + ',"changes":' + "[" * depth + "]" * depth + "}"
    with pytest.raises(ValidationError, match="nest deeper than 64 levels") as read:
        Event.model_validate_json(text)
    assert read.value.errors()[0]["loc"] == ("changes",)


def test_event_ignores_a_deep_unknown_field_as_go_does() -> None:
    text = BASE_TEXT[:-1] + ',"extra":' + "[" * 5000 + "]" * 5000 + "}"
    assert Event.model_validate_json(text).to_json() == BASE_TEXT
