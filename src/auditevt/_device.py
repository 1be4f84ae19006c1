"""``DeviceContext``: what the frontend knows about the device, for media and error events.

Deliberately coarse: platform, versions, screen size and network class help explain a video
stall or a crash, while a full User-Agent string, a locale or an IP address would add
fingerprinting power and no diagnostic value, so they are not fields.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field, Strict

from auditevt._fields import FiniteFloat, Label, Payload

__all__ = [
    "MAX_SCREEN_PIXELS",
    "DeviceContext",
    "EffectiveConnectionType",
    "NetworkType",
    "Platform",
]

#: Largest screen side accepted, in CSS pixels.
MAX_SCREEN_PIXELS = 16_384

ScreenPixels = Annotated[int, Strict(), Field(ge=1, le=MAX_SCREEN_PIXELS)]


class Platform(enum.StrEnum):
    """Where the frontend runs."""

    WEB = "web"
    IOS = "ios"
    ANDROID = "android"
    DESKTOP = "desktop"


class NetworkType(enum.StrEnum):
    """The kind of link, as the Network Information API reports it."""

    WIFI = "wifi"
    CELLULAR = "cellular"
    ETHERNET = "ethernet"
    OTHER = "other"
    UNKNOWN = "unknown"


class EffectiveConnectionType(enum.StrEnum):
    """The browser's estimate of link quality (``navigator.connection.effectiveType``)."""

    SLOW_2G = "slow-2g"
    G2 = "2g"
    G3 = "3g"
    G4 = "4g"


class DeviceContext(Payload):
    """The device and network an event came from; every field but two is optional."""

    platform: Platform
    app_version: Label = Field(description="The frontend build, e.g. 2026.11.3.")
    os_name: Label | None = None
    os_version: Label | None = None
    browser_name: Label | None = None
    browser_version: Label | None = None
    device_model: Label | None = Field(default=None, description="e.g. 'iPad Pro 11'.")
    screen_width: ScreenPixels | None = Field(default=None, description="CSS pixels.")
    screen_height: ScreenPixels | None = Field(default=None, description="CSS pixels.")
    network_type: NetworkType | None = None
    effective_connection_type: EffectiveConnectionType | None = None
    downlink_mbps: Annotated[FiniteFloat, Field(ge=0.0, le=100_000.0)] | None = Field(
        default=None, description="The browser's downlink estimate, in Mbit/s."
    )
