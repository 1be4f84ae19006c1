"""``POST /v1/media/events``: the lifecycle of one rehab video session.

A session is either a live call with a therapist (WebRTC) or the playback of an exercise video
(HLS, DASH or a plain file). The SDK sends ``session_start`` with the device, then a
``heartbeat`` every few seconds with what bandwidth monitoring needs (bitrates, cumulative
bytes, packet loss, round-trip time and jitter, resolution, frame rate, stalls), and
``session_end`` with the totals. Events of one session may be batched (for instance while
offline); each has an ``event_id`` Telemetry deduplicates on.

Limits: ``MAX_MEDIA_EVENTS`` (60) events a request; a heartbeat window of at most
``MAX_HEARTBEAT_INTERVAL_MS`` (300,000 ms); bitrates up to ``MAX_BITRATE_KBPS`` (1,000,000
kbit/s); frame rates up to ``MAX_FRAME_RATE`` (240); latencies up to ``MAX_LATENCY_MS``
(60,000 ms); frame sides up to ``MAX_SCREEN_PIXELS`` (16,384).
"""

from __future__ import annotations

import enum
import uuid
from typing import Annotated, Literal

from pydantic import Field, Strict, field_validator, model_validator

from auditevt._device import MAX_SCREEN_PIXELS, DeviceContext
from auditevt._fields import (
    Count,
    FiniteFloat,
    Name,
    Payload,
    Percent,
    Response,
    SessionOrganizationId,
    TaggedPayload,
    first_duplicate,
    unique_event_ids,
)
from auditevt._pseudonym import Pseudonym
from auditevt._timestamp import Timestamp

__all__ = [
    "MAX_BITRATE_KBPS",
    "MAX_FRAME_RATE",
    "MAX_HEARTBEAT_INTERVAL_MS",
    "MAX_LATENCY_MS",
    "MAX_MEDIA_EVENTS",
    "HeartbeatEvent",
    "MediaEvent",
    "MediaEventRequest",
    "MediaEventResponse",
    "MediaSessionKind",
    "MediaTransport",
    "SessionEndEvent",
    "SessionEndReason",
    "SessionStartEvent",
]

#: Most events in one request.
MAX_MEDIA_EVENTS = 60
#: Longest window one heartbeat may cover, in milliseconds (5 minutes).
MAX_HEARTBEAT_INTERVAL_MS = 300_000
#: Largest bitrate accepted, in kbit/s (1 Gbit/s).
MAX_BITRATE_KBPS = 1_000_000.0
#: Largest frame rate accepted, in frames per second.
MAX_FRAME_RATE = 240.0
#: Largest round-trip time or jitter accepted, in milliseconds.
MAX_LATENCY_MS = 60_000.0

Kbps = Annotated[FiniteFloat, Field(ge=0.0, le=MAX_BITRATE_KBPS)]
LatencyMs = Annotated[FiniteFloat, Field(ge=0.0, le=MAX_LATENCY_MS)]
FramePixels = Annotated[int, Strict(), Field(ge=1, le=MAX_SCREEN_PIXELS)]


class MediaSessionKind(enum.StrEnum):
    """What the video session is."""

    LIVE = "live"
    """A real-time call with a therapist."""
    PLAYBACK = "playback"
    """A recorded exercise video."""


class MediaTransport(enum.StrEnum):
    """How the media travels."""

    WEBRTC = "webrtc"
    HLS = "hls"
    DASH = "dash"
    PROGRESSIVE = "progressive"


class SessionEndReason(enum.StrEnum):
    """Why a session ended."""

    COMPLETED = "completed"
    USER_LEFT = "user_left"
    NETWORK_ERROR = "network_error"
    MEDIA_ERROR = "media_error"
    TIMEOUT = "timeout"


class _MediaEventBase(TaggedPayload):
    event_id: uuid.UUID = Field(description="Minted by the SDK; Telemetry deduplicates on it.")
    occurred_at: Timestamp = Field(description="When it happened on the device.")


class SessionStartEvent(_MediaEventBase):
    """The session began: what kind, over what, on which device."""

    type: Literal["session_start"] = "session_start"
    kind: MediaSessionKind
    transport: MediaTransport
    device: DeviceContext
    content_id: Name | None = Field(
        default=None, description="The exercise video played (playback sessions only)."
    )
    video_codec: Name | None = Field(default=None, description="e.g. vp8, h264, av1.")


