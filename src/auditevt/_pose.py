"""``POST /v1/pose/frames``: batched MediaPipe Pose landmarks of an exercise session.

Every frame holds exactly ``POSE_LANDMARK_COUNT`` (33) landmarks in MediaPipe's order (0 nose,
11/12 shoulders, 23/24 hips, ... 32 right foot index), each ``x, y, z, visibility``: ``x`` and
``y`` normalised to the image (they leave [0, 1] when a landmark is off screen), ``z`` the depth
relative to the hips on roughly the scale of ``x``, ``visibility`` a likelihood in [0, 1]. Frames
in which no pose was detected are not sent.

Limits: 1 to ``MAX_POSE_FRAMES`` (150, five seconds at 30 fps) frames a request, coordinates
within ±``MAX_POSE_COORDINATE`` (100), frame indexes strictly increasing within a request (so a
retried batch is recognised frame by frame).
"""

from __future__ import annotations

import itertools
import uuid
from typing import Annotated

from pydantic import Field, field_validator

from auditevt._fields import (
    Count,
    FiniteFloat,
    Name,
    Payload,
    Response,
    SessionOrganizationId,
)
from auditevt._pseudonym import Pseudonym
from auditevt._timestamp import Timestamp

__all__ = [
    "MAX_POSE_COORDINATE",
    "MAX_POSE_FRAMES",
    "POSE_LANDMARK_COUNT",
    "PoseFrame",
    "PoseFramesRequest",
    "PoseFramesResponse",
    "PoseLandmark",
]

#: Landmarks in one MediaPipe Pose frame.
POSE_LANDMARK_COUNT = 33
#: Most frames in one request.
MAX_POSE_FRAMES = 150
#: Largest coordinate magnitude accepted; anything beyond is a tracking failure, not a pose.
MAX_POSE_COORDINATE = 100.0

Coordinate = Annotated[FiniteFloat, Field(ge=-MAX_POSE_COORDINATE, le=MAX_POSE_COORDINATE)]


class PoseLandmark(Payload):
    """One body landmark."""

    x: Coordinate = Field(description="Horizontal position, normalised to the image width.")
    y: Coordinate = Field(description="Vertical position, normalised to the image height.")
    z: Coordinate = Field(description="Depth relative to the hips, on about the scale of x.")
    visibility: Annotated[FiniteFloat, Field(ge=0.0, le=1.0)] = Field(
        description="Likelihood that the landmark is visible, 0 to 1."
    )


class PoseFrame(Payload):
    """The pose in one video frame."""

    frame_index: Count = Field(description="The frame's number in the session, from 0.")
    captured_at: Timestamp = Field(description="When the frame was captured.")
    landmarks: list[PoseLandmark] = Field(
        min_length=POSE_LANDMARK_COUNT,
        max_length=POSE_LANDMARK_COUNT,
        description="Exactly 33 landmarks, in MediaPipe Pose order.",
    )


class PoseFramesRequest(Payload):
    """The body of ``POST /v1/pose/frames``: consecutive frames of one exercise session."""

    organization_id: SessionOrganizationId
    actor: Pseudonym = Field(description="The patient's pseudonym.")
    session_id: uuid.UUID = Field(description="The video session the frames come from.")
    exercise_id: Name | None = Field(default=None, description="The exercise being performed.")
    model: Name = Field(
        default="mediapipe-pose",
        description="The pose model and variant, e.g. mediapipe-pose-full.",
    )
    frames: list[PoseFrame] = Field(min_length=1, max_length=MAX_POSE_FRAMES)

    @field_validator("frames")
    @classmethod
    def _increasing(cls, frames: list[PoseFrame]) -> list[PoseFrame]:
        for before, after in itertools.pairwise(frames):
            if after.frame_index <= before.frame_index:
                raise ValueError(
                    f"frame_index {after.frame_index} follows {before.frame_index}; "
                    "frames must be in strictly increasing order"
                )
        return frames


class PoseFramesResponse(Response):
    """What Telemetry did with a batch of frames."""

    accepted: Count = Field(description="Frames stored now.")
    duplicates: Count = Field(description="Frames of this session already stored.")
