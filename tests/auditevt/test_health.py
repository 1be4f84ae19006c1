from __future__ import annotations

import pytest
from pydantic import ValidationError

from auditevt import CONTRACT_VERSION, MAX_HEALTH_CHECKS, HealthResponse, HealthStatus


def test_health_response_defaults_to_this_contract_version() -> None:
    health = HealthResponse(status=HealthStatus.OK)
    assert health.contract_version == CONTRACT_VERSION
    assert health.checks == {}
    assert health.serving


def test_health_response_reads_checks_and_ignores_new_fields() -> None:
    health = HealthResponse.model_validate_json(
        '{"status": "degraded", "contract_version": "1.3", "version": "telemetry 4.2.0",'
        ' "checks": {"database": "ok", "geoip": "down"}, "uptime_s": 12}'
    )
    assert health.status is HealthStatus.DEGRADED and health.serving
    assert health.checks["geoip"] is HealthStatus.DOWN
    assert HealthResponse.model_validate_json(health.model_dump_json()) == health


def test_health_response_down_is_not_serving() -> None:
    assert not HealthResponse(status="down").serving


@pytest.mark.parametrize(
    "data",
    [
        {"status": "fine"},
        {"status": "ok", "contract_version": "1"},
        {"status": "ok", "checks": {"db": "maybe"}},
        {"status": "ok", "checks": {"bad name": "ok"}},
        {"status": "ok", "checks": {f"c{i}": "ok" for i in range(MAX_HEALTH_CHECKS + 1)}},
    ],
)
def test_health_response_refuses_bad_data(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        HealthResponse.model_validate(data)
