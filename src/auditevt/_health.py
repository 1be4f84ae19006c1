"""``GET /health``: what the load balancer (and a curious operator) sees.

Answer 200 when ``status`` is ``ok`` or ``degraded`` (still serving) and 503 when it is
``down``. ``checks`` holds at most ``MAX_HEALTH_CHECKS`` (32) named checks.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field, StringConstraints

from auditevt.__version__ import CONTRACT_VERSION
from auditevt._fields import Label, Name, Response

__all__ = ["MAX_HEALTH_CHECKS", "HealthResponse", "HealthStatus"]

#: Most entries in ``HealthResponse.checks``.
MAX_HEALTH_CHECKS = 32


class HealthStatus(enum.StrEnum):
    """The state of the service or of one of its dependencies."""

    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


class HealthResponse(Response):
    """The body of ``GET /health``."""

    status: HealthStatus = Field(
        description="ok and degraded (still serving) are answered with HTTP 200, down with 503."
    )
    contract_version: Annotated[str, StringConstraints(pattern=r"^\d+\.\d+$")] = Field(
        default=CONTRACT_VERSION, description="The auditevt contract the service speaks."
    )
    version: Label | None = Field(default=None, description="The service's own version.")
    checks: Annotated[dict[Name, HealthStatus], Field(max_length=MAX_HEALTH_CHECKS)] = Field(
        default_factory=dict, description="Dependencies by name, e.g. database: ok."
    )

    @property
    def serving(self) -> bool:
        """True unless ``down``: what decides between HTTP 200 and 503."""
        return self.status is not HealthStatus.DOWN