class HeartbeatEvent(_MediaEventBase):
    """Measurements over the last ``interval_ms`` (cumulative byte counts since the start)."""

    type: Literal["heartbeat"] = "heartbeat"
    sequence: Count = Field(description="0 for the first heartbeat of the session, then +1.")
    interval_ms: Annotated[int, Strict(), Field(ge=1, le=MAX_HEARTBEAT_INTERVAL_MS)] = Field(
        description="The window these measurements cover."
    )
    inbound_bitrate_kbps: Kbps = Field(description="Media received, averaged over the window.")
    outbound_bitrate_kbps: Kbps | None = Field(
        default=None, description="Media sent (live sessions with a camera)."
    )
    available_bandwidth_kbps: Kbps | None = Field(
        default=None, description="The player's or WebRTC's estimate of the usable bandwidth."
    )
    bytes_received: Count = Field(description="Total since session_start.")
    bytes_sent: Count | None = Field(default=None, description="Total since session_start.")
    packet_loss_pct: Percent | None = Field(
        default=None, description="Inbound packets lost in the window (WebRTC only)."
    )
    rtt_ms: LatencyMs | None = Field(default=None, description="Round-trip time.")
    jitter_ms: LatencyMs | None = Field(default=None, description="Inbound jitter.")
    frame_width: FramePixels | None = Field(default=None, description="Decoded video width.")
    frame_height: FramePixels | None = Field(default=None, description="Decoded video height.")
    frames_per_second: Annotated[FiniteFloat, Field(ge=0.0, le=MAX_FRAME_RATE)] | None = None
    frames_dropped: Count = Field(default=0, description="Frames dropped in the window.")
    buffering_ms: Count = Field(default=0, description="Time stalled in the window.")
    buffering_events: Count = Field(default=0, description="Stalls that began in the window.")

    @model_validator(mode="after")
    def _consistent(self) -> HeartbeatEvent:
        if self.buffering_ms > self.interval_ms:
            raise ValueError(
                f"buffering_ms={self.buffering_ms} exceeds interval_ms={self.interval_ms}"
            )
        if (self.frame_width is None) != (self.frame_height is None):
            raise ValueError("frame_width and frame_height are given together or not at all")
        return self


class SessionEndEvent(_MediaEventBase):
    """The session ended: why, and its totals."""

    type: Literal["session_end"] = "session_end"
    reason: SessionEndReason
    duration_ms: Count = Field(description="From session_start to now.")
    bytes_received: Count = Field(description="Total for the session.")
    bytes_sent: Count | None = Field(default=None, description="Total for the session.")
    stall_count: Count = Field(default=0, description="Stalls over the whole session.")
    stall_ms: Count = Field(default=0, description="Time stalled over the whole session.")


MediaEvent = Annotated[
    SessionStartEvent | HeartbeatEvent | SessionEndEvent, Field(discriminator="type")
]
"""One media event, told apart by its ``type``."""


class MediaEventRequest(Payload):
    """The body of ``POST /v1/media/events``: events of one video session, in order."""

    organization_id: SessionOrganizationId
    actor: Pseudonym = Field(description="The signed-in user's pseudonym.")
    session_id: uuid.UUID = Field(description="The video session, minted at session_start.")
    events: list[MediaEvent] = Field(min_length=1, max_length=MAX_MEDIA_EVENTS)

    @field_validator("events")
    @classmethod
    def _ordered_lifecycle(cls, events: list[MediaEvent]) -> list[MediaEvent]:
        unique_event_ids(events)
        sequence = first_duplicate(e.sequence for e in events if isinstance(e, HeartbeatEvent))
        if sequence is not None:
            raise ValueError(f"heartbeat sequence {sequence} appears more than once")
        for index, event in enumerate(events):
            if isinstance(event, SessionStartEvent) and index != 0:
                raise ValueError(f"session_start is event {index}; it can only be the first")
            if isinstance(event, SessionEndEvent) and index != len(events) - 1:
                raise ValueError(f"session_end is event {index}; it can only be the last")
        return events


class MediaEventResponse(Response):
    """What Telemetry did with a media events request."""

    accepted: Count = Field(description="Events stored now.")
    duplicates: Count = Field(description="Events already stored under the same event_id.")
