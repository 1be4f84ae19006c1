from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from auditevt import (
    MAX_LABEL_LENGTH,
    MAX_SCREEN_PIXELS,
    DeviceContext,
    EffectiveConnectionType,
    NetworkType,
    Platform,
)


def test_device_context_needs_only_platform_and_app_version() -> None:
    device = DeviceContext.model_validate_json('{"platform": "android", "app_version": "3.1"}')
    assert device.platform is Platform.ANDROID
    assert device.network_type is None and device.screen_width is None


def test_device_context_reads_every_field() -> None:
    device = DeviceContext.model_validate(
        {
            "platform": "web",
            "app_version": "2026.11.3",
            "os_name": "macOS",
            "os_version": "14.5",
            "browser_name": "Mobile Safari",
            "browser_version": "17.4",
            "device_model": "MacBook Air",
            "screen_width": 1440,
            "screen_height": 900,
            "network_type": "wifi",
            "effective_connection_type": "slow-2g",
            "downlink_mbps": 0.35,
        }
    )
    assert device.effective_connection_type is EffectiveConnectionType.SLOW_2G
    assert device.network_type is NetworkType.WIFI
    assert DeviceContext.model_validate_json(device.model_dump_json()) == device


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("platform", "symbian"),
        ("app_version", ""),
        ("app_version", "v" * (MAX_LABEL_LENGTH + 1)),
        ("os_name", "tab\x1b"),
        ("screen_width", 0),
        ("screen_width", MAX_SCREEN_PIXELS + 1),
        ("screen_height", 900.0),
        ("network_type", "5g"),
        ("effective_connection_type", "5g"),
        ("downlink_mbps", -1),
        ("downlink_mbps", "fast"),
        ("user_agent", "Mozilla/5.0"),
        ("ip_address", "203.0.113.9"),
    ],
)
def test_device_context_refuses_a_bad_field(field: str, value: Any) -> None:
    data = {"platform": "web", "app_version": "1", field: value}
    with pytest.raises(ValidationError) as info:
        DeviceContext.model_validate(data)
    assert [error["loc"] for error in info.value.errors()] == [(field,)]


def test_device_context_refuses_infinity() -> None:
    with pytest.raises(ValidationError):
        DeviceContext.model_validate_json(
            '{"platform": "web", "app_version": "1", "downlink_mbps": Infinity}'
        )
