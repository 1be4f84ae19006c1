"""The stand-in's Starlette app: every Telemetry endpoint, validated with the contract models.

Answers, by endpoint and failure:

- a body that is not JSON, not a JSON object, compressed wrongly, or an ingest envelope that
  is malformed (no ``events``, 0 or over 500 items, a bad or repeated ``event_id``): **400**;
- a well-formed body that the endpoint's model refuses: **422**, one entry a field;
- a body over the size limit (compressed or not): **413**; an encoding other than gzip or a
  type other than JSON: **415**; a missing or wrong bearer token, when one is required: **401**;
- a missing, stale, forged or replayed Standard Webhooks signature, when signing keys are
  configured: **401**, its ``errors`` naming the header and what failed (``/health`` is exempt:
  the load balancer does not sign);
- a contract major version (``X-Auditevt-Contract``) other than ours: **400**.

Error bodies are ``{"error": "<summary>", "errors": [{"field": "<path>", "message": "..."}]}``.
"""

from __future__ import annotations

import hmac
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from auditevt import (
    CONTRACT_VERSION,
    MAX_INGEST_ERROR_LENGTH,
    AnalyticsTrackRequest,
    AnalyticsTrackResponse,
    BandwidthStatsQuery,
    ErrorReportRequest,
    ErrorReportResponse,
    Event,
    HealthResponse,
    HealthStatus,
    IngestItem,
    IngestResponse,
    IngestResult,
    IngestStatus,
    MediaEventRequest,
    MediaEventResponse,
    PoseFramesRequest,
    PoseFramesResponse,
    SignatureError,
    WebhookVerifier,
    __version__,
    parse_ingest_request,
)
from telemetry_client import CONTRACT_HEADER
from telemetry_client.testing._record import Record, SessionConflict

__all__ = ["EventCheck", "Problem", "StandInSettings", "build_app"]

M = TypeVar("M", bound=BaseModel)

EventCheck = Callable[[Event], str | None]
"""Decides whether Telemetry takes an audit event: None to store it, or the rejection reason."""

_MALFORMED_TYPES = frozenset({"json_invalid", "json_type", "model_type", "model_attributes_type"})


