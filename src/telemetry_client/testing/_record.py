"""What the stand-in received, in memory behind one lock: the server runs in its own thread."""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TypeVar

from auditevt import (
    AnalyticsTrackRequest,
    BandwidthStatsQuery,
    BandwidthStatsResponse,
    ErrorReportRequest,
    Event,
    HeartbeatEvent,
    IngestItem,
    IngestResult,
    IngestStatus,
    MediaEventRequest,
    PoseFramesRequest,
    SessionStartEvent,
)
from telemetry_client.testing._bandwidth import MediaSession, bandwidth_stats
from telemetry_client.testing._faults import Fault

__all__ = ["Record", "SessionConflict"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


class SessionConflict(ValueError):
    """A media session id already belongs to another organization."""


class Record:
    """Everything received, deduplicated the way Telemetry deduplicates it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._clear()

    def _clear(self) -> None:
        self._events: dict[uuid.UUID, Event] = {}
        self._received_ns: dict[uuid.UUID, int] = {}
        self._deliveries: collections.Counter[uuid.UUID] = collections.Counter()
        self._rejected: dict[uuid.UUID, str] = {}
        self._requests: collections.Counter[str] = collections.Counter()
        self._faults: collections.Counter[Fault] = collections.Counter()
        self._analytics: list[AnalyticsTrackRequest] = []
        self._analytics_ids: set[uuid.UUID] = set()
        self._media: list[MediaEventRequest] = []
        self._media_ids: set[uuid.UUID] = set()
        self._sessions: dict[uuid.UUID, MediaSession] = {}
        self._pose: list[PoseFramesRequest] = []
        self._frames: set[tuple[uuid.UUID, int]] = set()
        self._errors: dict[uuid.UUID, ErrorReportRequest] = {}

    def reset(self) -> None:
        with self._lock:
            self._clear()
            self._changed.notify_all()

    # -- writing (called by the app) -------------------------------------------------------

    def count_request(self, path: str, fault: Fault | None) -> None:
        with self._lock:
            self._requests[path] += 1
            if fault is not None:
                self._faults[fault] += 1

    def ingest(self, entries: Sequence[IngestItem | IngestResult]) -> list[IngestResult]:
        """Store the items and answer each entry; an ``IngestResult`` entry is a rejection."""
        results: list[IngestResult] = []
        now = time.time_ns()
        with self._lock:
            for entry in entries:
                event_id = entry.event_id
                if isinstance(entry, IngestResult):
                    self._rejected.setdefault(event_id, entry.error or "rejected")
                    results.append(entry)
                    continue
                self._deliveries[event_id] += 1
                if event_id in self._events:
                    results.append(IngestResult(event_id=event_id, status=IngestStatus.DUPLICATE))
                    continue
                self._events[event_id] = entry.event
                self._received_ns[event_id] = now
                results.append(IngestResult(event_id=event_id, status=IngestStatus.ACCEPTED))
            self._changed.notify_all()
        return results

    def track(self, request: AnalyticsTrackRequest) -> tuple[int, int]:
        with self._lock:
            self._analytics.append(request)
            return _add_new(self._analytics_ids, [e.event_id for e in request.events])

    def media(self, request: MediaEventRequest) -> tuple[int, int]:
        with self._lock:
            session = self._sessions.get(request.session_id)
            if session is None:
                session = MediaSession(organization_id=request.organization_id)
            elif session.organization_id != request.organization_id:
                raise SessionConflict(
                    f"session_id {request.session_id} belongs to another organization, "
                    f"not to organization_id={request.organization_id}"
                )
            self._sessions[request.session_id] = session
            self._media.append(request)
            accepted = duplicates = 0
            for event in request.events:
                if event.event_id in self._media_ids:
                    duplicates += 1
                    continue
                self._media_ids.add(event.event_id)
                accepted += 1
                if isinstance(event, SessionStartEvent):
                    session.kind = event.kind
                elif isinstance(event, HeartbeatEvent):
                    session.heartbeats.setdefault(event.sequence, event)
            return accepted, duplicates

    def pose(self, request: PoseFramesRequest) -> tuple[int, int]:
        with self._lock:
            self._pose.append(request)
            keys = [(request.session_id, frame.frame_index) for frame in request.frames]
            return _add_new(self._frames, keys)

    def report_error(self, request: ErrorReportRequest) -> bool:
        """Store the report; True when its ``report_id`` was stored before."""
        with self._lock:
            if request.report_id in self._errors:
                return True
            self._errors[request.report_id] = request
            return False

    def bandwidth(self, query: BandwidthStatsQuery) -> BandwidthStatsResponse:
        with self._lock:
            return bandwidth_stats(query, list(self._sessions.items()), time.time_ns())

    # -- reading (called by tests, from any thread) -----------------------------------------

    def event_ids(self) -> frozenset[uuid.UUID]:
        with self._lock:
            return frozenset(self._events)

    # Readers get copies taken under the lock: the server thread keeps writing.
    def _copy(self, mapping: dict[K, V]) -> dict[K, V]:
        with self._lock:
            return dict(mapping)

    def _listed(self, items: Iterable[T]) -> list[T]:
        with self._lock:
            return list(items)

    def events(self) -> dict[uuid.UUID, Event]:
        return self._copy(self._events)

    def received_ns(self) -> dict[uuid.UUID, int]:
        return self._copy(self._received_ns)

    def deliveries(self, event_id: uuid.UUID) -> int:
        with self._lock:
            return self._deliveries[event_id]

    def rejected(self) -> dict[uuid.UUID, str]:
        return self._copy(self._rejected)

    def request_counts(self) -> dict[str, int]:
        return self._copy(self._requests)

    def fault_counts(self) -> dict[Fault, int]:
        return self._copy(self._faults)

    def analytics(self) -> list[AnalyticsTrackRequest]:
        return self._listed(self._analytics)

    def media_requests(self) -> list[MediaEventRequest]:
        return self._listed(self._media)

    def pose_requests(self) -> list[PoseFramesRequest]:
        return self._listed(self._pose)

    def error_reports(self) -> list[ErrorReportRequest]:
        return self._listed(self._errors.values())

    def wait_for_events(self, count: int, timeout: float) -> frozenset[uuid.UUID]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._events) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self._events)} distinct audit events arrived within {timeout:g} s, "
                        f"not {count}"
                    )
                self._changed.wait(left)
            return frozenset(self._events)


def _add_new(seen: set[K], keys: list[K]) -> tuple[int, int]:
    """Add ``keys`` to ``seen``; how many were new and how many were already there."""
    new = 0
    for key in keys:
        if key not in seen:
            seen.add(key)
            new += 1
    return new, len(keys) - new
