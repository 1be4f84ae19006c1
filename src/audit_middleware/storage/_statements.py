"""The PostgreSQL statements that write an audit row and its outbox row.

Names are schema-qualified (see _tables.py): a TEMP table of the same name on a pooled connection
would otherwise take the write. One statement: draw the id, insert the audit row, insert the
outbox row. audit_log is not RETURNING anything, on purpose: with forced RLS a RETURNING clause
would have to pass the org-scoped SELECT policy, which a writer serving every organization does
not. The event JSON travels once and is used twice.

Two forms for a transaction of its own (``AuditStore.write()``). ``FROM_JSON`` sends three values
(the event id, the event JSON, the row hash) and lets the database read the columns out of the
JSON: three parameters to adapt instead of seventeen. jsonb cannot hold U+0000, so an event
whose JSON escapes one, or whose timestamp's offset PostgreSQL cannot read (:func:`from_json_ok`
is false), takes ``FULL``, whose columns get U+FFFD instead.
Both give a row the same columns (tests/audit_middleware/storage/test_statements.py).

The request's own transaction (transactional mode) binds ``FULL_PREPARABLE``'s seventeen values
through the extended protocol instead (see _transaction.commit_prepared): bound values cost the
database no parsing of literals and no JSON parse of the event, only of ``changes``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC
from typing import Any
from uuid import UUID

import pydantic_core

from audit_middleware.integrity._rowhash import row_hash_of_bytes
from auditevt import Event, Timestamp

__all__ = [
    "BOUND_FORMATS",
    "FROM_JSON_BOUND",
    "FULL",
    "FULL_PARAMETERS",
    "FULL_PREPARABLE",
    "bound_values",
    "changes_json",
    "from_json_ok",
    "pg_text",
]

FULL = """\
WITH v AS MATERIALIZED (
  SELECT nextval('public.audit_log_id_seq'::regclass) AS id, %(event_id)s::uuid AS event_id,
         %(organization_id)s::bigint AS organization_id, %(event_json)s::text AS event_json
), a AS (
  INSERT INTO public.audit_log (id, event_id, action, entity_type, entity_id, user_id,
                                organization_id, ip_address, user_agent, request_path,
                                status_code, "timestamp", changes, action_context,
                                break_glass_id, impersonation_id, event_json, row_hash)
  SELECT v.id, v.event_id, %(action)s::varchar, %(entity_type)s::text, %(entity_id)s::bigint,
         %(user_id)s::bigint, v.organization_id, %(ip_address)s::text, %(user_agent)s::text,
         %(request_path)s::text, %(status_code)s::integer, %(timestamp)s::timestamptz,
         %(changes)s::jsonb, %(action_context)s::varchar, %(break_glass_id)s::bigint,
         %(impersonation_id)s::bigint, v.event_json, %(row_hash)s::bytea
  FROM v
)
INSERT INTO public.audit_outbox (event_id, audit_id, organization_id, payload)
SELECT v.event_id, v.id, v.organization_id, v.event_json FROM v"""

_NAMED = re.compile(r"%\((\w+)\)s")

FULL_PARAMETERS = tuple(dict.fromkeys(_NAMED.findall(FULL)))
"""``FULL``'s values in the order of ``FULL_PREPARABLE``'s $1, $2..."""
FULL_PREPARABLE = _NAMED.sub(lambda match: f"${FULL_PARAMETERS.index(match[1]) + 1}", FULL).encode()
"""``FULL`` with positional parameters, for the extended protocol's Parse."""

# Go omits entity_id when 0 and the optional fields when absent (->> gives NULL); the
# timestamp keeps microseconds, truncated as Timestamp.to_datetime() truncates them.
_FROM_JSON = """\
WITH v AS MATERIALIZED (
  SELECT nextval('public.audit_log_id_seq'::regclass) AS id, {event_id}::uuid AS event_id,
         given.t AS event_json, given.t::jsonb AS j
  FROM (SELECT {event_json}::text AS t) AS given
), a AS (
  INSERT INTO public.audit_log (id, event_id, action, entity_type, entity_id, user_id,
                                organization_id, ip_address, user_agent, request_path,
                                status_code, "timestamp", changes, action_context,
                                break_glass_id, impersonation_id, event_json, row_hash)
  SELECT v.id, v.event_id, v.j->>'action', v.j->>'entity_type',
         coalesce((v.j->>'entity_id')::bigint, 0), (v.j->>'user_id')::bigint,
         (v.j->>'organization_id')::bigint, v.j->>'ip_address', v.j->>'user_agent',
         v.j->>'request_path', (v.j->>'status_code')::integer,
         regexp_replace(v.j->>'timestamp', '(\\.[0-9]{{6}})[0-9]+', '\\1')::timestamptz,
         v.j->'changes', v.j->>'action_context', (v.j->>'break_glass_id')::bigint,
         (v.j->>'impersonation_id')::bigint, v.event_json, {row_hash}::bytea
  FROM v
)
INSERT INTO public.audit_outbox (event_id, audit_id, organization_id, payload)
SELECT v.event_id, v.id, (v.j->>'organization_id')::bigint, v.event_json FROM v"""

