"""Helpers of the integrity tests (a module of its own: ``conftest`` is the root one's name)."""

from __future__ import annotations

from audit_middleware import SealerConfig

# Short: a test's late writer holds the horizon back on purpose; a pass gives up soon.
FAST = SealerConfig(settle=0.2, poll_interval=0.005)
