"""``TelemetryStandIn``: a real Telemetry to run locally and in tests, with faults on demand."""

from __future__ import annotations

import contextlib
import random
import threading
import uuid
from collections.abc import Iterator, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware

from auditevt import (
    Action,
    AnalyticsTrackRequest,
    ErrorReportRequest,
    Event,
    HealthStatus,
    MediaEventRequest,
    PoseFramesRequest,
    SigningKey,
    Timestamp,
    WebhookVerifier,
)
from telemetry_client.testing._app import EventCheck, StandInSettings, build_app
from telemetry_client.testing._faults import Fault, FaultInjection
from telemetry_client.testing._inject import Decision, FaultMiddleware
from telemetry_client.testing._record import Record
from telemetry_client.testing._server import serve_asgi

__all__ = ["DEFAULT_MAX_BODY_BYTES", "TelemetryStandIn", "standard_event_check"]

#: Largest body taken, compressed or decompressed: 4 MiB (a full relay batch is at most 1 MiB).
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

_ACTIONS = frozenset(Action)


def standard_event_check(event: Event) -> str | None:
    """What the stand-in refuses in a well-formed event: a negative tenant, or no action.

    ``organization_id`` 0 is accepted: ``AuditMiddleware`` records a mutation without an
    authenticated organization under ``anonymous_organization_id`` (0 by default), and an audit
    trail must keep it rather than dead-letter it. A negative id names no organization and
    follows no convention, and an empty ``action`` (Go's zero value) records nothing; both are
    answered ``rejected`` (permanent) and never stored. Pass another ``event_check`` to
    :class:`TelemetryStandIn` for a stricter (or looser) Telemetry.
    """
    if event.organization_id < 0:
        return (
            f"organization_id={event.organization_id} is negative: a tenant id is 0 "
            "(no authenticated organization) or positive"
        )
    if event.action not in _ACTIONS:
        return f"action={event.action!r} is not CREATE, UPDATE or DELETE"
    return None


