"""The PostgreSQL statements that write an audit row and its outbox row.

Names are schema-qualified (see _tables.py): a TEMP table of the same name on a pooled connection
would otherwise take the write. One statement: draw the id, insert the audit row, insert the
outbox row. audit_log is not RETURNING anything, on purpose: with forced RLS a RETURNING clause
would have to pass the org-scoped SELECT policy, which a writer serving every organization does
not. The event JSON travels once and is used twice.

Two forms. ``FROM_JSON`` sends three values (the event id, the event JSON, the row hash) and lets
the database read the columns out of the JSON: three parameters to adapt instead of seventeen,
on the path every audited request takes. jsonb cannot hold U+0000, so an event whose JSON
escapes one (:func:`from_json_ok` is false) takes ``FULL``, whose columns get U+FFFD instead.
Both give a row the same columns (tests/audit_middleware/storage/test_statements.py).
"""

from __future__ import annotations

__all__ = [
    "FROM_JSON_BOUND",
    "FROM_JSON_PARAMETERS",
    "FROM_JSON_PREPARABLE",
    "FROM_JSON_TYPES",
    "FULL",
    "from_json_ok",
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

FROM_JSON_PARAMETERS = ("event_id", "event_json", "row_hash")
"""The values ``FROM_JSON`` takes, in the order of ``FROM_JSON_PREPARABLE``'s $1, $2, $3."""
FROM_JSON_TYPES = "uuid, text, bytea"
FROM_JSON_BOUND = _FROM_JSON.format_map({name: f"%({name})s" for name in FROM_JSON_PARAMETERS})
"""With named placeholders, for a driver-bound execute (or psycopg's client-side binding)."""
FROM_JSON_PREPARABLE = _FROM_JSON.format_map(
    {name: f"${number}" for number, name in enumerate(FROM_JSON_PARAMETERS, 1)}
)
"""With positional parameters, for ``PREPARE name (FROM_JSON_TYPES) AS ...``."""


def from_json_ok(event_json: str) -> bool:
    """Whether the database can read ``event_json`` as jsonb (it holds no ``\\u0000`` escape;
    text that merely looks like one takes the other form too, which is as correct)."""
    return "\\u0000" not in event_json
