from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from auditevt import (
    MAX_CHANGES_DEPTH,
    MAX_INGEST_ERROR_LENGTH,
    MAX_INGEST_ITEMS,
    Event,
    IngestItem,
    IngestRequest,
    IngestResponse,
    IngestResult,
    IngestStatus,
    ingest_envelope_json,
    parse_ingest_request,
)
from conftest import make_event

GOLDEN = Path(__file__).parent / "data" / "go-golden.jsonl"


def golden_texts() -> list[str]:
    with GOLDEN.open(encoding="utf-8") as stream:
        return [json.loads(line)["json"] for line in stream if line.strip()]


# Nanoseconds in a non-UTC offset: the text a round trip must keep to the letter.
EXACT_TIME = "2026-11-27T10:11:12.123456789+05:30"


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def test_ingest_request_to_json_embeds_go_exact_event_bytes() -> None:
    texts = golden_texts()
    request = IngestRequest(
        events=[
            IngestItem(event_id=uid(i), event=Event.model_validate_json(text))
            for i, text in enumerate(texts, start=1)
        ]
    )
    body = request.to_json()
    expected = (
        '{"events":['
        + ",".join(
            f'{{"event_id":"{uid(i)}","event":{text}}}' for i, text in enumerate(texts, start=1)
        )
        + "]}"
    )
    assert body == expected


def test_ingest_request_round_trips_through_its_json() -> None:
    event = make_event(timestamp=EXACT_TIME)
    request = IngestRequest(events=[IngestItem(event_id=uid(1), event=event)])
    again = IngestRequest.model_validate_json(request.to_json())
    assert again == request
    assert again.to_json() == request.to_json()


def test_ingest_envelope_json_embeds_text_verbatim() -> None:
    # A relay's stored text is trusted as is: even unusual spacing survives byte for byte.
    text = '{"action":"CREATE","entity_type":"x\\u003c"}'
    body = ingest_envelope_json([(uid(5), text)])
    assert body == f'{{"events":[{{"event_id":"{uid(5)}","event":{text}}}]}}'
    assert json.loads(body)["events"][0]["event"] == {"action": "CREATE", "entity_type": "x<"}


def test_ingest_envelope_json_accepts_a_generator() -> None:
    event = make_event()
    body = ingest_envelope_json((uid(i), event.to_json()) for i in range(3))
    assert [item["event_id"] for item in json.loads(body)["events"]] == [
        str(uid(0)),
        str(uid(1)),
        str(uid(2)),
    ]


def test_ingest_envelope_json_refuses_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="1 to 500 events, not 0"):
        ingest_envelope_json([])


def test_ingest_envelope_json_refuses_too_many_items() -> None:
    text = make_event().to_json()
    items = [(uid(i), text) for i in range(MAX_INGEST_ITEMS + 1)]
    with pytest.raises(ValueError, match="not 501"):
        ingest_envelope_json(items)
    assert ingest_envelope_json(items[:MAX_INGEST_ITEMS]).count('"event_id"') == MAX_INGEST_ITEMS


def test_ingest_envelope_json_names_a_duplicate_id() -> None:
    text = make_event().to_json()
    with pytest.raises(ValueError, match=str(uid(9))):
        ingest_envelope_json([(uid(9), text), (uid(1), text), (uid(9), text)])


@pytest.mark.parametrize("text", ["", "[1]", "null", '{"a":1', "  {}"])
def test_ingest_envelope_json_refuses_text_that_is_not_an_object(text: str) -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        ingest_envelope_json([(uid(1), text)])


