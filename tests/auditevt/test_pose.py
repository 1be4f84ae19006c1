from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from auditevt import (
    MAX_POSE_COORDINATE,
    MAX_POSE_FRAMES,
    POSE_LANDMARK_COUNT,
    PoseFrame,
    PoseFramesRequest,
    PoseFramesResponse,
    PoseLandmark,
    Pseudonymizer,
    Timestamp,
)

ACTOR = Pseudonymizer(bytes(32), key_id="k1").pseudonymize(42)


def landmarks(count: int = POSE_LANDMARK_COUNT) -> list[dict[str, float]]:
    return [
        {"x": 0.5 + i / 100, "y": 0.25 - i / 100, "z": -0.1 * i, "visibility": 0.99}
        for i in range(count)
    ]


def frame(index: int = 0, **overrides: Any) -> dict[str, Any]:
    return {
        "frame_index": index,
        "captured_at": f"2026-11-27T10:11:12.{index:03d}Z",
        "landmarks": landmarks(),
        **overrides,
    }


def body(*frames: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "organization_id": 7,
        "actor": ACTOR,
        "session_id": str(uuid.UUID(int=1)),
        "exercise_id": "knee-extension-seated",
        "frames": list(frames) or [frame()],
        **overrides,
    }


def errors_at(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as info:
        PoseFramesRequest.model_validate_json(json.dumps(data))
    return [tuple(error["loc"]) for error in info.value.errors()]


def test_pose_frames_request_reads_33_landmarks_per_frame() -> None:
    request = PoseFramesRequest.model_validate_json(json.dumps(body(frame(0), frame(1))))
    assert len(request.frames) == 2
    first = request.frames[0]
    assert len(first.landmarks) == POSE_LANDMARK_COUNT == 33
    third = first.landmarks[3]
    assert third == PoseLandmark(x=0.53, y=0.22, z=-0.1 * 3, visibility=0.99)
    assert first.captured_at == Timestamp.parse("2026-11-27T10:11:12Z")
    assert request.model == "mediapipe-pose"


def test_pose_frames_request_round_trips_through_json() -> None:
    request = PoseFramesRequest.model_validate(body(frame(0), frame(5)))
    assert PoseFramesRequest.model_validate_json(request.model_dump_json()) == request


@pytest.mark.parametrize("count", [0, 32, 34])
def test_pose_frame_needs_exactly_33_landmarks(count: int) -> None:
    assert errors_at(body(frame(landmarks=landmarks(count)))) == [("frames", 0, "landmarks")]


def test_pose_landmark_has_exactly_x_y_z_visibility() -> None:
    marks = landmarks()
    del marks[7]["visibility"]
    assert errors_at(body(frame(landmarks=marks))) == [("frames", 0, "landmarks", 7, "visibility")]
    marks = landmarks()
    marks[8]["presence"] = 0.9
    assert errors_at(body(frame(landmarks=marks))) == [("frames", 0, "landmarks", 8, "presence")]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("visibility", 1.01),
        ("visibility", -0.01),
        ("x", MAX_POSE_COORDINATE + 1),
        ("z", -MAX_POSE_COORDINATE - 1),
        ("y", "0.5"),
        ("x", None),
    ],
)
def test_pose_landmark_refuses_a_bad_value(field: str, value: Any) -> None:
    marks = landmarks()
    marks[0][field] = value
    assert errors_at(body(frame(landmarks=marks))) == [("frames", 0, "landmarks", 0, field)]


def test_pose_landmark_accepts_off_screen_coordinates() -> None:
    # MediaPipe reports landmarks outside the image with x or y beyond [0, 1].
    marks = landmarks()
    marks[0].update(x=-0.4, y=1.7)
    assert PoseFramesRequest.model_validate(body(frame(landmarks=marks)))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_pose_landmark_refuses_nan_and_infinity(literal: str) -> None:
    text = json.dumps(body(frame())).replace('"x": 0.5,', f'"x": {literal},', 1)
    with pytest.raises(ValidationError) as info:
        PoseFramesRequest.model_validate_json(text)
    assert info.value.errors()[0]["loc"] == ("frames", 0, "landmarks", 0, "x")
    with pytest.raises(ValidationError):
        PoseLandmark(x=float("nan"), y=0, z=0, visibility=1)


def test_pose_frames_request_bounds_the_batch() -> None:
    assert errors_at(body(frames=[])) == [("frames",)]
    frames = [frame(i, captured_at="2026-11-27T10:11:12Z") for i in range(MAX_POSE_FRAMES + 1)]
    assert errors_at(body(*frames)) == [("frames",)]
    full = PoseFramesRequest.model_validate(body(*frames[:-1]))
    assert len(full.frames) == MAX_POSE_FRAMES


def test_pose_frames_request_validates_a_full_batch_quickly() -> None:
    frames = [frame(i, captured_at="2026-11-27T10:11:12Z") for i in range(MAX_POSE_FRAMES)]
    text = json.dumps(body(*frames))
    started = time.perf_counter()
    PoseFramesRequest.model_validate_json(text)
    # About 5,000 landmarks: a few milliseconds; a generous bound that still catches a blow-up.
    assert time.perf_counter() - started < 0.5


def test_pose_frames_request_wants_increasing_frame_indexes() -> None:
    with pytest.raises(ValidationError, match="frame_index 3 follows 3"):
        PoseFramesRequest.model_validate(body(frame(2), frame(3), frame(3)))
    with pytest.raises(ValidationError, match="frame_index 1 follows 2"):
        PoseFramesRequest.model_validate(body(frame(2), frame(1)))
    assert PoseFramesRequest.model_validate(body(frame(2), frame(40)))


def test_pose_frames_request_carries_organization_and_pseudonym_only() -> None:
    assert errors_at(body(organization_id=0)) == [("organization_id",)]
    assert errors_at(body(actor="42")) == [("actor",)]
    assert errors_at(body(patient_id=42)) == [("patient_id",)]


def test_pose_frame_builds_from_python_objects() -> None:
    mark = PoseLandmark(x=0.1, y=0.2, z=0.0, visibility=1.0)
    built = PoseFrame(frame_index=0, captured_at=Timestamp.now(), landmarks=[mark] * 33)
    assert built.landmarks[32] == mark


def test_pose_frames_response_reads_counts() -> None:
    response = PoseFramesResponse.model_validate_json('{"accepted": 150, "duplicates": 0}')
    assert response.accepted == 150