FROM_JSON_BOUND = _FROM_JSON.format_map(
    {name: f"%({name})s" for name in ("event_id", "event_json", "row_hash")}
)
"""``FROM_JSON`` with named placeholders for its three values, for a driver-bound execute."""


def from_json_ok(event: Event, event_json: str) -> bool:
    """Whether the database can read ``event_json`` as jsonb (it holds no ``\\u0000`` escape;
    text that merely looks like one takes the other form too, which is as correct) and its
    timestamp as timestamptz (PostgreSQL reads offsets up to 15:59; Go writes up to 23:59)."""
    timestamp = str(event.timestamp)
    offset_ok = timestamp[-1] == "Z" or timestamp[-5:-3] < "16"
    return offset_ok and "\\u0000" not in event_json


# PostgreSQL text and jsonb cannot hold U+0000; the column copies get U+FFFD instead (event_json
# keeps the exact event, escaped). A request path of "/a%00" must not make auditing fail.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_JSON_NUL_BYTES = re.compile(_JSON_NUL.pattern.encode())


def pg_text(value: str) -> str:
    """``value`` as a text column holds it: U+0000 becomes U+FFFD."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def changes_json(changes: Any, postgresql: bool) -> str | None:
    """``changes`` as JSON text for the ``changes`` column (jsonb on PostgreSQL)."""
    if changes is None:
        return None
    encoded = json.dumps(changes, ensure_ascii=False, separators=(",", ":"))
    if postgresql and "\\u0000" in encoded:
        return _JSON_NUL.sub(r"\1\\ufffd", encoded)
    return encoded


BOUND_FORMATS = tuple(1 if name in ("event_id", "row_hash") else 0 for name in FULL_PARAMETERS)
"""The wire format of each of :func:`bound_values`: binary for the uuid and the hash, else text."""


def _timestamp_text(timestamp: Timestamp) -> bytes:
    # Microseconds, truncated as Timestamp.to_datetime() truncates them; in UTC, because
    # PostgreSQL reads offsets of at most 15:59 and Go writes up to 23:59.
    text = str(timestamp)
    if text[-1] == "Z" and not text.startswith("0000"):
        return (text[:26] + "Z").encode() if len(text) > 27 else text.encode()
    return timestamp.to_datetime().astimezone(UTC).isoformat().encode()


def bound_values(event: Event, event_id: UUID, event_json: str) -> list[bytes | None]:
    """``FULL_PREPARABLE``'s values for ``event`` as the extended protocol carries them (in
    :data:`BOUND_FORMATS`). Raises ``ValueError`` for a timestamp PostgreSQL cannot hold."""
    changes = event.changes
    if changes is not None:
        changes = pydantic_core.to_json(changes)
        if b"\\u0000" in changes:
            changes = _JSON_NUL_BYTES.sub(rb"\1\\ufffd", changes)
    context, break_glass, impersonation = (
        event.action_context,
        event.break_glass_id,
        event.impersonation_id,
    )
    id_bytes, json_bytes = event_id.bytes, event_json.encode()
    return [
        id_bytes,
        b"%d" % event.organization_id,
        json_bytes,
        event.action.encode(),
        pg_text(event.entity_type).encode(),
        b"%d" % event.entity_id,
        b"%d" % event.user_id,
        pg_text(event.ip_address).encode(),
        pg_text(event.user_agent).encode(),
        pg_text(event.request_path).encode(),
        b"%d" % event.status_code,
        _timestamp_text(event.timestamp),
        changes,
        None if context is None else str(context).encode(),
        None if break_glass is None else b"%d" % break_glass,
        None if impersonation is None else b"%d" % impersonation,
        row_hash_of_bytes(id_bytes, json_bytes),
    ]