class TelemetryStandIn:
    """Telemetry's endpoints as a real Starlette app, keeping what it receives in memory.

    Use ``.app`` in-process (``httpx.ASGITransport(app=standin.app)``) or ``.serve()`` for a
    real HTTP server on loopback. Ingest is deduplicated by ``event_id`` and answered item by
    item; ``event_check`` decides which well-formed events are rejected (by default those
    with a negative organization or no action, see :func:`standard_event_check`). ``faults`` may be
    replaced at any time, also while serving. ``signing_key`` (one key, several, or a
    ``WebhookVerifier`` of your own) makes every endpoint but ``/health`` refuse a request
    without a valid Standard Webhooks signature with a 401. Every accessor is safe from any
    thread.
    """

    def __init__(
        self,
        faults: FaultInjection | None = None,
        *,
        event_check: EventCheck = standard_event_check,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        bearer_token: str | None = None,
        signing_key: SigningKey | str | Sequence[SigningKey | str] | WebhookVerifier | None = None,
    ) -> None:
        if faults is not None and not isinstance(faults, FaultInjection):
            raise TypeError(f"faults must be a FaultInjection or None, not {faults!r}")
        if not callable(event_check):
            raise TypeError(f"event_check must be callable, not {event_check!r}")
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
            raise TypeError(f"max_body_bytes must be an int, not {max_body_bytes!r}")
        if max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes={max_body_bytes} must be at least 1024")
        if bearer_token is not None and (not isinstance(bearer_token, str) or not bearer_token):
            raise ValueError(f"bearer_token must be a non-empty str or None, not {bearer_token!r}")
        verifier = None
        if signing_key is not None:
            verifier = (
                signing_key
                if isinstance(signing_key, WebhookVerifier)
                else WebhookVerifier(signing_key)
            )
        self._record = Record()
        self._fault_lock = threading.Lock()
        self._faults = faults or FaultInjection()
        self._random = random.Random(self._faults.seed)
        self._settings = StandInSettings(
            self._record, event_check, max_body_bytes, bearer_token, verifier
        )
        self._app = build_app(self._settings, [Middleware(FaultMiddleware, decide=self._decide)])

    def __repr__(self) -> str:
        verifier = self._settings.verifier
        signing = "" if verifier is None else f", signing_keys={list(verifier.keys)!r}"
        return f"TelemetryStandIn(faults={self._faults!r}{signing})"

    @property
    def verifier(self) -> WebhookVerifier | None:
        """What checks each request's signature; None when requests need none."""
        return self._settings.verifier

    @property
    def app(self) -> Starlette:
        """The ASGI app."""
        return self._app

    @property
    def faults(self) -> FaultInjection:
        """The faults injected now; assign a new value to change them (the random is reseeded)."""
        return self._faults

    @faults.setter
    def faults(self, faults: FaultInjection) -> None:
        if not isinstance(faults, FaultInjection):
            raise TypeError(f"faults must be a FaultInjection, not {faults!r}")
        with self._fault_lock:
            self._faults = faults
            self._random = random.Random(faults.seed)

    @property
    def health_status(self) -> HealthStatus:
        """What ``GET /health`` reports (``down`` answers 503); ``ok`` by default."""
        return self._settings.health_status

    @health_status.setter
    def health_status(self, status: HealthStatus) -> None:
        self._settings.health_status = HealthStatus(status)

    def _decide(self, path: str) -> Decision:
        fault: Fault | None = None
        with self._fault_lock:
            faults = self._faults
            delay = 0.0
            if faults.applies_to(path):
                delay = faults.latency
                if faults.failure_rate and self._random.random() < faults.failure_rate:
                    fault = self._random.choice(faults.failures)
                    if fault is Fault.SLOW:
                        delay += faults.slow_latency
        self._record.count_request(path, fault)
        return delay, fault, faults.retry_after

    @contextlib.contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve over real HTTP in a background thread; yield the base URL once it accepts.

        ``port=0`` picks a free port. The server stops when the block ends.
        """
        with serve_asgi(self._app, host=host, port=port) as url:
            yield url

    # -- what was received -----------------------------------------------------------------

    def event_ids(self) -> frozenset[uuid.UUID]:
        """The distinct ``event_id`` of every audit event stored."""
        return self._record.event_ids()

    def events(self) -> dict[uuid.UUID, Event]:
        """Every audit event stored, by ``event_id``, in the order they first arrived."""
        return self._record.events()

    def received_at(self) -> dict[uuid.UUID, Timestamp]:
        """When each stored audit event first arrived, by ``event_id``."""
        return {key: Timestamp.from_unix_ns(ns) for key, ns in self._record.received_ns().items()}

    def deliveries(self, event_id: uuid.UUID) -> int:
        """How many times ``event_id`` was delivered (accepted once, then duplicates)."""
        return self._record.deliveries(event_id)

    def rejected(self) -> dict[uuid.UUID, str]:
        """The reason for every ``event_id`` answered ``rejected``."""
        return self._record.rejected()

    def request_counts(self) -> dict[str, int]:
        """Requests received per path, failed on purpose or not."""
        return self._record.request_counts()

    def signature_refusals(self) -> dict[str, int]:
        """Requests answered 401 for their signature, per ``SignatureError.code``."""
        return self._settings.signature_refusals()

    def fault_counts(self) -> dict[Fault, int]:
        """Requests failed (or slowed) on purpose, per fault."""
        return self._record.fault_counts()

    def analytics(self) -> list[AnalyticsTrackRequest]:
        """Every valid analytics request, in arrival order (repeats included)."""
        return self._record.analytics()

    def media_requests(self) -> list[MediaEventRequest]:
        """Every valid media events request, in arrival order (repeats included)."""
        return self._record.media_requests()

    def pose_requests(self) -> list[PoseFramesRequest]:
        """Every valid pose frames request, in arrival order (repeats included)."""
        return self._record.pose_requests()

    def error_reports(self) -> list[ErrorReportRequest]:
        """Every distinct error report, by first arrival."""
        return self._record.error_reports()

    def wait_for_events(self, count: int, timeout: float = 10.0) -> frozenset[uuid.UUID]:
        """Block until ``count`` distinct audit events arrived; TimeoutError after ``timeout``.

        From async code run it in a thread (``anyio.to_thread.run_sync``) so the event loop
        keeps delivering meanwhile.
        """
        return self._record.wait_for_events(count, timeout)

    def reset(self) -> None:
        """Forget everything received (the faults stay)."""
        self._record.reset()
