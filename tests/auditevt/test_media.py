from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from auditevt import (
    MAX_MEDIA_EVENTS,
    HeartbeatEvent,
    MediaEventRequest,
    MediaEventResponse,
    MediaSessionKind,
    MediaTransport,
    Platform,
    Pseudonymizer,
    SessionEndEvent,
    SessionEndReason,
    SessionStartEvent,
)

ACTOR = Pseudonymizer(bytes(32), key_id="k1").pseudonymize(42)
AT = "2026-11-27T10:11:12.25+01:00"


def start(n: int = 1, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "session_start",
        "event_id": str(uuid.UUID(int=n)),
        "occurred_at": AT,
        "kind": "live",
        "transport": "webrtc",
        "device": {"platform": "web", "app_version": "2026.11.3", "browser_name": "Firefox"},
        **overrides,
    }


def heartbeat(n: int = 2, sequence: int = 0, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "heartbeat",
        "event_id": str(uuid.UUID(int=n)),
        "occurred_at": AT,
        "sequence": sequence,
        "interval_ms": 10_000,
        "inbound_bitrate_kbps": 1450.5,
        "outbound_bitrate_kbps": 800,
        "available_bandwidth_kbps": 3000,
        "bytes_received": 1_812_000,
        "bytes_sent": 1_000_000,
        "packet_loss_pct": 0.4,
        "rtt_ms": 48,
        "jitter_ms": 3.5,
        "frame_width": 1280,
        "frame_height": 720,
        "frames_per_second": 29.97,
        "frames_dropped": 2,
        "buffering_ms": 350,
        "buffering_events": 1,
        **overrides,
    }


def end(n: int = 3, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "session_end",
        "event_id": str(uuid.UUID(int=n)),
        "occurred_at": AT,
        "reason": "completed",
        "duration_ms": 1_800_000,
        "bytes_received": 300_000_000,
        **overrides,
    }


def body(*events: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "organization_id": 7,
        "actor": ACTOR,
        "session_id": str(uuid.UUID(int=77)),
        "events": list(events),
        **overrides,
    }


def errors_at(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as info:
        MediaEventRequest.model_validate_json(json.dumps(data))
    return [tuple(error["loc"]) for error in info.value.errors()]


def test_media_event_request_reads_a_whole_session() -> None:
    request = MediaEventRequest.model_validate_json(
        json.dumps(body(start(), heartbeat(2, 0), heartbeat(4, 1), end(3)))
    )
    first, beat, _, last = request.events
    assert isinstance(first, SessionStartEvent)
    assert first.kind is MediaSessionKind.LIVE and first.transport is MediaTransport.WEBRTC
    assert first.device.platform is Platform.WEB
    assert isinstance(beat, HeartbeatEvent)
    assert beat.inbound_bitrate_kbps == 1450.5 and beat.rtt_ms == 48.0
    assert (beat.frame_width, beat.frame_height, beat.frames_per_second) == (1280, 720, 29.97)
    assert isinstance(last, SessionEndEvent) and last.reason is SessionEndReason.COMPLETED


def test_media_event_request_round_trips_through_json() -> None:
    request = MediaEventRequest.model_validate(body(start(), heartbeat(), end()))
    assert MediaEventRequest.model_validate_json(request.model_dump_json()) == request
    assert MediaEventRequest.model_validate_json(request.model_dump_json(exclude_none=True)) == (
        request
    )


def test_heartbeat_needs_only_the_core_measurements() -> None:
    minimal = {
        "type": "heartbeat",
        "event_id": str(uuid.UUID(int=9)),
        "occurred_at": AT,
        "sequence": 0,
        "interval_ms": 5000,
        "inbound_bitrate_kbps": 0,
        "bytes_received": 0,
    }
    request = MediaEventRequest.model_validate(body(minimal))
    beat = request.events[0]
    assert isinstance(beat, HeartbeatEvent)
    assert beat.packet_loss_pct is None and beat.buffering_ms == 0


def test_media_event_request_requires_a_pseudonymous_actor() -> None:
    data = body(heartbeat())
    del data["actor"]
    assert errors_at(data) == [("actor",)]
    assert errors_at(body(heartbeat(), actor="user-42")) == [("actor",)]
    assert errors_at(body(heartbeat(), user_id=42)) == [("user_id",)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("packet_loss_pct", 100.5),
        ("packet_loss_pct", -1),
        ("inbound_bitrate_kbps", -0.1),
        ("inbound_bitrate_kbps", 1e7),
        ("rtt_ms", 60_001),
        ("frames_per_second", 1000),
        ("bytes_received", -1),
        ("bytes_received", 1.5),
        ("bytes_received", "100"),
        ("interval_ms", 0),
        ("interval_ms", 300_001),
        ("sequence", True),
        ("frame_width", 0),
    ],
)
def test_heartbeat_refuses_an_implausible_measurement(field: str, value: Any) -> None:
    assert errors_at(body(heartbeat(**{field: value}))) == [("events", 0, "heartbeat", field)]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_heartbeat_refuses_nan_and_infinity(literal: str) -> None:
    text = json.dumps(body(heartbeat())).replace('"jitter_ms": 3.5', f'"jitter_ms": {literal}')
    with pytest.raises(ValidationError) as info:
        MediaEventRequest.model_validate_json(text)
    assert info.value.errors()[0]["loc"] == ("events", 0, "heartbeat", "jitter_ms")