class Problem(Exception):
    """An error answer: status, summary, and the fields at fault."""

    def __init__(
        self,
        status_code: int,
        error: str,
        errors: Sequence[dict[str, str]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status_code = status_code
        self.error = error
        self.errors = list(errors)
        self.headers = headers


class StandInSettings:
    """What the app needs from the stand-in; read on every request, so changes apply at once."""

    def __init__(
        self,
        record: Record,
        event_check: EventCheck,
        max_body_bytes: int,
        bearer_token: str | None,
        verifier: WebhookVerifier | None = None,
    ) -> None:
        self.record = record
        self.event_check = event_check
        self.max_body_bytes = max_body_bytes
        self.bearer_token = bearer_token
        self.verifier = verifier
        self.health_status = HealthStatus.OK
        self._refusals: Counter[str] = Counter()
        self._refusals_lock = threading.Lock()

    def refuse_signature(self, error: SignatureError) -> Problem:
        """Count a refused signature and turn it into the 401 answer."""
        with self._refusals_lock:
            self._refusals[error.code] += 1
        return Problem(
            401,
            f"the request's webhook signature is not valid ({error.code}): {error}",
            [{"field": f"header {error.header}", "message": str(error), "type": error.code}],
        )

    def signature_refusals(self) -> dict[str, int]:
        """How many requests were refused, per ``SignatureError.code``."""
        with self._refusals_lock:
            return dict(self._refusals)


def field_path(error: ErrorDetails) -> str:
    """A pydantic error location as ``events[3].event.user_id`` (``(body)`` for the root)."""
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(body)"


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": field_path(error), "message": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False)
    ]


def _is_malformed(exc: ValidationError) -> bool:
    """True when the body is not even a JSON object (400), rather than a wrong one (422)."""
    return any(not e["loc"] and e["type"] in _MALFORMED_TYPES for e in exc.errors())


def rejection(event_id: uuid.UUID, error: str) -> IngestResult:
    """A ``rejected`` result, its reason cut to what the contract allows."""
    if len(error) > MAX_INGEST_ERROR_LENGTH:
        error = error[: MAX_INGEST_ERROR_LENGTH - 3] + "..."
    return IngestResult(event_id=event_id, status=IngestStatus.REJECTED, error=error)


def _json(model: BaseModel, status_code: int = 200) -> Response:
    return Response(
        model.model_dump_json(exclude_none=True), status_code, media_type="application/json"
    )


def _counts(
    answer: type[AnalyticsTrackResponse | MediaEventResponse | PoseFramesResponse],
    counts: tuple[int, int],
) -> Response:
    accepted, duplicates = counts
    return _json(answer(accepted=accepted, duplicates=duplicates))


class _Endpoints:
    def __init__(self, settings: StandInSettings) -> None:
        self.settings = settings

    # -- request plumbing ------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        token = self.settings.bearer_token
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Problem(
                401,
                "a valid bearer token is required",
                headers={"WWW-Authenticate": 'Bearer realm="telemetry"'},
            )

    def _verify_signature(self, request: Request, raw_body: bytes) -> None:
        # Over the body as it arrived, before decompression: what the sender signed.
        verifier = self.settings.verifier
        if verifier is None:
            return
        try:
            verifier.verify(request.headers, raw_body)
        except SignatureError as exc:
            raise self.settings.refuse_signature(exc) from None

    def _check_contract(self, request: Request) -> None:
        version = request.headers.get(CONTRACT_HEADER)
        if version is None:
            return
        if version.partition(".")[0] != CONTRACT_VERSION.partition(".")[0]:
            raise Problem(
                400,
                f"contract version {version!r} is not supported",
                [
                    {
                        "field": f"header {CONTRACT_HEADER}",
                        "message": f"this Telemetry speaks contract {CONTRACT_VERSION}",
                    }
                ],
            )

    async def _body(self, request: Request) -> bytes:
        self._authorize(request)
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise Problem(413, f"the body of {declared} bytes is over the {limit}-byte limit")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Problem(413, f"the body is over the {limit}-byte limit")
        # Who sent it comes first: an unsigned request learns nothing about what else is wrong.
        self._verify_signature(request, bytes(body))
        self._check_contract(request)
        content_type = request.headers.get("content-type", "application/json")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise Problem(415, f"Content-Type {content_type!r} is not application/json")
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise Problem(415, f"Content-Encoding {encoding!r} is not supported (use gzip)")
        if encoding == "gzip":
            return self._gunzip(bytes(body), limit)
        return bytes(body)

    @staticmethod
    def _gunzip(data: bytes, limit: int) -> bytes:
        # Decompress at most limit + 1 bytes: a small bomb must not become a huge buffer.
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            body = decompressor.decompress(data, limit + 1)
            if len(body) > limit:
                raise Problem(413, f"the decompressed body is over the {limit}-byte limit")
            if not decompressor.eof or decompressor.unused_data:
                raise Problem(400, "the gzip body is truncated or has trailing data")
        except zlib.error as exc:
            raise Problem(400, f"the body is not valid gzip: {exc}") from None
        return body

    @staticmethod
    def _validate(model: type[M], body: bytes) -> M:
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            if _is_malformed(exc):
                raise Problem(400, "the body is not a JSON object", _field_errors(exc)) from None
            raise Problem(
                422, f"the body is not a valid {model.__name__}", _field_errors(exc)
            ) from None

    # -- endpoints -------------------------------------------------------------------------

    async def ingest(self, request: Request) -> Response:
        body = await self._body(request)
        try:
            parsed = parse_ingest_request(body)
        except ValidationError as exc:
            raise Problem(400, "malformed ingest envelope", _field_errors(exc)) from None
        entries: list[IngestItem | IngestResult] = []
        for entry in parsed:
            reason = None
            if isinstance(entry, IngestItem):
                reason = self.settings.event_check(entry.event)
            if reason is not None:
                entry = rejection(entry.event_id, f"event: {reason}")
            entries.append(entry)
        results = self.settings.record.ingest(entries)
        return _json(IngestResponse(results=results))

    async def track(self, request: Request) -> Response:
        model = self._validate(AnalyticsTrackRequest, await self._body(request))
        return _counts(AnalyticsTrackResponse, self.settings.record.track(model))

    async def media(self, request: Request) -> Response:
        model = self._validate(MediaEventRequest, await self._body(request))
        try:
            counts = self.settings.record.media(model)
        except SessionConflict as exc:
            raise Problem(
                422,
                "the session belongs to another organization",
                [{"field": "session_id", "message": str(exc)}],
            ) from None
        return _counts(MediaEventResponse, counts)

    async def pose(self, request: Request) -> Response:
        model = self._validate(PoseFramesRequest, await self._body(request))
        return _counts(PoseFramesResponse, self.settings.record.pose(model))

    async def report_error(self, request: Request) -> Response:
        model = self._validate(ErrorReportRequest, await self._body(request))
        duplicate = self.settings.record.report_error(model)
        return _json(ErrorReportResponse(report_id=model.report_id, duplicate=duplicate))

    async def bandwidth(self, request: Request) -> Response:
        self._authorize(request)
        self._verify_signature(request, await request.body())
        self._check_contract(request)
        try:
            query = BandwidthStatsQuery.model_validate(dict(request.query_params))
        except ValidationError as exc:
            raise Problem(422, "invalid bandwidth stats query", _field_errors(exc)) from None
        return _json(self.settings.record.bandwidth(query))

    async def health(self, request: Request) -> Response:
        health = HealthResponse(status=self.settings.health_status, version=__version__)
        return _json(health, 200 if health.serving else 503)


async def _problem_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Problem):
        body: dict[str, Any] = {"error": exc.error, "errors": exc.errors}
        return JSONResponse(body, exc.status_code, headers=exc.headers)
    if isinstance(exc, HTTPException):  # 404 and 405 from the router
        return JSONResponse({"error": exc.detail, "errors": []}, exc.status_code, exc.headers)
    raise exc  # pragma: no cover - only the two types above are registered


def build_app(settings: StandInSettings, middleware: Sequence[Middleware] = ()) -> Starlette:
    """The Starlette app serving every endpoint from ``settings``, behind ``middleware``."""
    endpoints = _Endpoints(settings)
    handler: Callable[[Request, Exception], Awaitable[Response]] = _problem_response
    # Every POST takes a JSON body; the two GETs read the query string or nothing.
    posts = {
        "/v1/audit/ingest": endpoints.ingest,
        "/v1/analytics/track": endpoints.track,
        "/v1/media/events": endpoints.media,
        "/v1/pose/frames": endpoints.pose,
        "/v1/errors/report": endpoints.report_error,
    }
    routes = [Route(path, endpoint, methods=["POST"]) for path, endpoint in posts.items()]
    routes.append(Route("/v1/media/bandwidth/stats", endpoints.bandwidth, methods=["GET"]))
    routes.append(Route("/health", endpoints.health, methods=["GET"]))
    return Starlette(
        routes=routes,
        middleware=list(middleware),
        exception_handlers={Problem: handler, HTTPException: handler},
    )
