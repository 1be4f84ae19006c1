"""The PostgreSQL roles of one database: ``database_roles("core")`` names them.

Roles belong to the whole cluster, so a role shared by every database that runs the migrations
(``auditevt_app`` of revision 0001) would carry each database's privileges to all the others.
Revision 0002 therefore creates two NOLOGIN group roles *per database*, named after it, grants
them that database's tables only, and makes them the database's only grantees of ``CONNECT``
besides its owner (and the migrating role); revision 0003 adds a third, the sealer's.

The name is the prefix and the database name, verbatim (quoted where SQL needs it). PostgreSQL
cuts identifiers at 63 bytes, so a name that would not fit in 62 becomes exactly 63 bytes: the
database name cut short, then ``_`` and 12 hex digits of its SHA-256. Plain names are at most
62 bytes and shortened ones exactly 63, so the two kinds never collide. This rule is what
revision 0002 created the roles by: changing it takes a migration.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = [
    "APP_ROLE_PREFIX",
    "RELAY_ROLE_PREFIX",
    "SEALER_ROLE_PREFIX",
    "DatabaseRoles",
    "database_roles",
]

APP_ROLE_PREFIX = "auditevt_app_"
RELAY_ROLE_PREFIX = "auditevt_relay_"
SEALER_ROLE_PREFIX = "auditevt_sealer_"

_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
_DIGEST_HEX = 12


@dataclass(frozen=True, slots=True)
class DatabaseRoles:
    """The NOLOGIN group roles the migrations create for one PostgreSQL database."""

    database: str
    """The database they are for (``current_database()``)."""
    app: str
    """The application's role: make the Core API's login role a member of it."""
    relay: str
    """A stand-alone relay's role: the outbox only, and no change to a payload."""
    sealer: str
    """The sealer's and the verifier's role (revision 0003): reads every organization's rows."""


def _role_name(prefix: str, database: str) -> str:
    name = prefix + database
    if len(name.encode()) < _MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(database.encode()).hexdigest()[:_DIGEST_HEX]
    room = _MAX_IDENTIFIER_BYTES - len(prefix) - 1 - _DIGEST_HEX
    cut = database.encode()[:room].decode(errors="ignore")  # never half a character
    padding = "_" * (room - len(cut.encode()))
    return f"{prefix}{cut}{padding}_{digest}"


def database_roles(database: str) -> DatabaseRoles:
    """The roles the migrations create for ``database`` (a database name, not a URL).

    ``database_roles("core").app`` is ``"auditevt_app_core"``; grant it to the application's
    login role (``GRANT auditevt_app_core TO core_api``). Roles outlive a dropped database:
    drop all three with it.
    """
    if not isinstance(database, str) or not database or "\x00" in database:
        raise ValueError(f"database={database!r} must be a non-empty database name")
    if len(database.encode()) > _MAX_IDENTIFIER_BYTES:
        raise ValueError(f"database={database!r} is longer than PostgreSQL's 63 bytes")
    return DatabaseRoles(
        database=database,
        app=_role_name(APP_ROLE_PREFIX, database),
        relay=_role_name(RELAY_ROLE_PREFIX, database),
        sealer=_role_name(SEALER_ROLE_PREFIX, database),
    )
