from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from auditevt import (
    MAX_ERROR_CONTEXT_ITEMS,
    MAX_ERROR_MESSAGE_LENGTH,
    MAX_STACK_LENGTH,
    DeviceContext,
    ErrorCategory,
    ErrorReportRequest,
    ErrorReportResponse,
    ErrorSeverity,
    NetworkType,
    Platform,
    Pseudonymizer,
    Timestamp,
)

ACTOR = Pseudonymizer(bytes(32), key_id="k1").pseudonymize(42)


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "organization_id": 7,
        "actor": ACTOR,
        "report_id": str(uuid.UUID(int=1)),
        "occurred_at": "2026-11-27T10:11:12.000000001Z",
        "category": "video",
        "severity": "fatal",
        "code": "MEDIA_ERR_DECODE",
        "message": "The video could not be decoded.",
        "stack": "Error: decode\n    at Player.onError (player.js:120:7)",
        "path": "/sessions/live",
        "media_session_id": str(uuid.UUID(int=2)),
        "device": {
            "platform": "ios",
            "app_version": "2026.11.3",
            "os_name": "iOS",
            "os_version": "17.4.1",
            "device_model": "iPad Pro 11",
            "screen_width": 834,
            "screen_height": 1194,
            "network_type": "cellular",
            "effective_connection_type": "3g",
            "downlink_mbps": 1.45,
        },
        "context": {"retry": 2, "codec": "h264", "hardware_decoding": False},
        **overrides,
    }


def errors_at(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as info:
        ErrorReportRequest.model_validate_json(json.dumps(data))
    return [tuple(error["loc"]) for error in info.value.errors()]


def test_error_report_request_reads_a_video_error_with_device_context() -> None:
    report = ErrorReportRequest.model_validate_json(json.dumps(body()))
    assert report.category is ErrorCategory.VIDEO and report.severity is ErrorSeverity.FATAL
    assert report.occurred_at.nanosecond == 1
    assert report.device.platform is Platform.IOS
    assert report.device.network_type is NetworkType.CELLULAR
    assert report.stack is not None and "\n" in report.stack
    assert report.context == {"retry": 2, "codec": "h264", "hardware_decoding": False}


def test_error_report_request_reads_a_network_error() -> None:
    report = ErrorReportRequest.model_validate(
        body(
            category="network",
            code="HTTP_503",
            request_path="/api/v1/exercises",
            http_status=503,
            media_session_id=None,
            stack=None,
        )
    )
    assert report.http_status == 503


def test_error_report_request_round_trips_through_json() -> None:
    report = ErrorReportRequest.model_validate(body())
    assert ErrorReportRequest.model_validate_json(report.model_dump_json()) == report
    assert ErrorReportRequest.model_validate_json(report.model_dump_json(exclude_none=True)) == (
        report
    )


def test_error_report_request_builds_from_python_objects() -> None:
    report = ErrorReportRequest(
        organization_id=7,
        report_id=uuid.uuid4(),
        occurred_at=Timestamp.now(),
        category=ErrorCategory.APP,
        code="TypeError",
        message="x is undefined",
        device=DeviceContext(platform=Platform.WEB, app_version="1.0.0"),
    )
    assert report.severity is ErrorSeverity.ERROR and report.actor is None


def test_error_report_request_keeps_network_fields_for_network_errors() -> None:
    with pytest.raises(ValidationError, match="belong to network errors"):
        ErrorReportRequest.model_validate(body(http_status=500))
    with pytest.raises(ValidationError, match="belong to network errors"):
        ErrorReportRequest.model_validate(body(category="app", request_path="/api"))


@pytest.mark.parametrize("status", [99, 600, "500", 500.0])
def test_error_report_request_refuses_a_bad_http_status(status: Any) -> None:
    assert errors_at(body(category="network", http_status=status)) == [("http_status",)]


def test_error_report_request_bounds_its_text() -> None:
    assert ErrorReportRequest.model_validate(body(message="m" * MAX_ERROR_MESSAGE_LENGTH))
    assert errors_at(body(message="m" * (MAX_ERROR_MESSAGE_LENGTH + 1))) == [("message",)]
    assert errors_at(body(message="")) == [("message",)]
    assert errors_at(body(stack="s" * (MAX_STACK_LENGTH + 1))) == [("stack",)]
    assert errors_at(body(code="has space")) == [("code",)]
    many = {f"k{i}": i for i in range(MAX_ERROR_CONTEXT_ITEMS + 1)}
    assert errors_at(body(context=many)) == [("context",)]


def test_error_report_request_refuses_control_characters_and_lone_surrogates() -> None:
    assert errors_at(body(message="bell\x07")) == [("message",)]
    with pytest.raises(ValidationError):
        ErrorReportRequest.model_validate(body(message="half \ud800 a pair"))


def test_error_report_request_refuses_nan_in_device_context() -> None:
    text = json.dumps(body()).replace('"downlink_mbps": 1.45', '"downlink_mbps": NaN')
    with pytest.raises(ValidationError) as info:
        ErrorReportRequest.model_validate_json(text)
    assert info.value.errors()[0]["loc"] == ("device", "downlink_mbps")


def test_error_report_request_requires_device_and_organization() -> None:
    for field in ("device", "organization_id", "category", "report_id"):
        data = body()
        del data[field]
        assert errors_at(data) == [(field,)]


def test_error_report_request_refuses_unknown_fields() -> None:
    assert errors_at(body(user_id=42)) == [("user_id",)]
    assert errors_at(body(email="a@example.org")) == [("email",)]


def test_error_report_response_reads_the_answer() -> None:
    answer = ErrorReportResponse.model_validate_json(
        f'{{"report_id": "{uuid.UUID(int=1)}", "duplicate": true}}'
    )
    assert answer.duplicate
    assert not ErrorReportResponse(report_id=uuid.UUID(int=1)).duplicate