def test_ingest_envelope_json_refuses_wrong_types() -> None:
    text = make_event().to_json()
    with pytest.raises(TypeError, match=r"event_id must be a uuid\.UUID, not str"):
        ingest_envelope_json([(str(uid(1)), text)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="JSON must be a str, not bytes"):
        ingest_envelope_json([(uid(1), text.encode())])  # type: ignore[list-item]


def test_ingest_request_bounds_the_number_of_items() -> None:
    item = IngestItem(event_id=uid(1), event=make_event())
    with pytest.raises(ValidationError, match="at least 1 item"):
        IngestRequest(events=[])
    many = [item.model_copy(update={"event_id": uid(i)}) for i in range(MAX_INGEST_ITEMS + 1)]
    with pytest.raises(ValidationError, match="at most 500 items"):
        IngestRequest(events=many)
    assert len(IngestRequest(events=many[:MAX_INGEST_ITEMS]).events) == MAX_INGEST_ITEMS


def test_ingest_request_names_a_duplicate_event_id() -> None:
    event = make_event()
    with pytest.raises(ValidationError) as info:
        IngestRequest(
            events=[
                IngestItem(event_id=uid(1), event=event),
                IngestItem(event_id=uid(2), event=event),
                IngestItem(event_id=uid(1), event=event),
            ]
        )
    assert info.value.errors()[0]["loc"] == ("events",)
    assert f"event_id {uid(1)} appears more than once" in str(info.value)


def test_ingest_request_rejects_a_bad_event_id() -> None:
    body = '{"events":[{"event_id":"not-a-uuid","event":' + make_event().to_json() + "}]}"
    with pytest.raises(ValidationError) as info:
        IngestRequest.model_validate_json(body)
    assert info.value.errors()[0]["loc"] == ("events", 0, "event_id")


def test_ingest_request_ignores_unknown_envelope_keys() -> None:
    # A later minor version may add optional metadata; version 1 readers must still read it.
    body = (
        '{"events":[{"event_id":"'
        + str(uid(1))
        + '","event":'
        + make_event().to_json()
        + ',"attempt":3}],"sent_at":"2026-11-27T10:11:12Z"}'
    )
    assert IngestRequest.model_validate_json(body).events[0].event_id == uid(1)


def test_ingest_result_error_is_required_iff_rejected() -> None:
    rejected = IngestResult(event_id=uid(1), status=IngestStatus.REJECTED, error="bad")
    assert not rejected.delivered
    assert IngestResult(event_id=uid(1), status="accepted").delivered
    assert IngestResult(event_id=uid(1), status="duplicate").delivered
    with pytest.raises(ValidationError, match="a rejected result needs an error"):
        IngestResult(event_id=uid(1), status=IngestStatus.REJECTED)
    with pytest.raises(ValidationError, match="only a rejected result has an error"):
        IngestResult(event_id=uid(1), status=IngestStatus.ACCEPTED, error="bad")


def test_ingest_result_refuses_an_unknown_status() -> None:
    with pytest.raises(ValidationError) as info:
        IngestResult.model_validate_json(f'{{"event_id":"{uid(1)}","status":"queued"}}')
    assert info.value.errors()[0]["loc"] == ("status",)


def test_ingest_result_bounds_the_error_text() -> None:
    IngestResult(event_id=uid(1), status="rejected", error="x" * MAX_INGEST_ERROR_LENGTH)
    with pytest.raises(ValidationError):
        IngestResult(event_id=uid(1), status="rejected", error="x" * (MAX_INGEST_ERROR_LENGTH + 1))


def test_ingest_response_reads_the_wire_format() -> None:
    body = json.dumps(
        {
            "results": [
                {"event_id": str(uid(1)), "status": "accepted"},
                {"event_id": str(uid(2)), "status": "duplicate"},
                {"event_id": str(uid(3)), "status": "rejected", "error": "user_id: not int"},
            ]
        }
    )
    response = IngestResponse.model_validate_json(body)
    assert [r.status for r in response.results] == [
        IngestStatus.ACCEPTED,
        IngestStatus.DUPLICATE,
        IngestStatus.REJECTED,
    ]
    assert json.loads(response.model_dump_json(exclude_none=True)) == json.loads(body)


def _request(*ids: int) -> IngestRequest:
    event = make_event()
    return IngestRequest(events=[IngestItem(event_id=uid(i), event=event) for i in ids])


def _response(*ids: int) -> IngestResponse:
    return IngestResponse(
        results=[IngestResult(event_id=uid(i), status=IngestStatus.ACCEPTED) for i in ids]
    )


def test_ingest_response_check_answers_accepts_a_matching_answer() -> None:
    _response(1, 2, 3).check_answers(_request(1, 2, 3))
    _response(1, 2, 3).check_answers([uid(1), uid(2), uid(3)])


def test_ingest_response_check_answers_refuses_a_wrong_count() -> None:
    with pytest.raises(ValueError, match="2 results for 3 events"):
        _response(1, 2).check_answers(_request(1, 2, 3))


def test_ingest_response_check_answers_refuses_a_foreign_id() -> None:
    with pytest.raises(ValueError, match=f"result 1 is for event {uid(9)}"):
        _response(1, 9, 3).check_answers(_request(1, 2, 3))


def test_ingest_response_check_answers_refuses_another_order() -> None:
    with pytest.raises(ValueError, match="result 0"):
        _response(2, 1).check_answers([uid(1), uid(2)])


def test_parse_ingest_request_reads_every_golden_vector() -> None:
    texts = golden_texts()
    body = ingest_envelope_json((uid(i), text) for i, text in enumerate(texts))
    parsed = parse_ingest_request(body)
    assert all(isinstance(item, IngestItem) for item in parsed)
    assert [item.event.to_json() for item in parsed if isinstance(item, IngestItem)] == texts


def test_parse_ingest_request_rejects_bad_events_one_by_one() -> None:
    good = make_event(timestamp=EXACT_TIME).to_json()
    bad_user = good.replace('"user_id":42', '"user_id":"42"')
    bad_time = good.replace("+05:30", "")
    too_big = good.replace('"status_code":200', '"status_code":9223372036854775808')
    body = ingest_envelope_json(
        [(uid(1), good), (uid(2), bad_user), (uid(3), bad_time), (uid(4), too_big)]
    )
    parsed = parse_ingest_request(body.encode())
    assert isinstance(parsed[0], IngestItem)
    rejected = parsed[1:]
    assert all(isinstance(r, IngestResult) and r.status is IngestStatus.REJECTED for r in rejected)
    errors = [r.error for r in rejected if isinstance(r, IngestResult)]
    assert [r.event_id for r in rejected] == [uid(2), uid(3), uid(4)]
    assert errors[0] is not None and errors[0].startswith("event.user_id: ")
    assert errors[1] is not None and errors[1].startswith("event.timestamp: ")
    assert errors[2] is not None and errors[2].startswith("event.status_code: ")


def test_parse_ingest_request_rejects_a_number_beyond_float64() -> None:
    good = make_event().to_json()
    body = ingest_envelope_json([(uid(1), good[:-1] + ',"changes":{"n":1e400}}')])
    (result,) = parse_ingest_request(body)
    assert isinstance(result, IngestResult)
    assert result.status is IngestStatus.REJECTED


def test_parse_ingest_request_judges_events_as_model_validate_json_does() -> None:
    # A context id without its context is what Go may send: read as JSON, it is accepted.
    text = make_event().to_json()[:-1] + ',"break_glass_id":5}'
    (item,) = parse_ingest_request(ingest_envelope_json([(uid(1), text)]))
    assert isinstance(item, IngestItem)
    assert item.event.to_json() == Event.model_validate_json(text).to_json() == text


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ("not json", ()),
        ('{"events":[]}', ("events",)),
        ("{}", ("events",)),
        ('{"events":[{"event_id":"x","event":{}}]}', ("events", 0, "event_id")),
        (f'{{"events":[{{"event_id":"{uid(1)}","event":[1]}}]}}', ("events", 0, "event")),
    ],
)
def test_parse_ingest_request_refuses_a_malformed_envelope(
    body: str, loc: tuple[object, ...]
) -> None:
    with pytest.raises(ValidationError) as info:
        parse_ingest_request(body)
    assert info.value.errors()[0]["loc"] == loc


