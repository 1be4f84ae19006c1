"""Bandwidth statistics over the heartbeats the stand-in received, as Telemetry computes them."""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Iterable, Sequence

from auditevt import (
    BandwidthStatsQuery,
    BandwidthStatsResponse,
    HeartbeatEvent,
    MediaSessionKind,
    StatSummary,
    Timestamp,
)

__all__ = ["MediaSession", "bandwidth_stats"]

#: The window reported when the query gives neither ``since`` nor ``until``: 24 hours.
_DEFAULT_WINDOW_NS = 24 * 3600 * 1_000_000_000

_MEASUREMENTS = (
    "inbound_bitrate_kbps",
    "outbound_bitrate_kbps",
    "available_bandwidth_kbps",
    "rtt_ms",
    "jitter_ms",
    "packet_loss_pct",
)


@dataclasses.dataclass
class MediaSession:
    """One video session as received: its tenant, kind (once session_start came) and beats."""

    organization_id: int
    kind: MediaSessionKind | None = None
    #: Heartbeats by sequence number; the first one received for a sequence is kept.
    heartbeats: dict[int, HeartbeatEvent] = dataclasses.field(default_factory=dict)


def summarize(values: Sequence[float]) -> StatSummary | None:
    """min, mean, nearest-rank p50 and p95, max; None when nothing was measured."""
    if not values:
        return None
    ordered = sorted(values)
    low, high = ordered[0], ordered[-1]

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    # fsum keeps the mean exact enough; the clamp absorbs the last rounding error so that
    # min <= mean <= max holds even for identical values.
    mean = min(high, max(low, math.fsum(ordered) / len(ordered)))
    return StatSummary(min=low, mean=mean, p50=rank(0.50), p95=rank(0.95), max=high)


def _window(query: BandwidthStatsQuery, now_ns: int) -> tuple[Timestamp, Timestamp]:
    since, until = query.since, query.until
    if until is None:
        # A window is never empty: a since in the future still covers its own instant.
        until = Timestamp.from_unix_ns(now_ns if since is None else max(now_ns, since.unix_ns + 1))
    if since is None:
        since = Timestamp.from_unix_ns(until.unix_ns - _DEFAULT_WINDOW_NS)
    return since, until


def bandwidth_stats(
    query: BandwidthStatsQuery,
    sessions: Iterable[tuple[uuid.UUID, MediaSession]],
    now_ns: int,
) -> BandwidthStatsResponse:
    """The statistics of the heartbeats of ``query.organization_id`` inside the query's window.

    Only the organization's own sessions count: a ``session_id`` of another organization
    yields empty statistics, never its data. Byte totals are cumulative in heartbeats, so the
    bytes of the window are the growth of each session's total across it.
    """
    since, until = _window(query, now_ns)
    values: dict[str, list[float]] = {name: [] for name in _MEASUREMENTS}
    session_count = beat_count = stalls = 0
    received = sent = buffering_ms = observed_ms = 0
    for session_id, session in sessions:
        if session.organization_id != query.organization_id:
            continue
        if query.session_id is not None and session_id != query.session_id:
            continue
        if query.kind is not None and session.kind is not query.kind:
            continue
        inside: list[HeartbeatEvent] = []
        received_before = sent_before = 0
        for _, beat in sorted(session.heartbeats.items()):
            at = beat.occurred_at.unix_ns
            if at < since.unix_ns:
                received_before = max(received_before, beat.bytes_received)
                sent_before = max(sent_before, beat.bytes_sent or 0)
            elif at < until.unix_ns:
                inside.append(beat)
        if not inside:
            continue
        session_count += 1
        beat_count += len(inside)
        received += max(0, max(b.bytes_received for b in inside) - received_before)
        sent += max(0, max(b.bytes_sent or 0 for b in inside) - sent_before)
        for beat in inside:
            stalls += beat.buffering_events
            buffering_ms += beat.buffering_ms
            observed_ms += beat.interval_ms
            for name in _MEASUREMENTS:
                value = getattr(beat, name)
                if value is not None:
                    values[name].append(float(value))
    return BandwidthStatsResponse(
        since=since,
        until=until,
        session_id=query.session_id,
        sessions=session_count,
        heartbeats=beat_count,
        inbound_bitrate_kbps=summarize(values["inbound_bitrate_kbps"]),
        outbound_bitrate_kbps=summarize(values["outbound_bitrate_kbps"]),
        available_bandwidth_kbps=summarize(values["available_bandwidth_kbps"]),
        rtt_ms=summarize(values["rtt_ms"]),
        jitter_ms=summarize(values["jitter_ms"]),
        packet_loss_pct=summarize(values["packet_loss_pct"]),
        bytes_received=received,
        bytes_sent=sent,
        stall_count=stalls,
        buffering_ratio=min(1.0, buffering_ms / observed_ms) if observed_ms else 0.0,
    )
