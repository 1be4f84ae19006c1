"""The sealer's PostgreSQL role in one database: ``sealer_role("core")``."""

from __future__ import annotations

from audit_middleware.storage._roles import SEALER_ROLE_PREFIX, _role_name

__all__ = ["SEALER_ROLE_PREFIX", "sealer_role"]


def sealer_role(database: str) -> str:
    """The NOLOGIN role migration 0003 creates for ``database``, named as revision 0002 names
    its roles: grant it to the sealer's (and the verifier's) login role.
    """
    if not isinstance(database, str) or not database or "\x00" in database:
        raise ValueError(f"database={database!r} must be a non-empty database name")
    return _role_name(SEALER_ROLE_PREFIX, database)