def test_parse_ingest_request_refuses_duplicate_ids_in_the_envelope() -> None:
    text = make_event().to_json()
    body = (
        f'{{"events":[{{"event_id":"{uid(3)}","event":{text}}},'
        f'{{"event_id":"{uid(3)}","event":{text}}}]}}'
    )
    with pytest.raises(ValidationError, match=str(uid(3))):
        parse_ingest_request(body)


def test_parse_ingest_request_truncates_a_long_error() -> None:
    # The error names the path of a bad value inside changes, so a huge key makes a huge error.
    key = "k" * 10_000
    text = make_event().to_json()[:-1] + f',"changes":{{"{key}":{"9" * 400}}}}}'
    (result,) = parse_ingest_request(ingest_envelope_json([(uid(1), text)]))
    assert isinstance(result, IngestResult)
    assert result.error is not None
    assert len(result.error) == MAX_INGEST_ERROR_LENGTH
    assert result.error.startswith("event.changes")
    assert result.error.endswith("...")


def test_parse_ingest_request_reads_each_event_from_its_own_bytes() -> None:
    # Duplicates, case-folded keys and -0 mean what they mean to Go only in the raw text.
    good = make_event().to_json()
    folded = good[:-1] + ',"ORGANIZATION_ID":8,"organization_id":9,"ORGANIZATION_ID":10}'
    zero = good[:-1] + ',"changes":{"delta":-0,"s":"-0"}}'
    body = ingest_envelope_json([(uid(1), folded), (uid(2), zero)])
    spaced = body.replace('":', '" : ').replace(',"', ' ,\n "')
    for text in (body, spaced, spaced.encode()):
        first, second = parse_ingest_request(text)
        assert isinstance(first, IngestItem) and isinstance(second, IngestItem)
        assert first.event.organization_id == 10
        assert second.event.to_json() == zero


def test_parse_ingest_request_reads_what_python_writes_at_the_depth_limit() -> None:
    deep: object = 1
    for _ in range(MAX_CHANGES_DEPTH):
        deep = [deep]
    event = make_event(changes=deep)
    request = IngestRequest(events=[IngestItem(event_id=uid(1), event=event)])
    (item,) = parse_ingest_request(request.to_json())
    assert isinstance(item, IngestItem) and item.event == event