def test_heartbeat_refuses_more_buffering_than_its_window() -> None:
    with pytest.raises(ValidationError, match="buffering_ms=10001 exceeds interval_ms=10000"):
        MediaEventRequest.model_validate(body(heartbeat(buffering_ms=10_001)))


def test_heartbeat_wants_both_frame_sides_or_neither() -> None:
    with pytest.raises(ValidationError, match="frame_width and frame_height"):
        MediaEventRequest.model_validate(body(heartbeat(frame_height=None)))


def test_media_event_request_keeps_the_lifecycle_in_order() -> None:
    with pytest.raises(ValidationError, match="session_start is event 1"):
        MediaEventRequest.model_validate(body(heartbeat(), start()))
    with pytest.raises(ValidationError, match="session_end is event 0"):
        MediaEventRequest.model_validate(body(end(), heartbeat()))
    with pytest.raises(ValidationError, match="session_start is event 1"):
        MediaEventRequest.model_validate(body(start(1), start(2)))


def test_media_event_request_refuses_repeated_ids_and_sequences() -> None:
    with pytest.raises(ValidationError, match="appears more than once in one request"):
        MediaEventRequest.model_validate(body(heartbeat(2, 0), heartbeat(2, 1)))
    with pytest.raises(ValidationError, match="heartbeat sequence 4 appears more than once"):
        MediaEventRequest.model_validate(body(heartbeat(2, 4), heartbeat(3, 4)))


def test_media_event_request_bounds_the_batch() -> None:
    assert errors_at(body()) == [("events",)]
    beats = [heartbeat(n, n) for n in range(MAX_MEDIA_EVENTS + 1)]
    assert errors_at(body(*beats)) == [("events",)]
    assert len(MediaEventRequest.model_validate(body(*beats[:-1])).events) == MAX_MEDIA_EVENTS


def test_session_start_refuses_a_bad_device() -> None:
    device: dict[str, Any] = {"platform": "mainframe", "app_version": "1"}
    assert errors_at(body(start(device=device))) == [
        ("events", 0, "session_start", "device", "platform")
    ]
    device = {"platform": "web", "app_version": "1", "screen_width": 100_000}
    assert errors_at(body(start(device=device))) == [
        ("events", 0, "session_start", "device", "screen_width")
    ]
    device = {"platform": "web", "app_version": "1", "user_agent": "Mozilla/5.0"}
    assert errors_at(body(start(device=device))) == [
        ("events", 0, "session_start", "device", "user_agent")
    ]


def test_session_end_refuses_an_unknown_reason() -> None:
    assert errors_at(body(end(reason="bored"))) == [("events", 0, "session_end", "reason")]


def test_media_event_response_reads_counts() -> None:
    response = MediaEventResponse.model_validate_json('{"accepted": 2, "duplicates": 0}')
    assert response.accepted == 2
