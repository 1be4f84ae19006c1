"""audit_log partitioned by month on PostgreSQL; legal holds and a retention log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

The partition key is ``event_id``: a UUIDv7 whose first 48 bits are the Unix milliseconds of the
write, so a month of writes is one contiguous range of ids and ``event_id`` stays unique across
the whole table (a unique index on a partitioned table must hold the partition key). Events
whose id is not time-ordered (written with an id of the caller's) land in ``audit_log_default``.

The existing table is converted in place: renamed, its rows copied into the partitioned table
(the same columns, whatever earlier revisions added), then dropped. Row-level security (enabled,
forced, the same policies), the append-only triggers and the grants are on the parent and on
every partition; no role but the owner is granted anything on a partition, so nothing can be
read or changed through a partition that could not be through ``audit_log``.

``auditevt_ensure_partitions(from, months)`` (SECURITY DEFINER, so the relay and maintenance
jobs may call it without owning the table) creates the monthly partitions ahead of time.
SQLite is left as it is: it has no partitions, and keeps every row.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: Months of partitions created ahead of the current one.
MONTHS_AHEAD = 3

# A table's row-level security policies, and the CREATE POLICY clauses that restate one of
# them: both the hardening of each new partition and the copy onto a rebuilt audit_log use them.
_POLICIES_OF = """    SELECT p.polname, p.polcmd, pg_get_expr(p.polqual, p.polrelid) AS qual,
           pg_get_expr(p.polwithcheck, p.polrelid) AS with_check, p.polpermissive,
           (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::regrole::text END, ', ')
                   FROM unnest(p.polroles) AS r) AS roles
    FROM pg_policy p WHERE p.polrelid = '@TABLE'::regclass"""
_POLICY_CLAUSES = """CASE WHEN policy.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
CASE policy.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                   WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
policy.roles,
CASE WHEN policy.qual IS NULL THEN '' ELSE ' USING (' || policy.qual || ')' END,
CASE WHEN policy.with_check IS NULL THEN ''
     ELSE ' WITH CHECK (' || policy.with_check || ')' END);"""


def _policy_clauses(indent: str) -> str:
    return "\n".join(indent + line for line in _POLICY_CLAUSES.splitlines())


_PARTITION_FUNCTIONS = [
    # The bounds of a month as UUIDv7 values: the month's first millisecond, then zeros.
    """CREATE FUNCTION auditevt_month_uuid(month timestamptz) RETURNS uuid
       LANGUAGE sql STABLE STRICT
       SET search_path = pg_catalog AS $$
  SELECT (lpad(to_hex((extract(epoch FROM date_trunc('month', month, 'UTC')) * 1000)::bigint),
               12, '0') || '00000000000000000000')::uuid
$$""",
    # One month's partition, named audit_log_YYYY_MM, with the parent's row-level security
    # (enabled, forced, the same policies) and the statement-level append-only trigger (row
    # triggers are inherited from the parent; statement triggers are not). Nothing is granted
    # on it: roles reach rows only through audit_log.
    """CREATE FUNCTION auditevt_ensure_partition(month timestamptz) RETURNS text
       LANGUAGE plpgsql SECURITY DEFINER
       SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  parent regclass := '@S.audit_log'::regclass;
  schema_name text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n
                       ON n.oid = c.relnamespace WHERE c.oid = parent);
  start_at timestamptz := date_trunc('month', month, 'UTC');
  name text := 'audit_log_' || to_char(start_at AT TIME ZONE 'UTC', 'YYYY_MM');
  low uuid := @S.auditevt_month_uuid(start_at);
  high uuid := @S.auditevt_month_uuid(start_at + interval '1 month');
BEGIN
  IF to_regclass(format('%I.%I', schema_name, name)) IS NOT NULL THEN
    RETURN name;
  END IF;
  BEGIN
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                   schema_name, name, parent, low, high);
  EXCEPTION WHEN check_violation THEN
    RAISE EXCEPTION 'audit_log_default holds rows of the month of %: partition % cannot be '
                    'created', start_at, name
      USING HINT = 'partitions are made ahead of time (auditevt partitions); rows that landed in '
                   'the default partition must be moved by the table owner';
  END;
  PERFORM @S.auditevt_harden_partition(format('%I.%I', schema_name, name)::regclass);
  RETURN name;
END
$$""",
    """CREATE FUNCTION auditevt_harden_partition(partition regclass) RETURNS void
       LANGUAGE plpgsql SECURITY DEFINER
       SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  policy record;
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', partition);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', partition);
  FOR policy IN
"""
    + _POLICIES_OF.replace("@TABLE", "@S.audit_log")
    + """
  LOOP
    IF NOT EXISTS (SELECT FROM pg_policy WHERE polrelid = partition
                   AND polname = policy.polname) THEN
      EXECUTE format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s', policy.polname, partition,
"""
    + _policy_clauses("        ")
    + """
    END IF;
  END LOOP;
  IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = partition
                 AND tgname = 'audit_log_append_only_statement') THEN
    EXECUTE format('CREATE TRIGGER audit_log_append_only_statement BEFORE UPDATE OR DELETE OR '
                   'TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION '
                   '@S.auditevt_refuse_change()', partition);
  END IF;
END
$$""",
    # The partitions from `from_month` up to `months` months after the current one.
    """CREATE FUNCTION auditevt_ensure_partitions(from_month timestamptz, months integer)
       RETURNS SETOF text LANGUAGE plpgsql SECURITY DEFINER
       SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  month timestamptz := date_trunc('month', least(from_month, now()), 'UTC');
  last_month timestamptz := date_trunc('month', now(), 'UTC') + make_interval(months => months);
BEGIN
  WHILE month <= last_month LOOP
    RETURN NEXT @S.auditevt_ensure_partition(month);
    month := month + interval '1 month';
  END LOOP;
END
$$""",
]

# What the retention command keeps to itself: organizations whose rows must not be removed,
# and what each removal took away. Both append-only in spirit; holds are lifted by deleting.
_RETENTION_TABLES = [
    """CREATE TABLE public.audit_legal_hold (
         organization_id bigint PRIMARY KEY,
         reason text NOT NULL,
         placed_by text NOT NULL DEFAULT current_user,
         placed_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE public.audit_retention_log (
         id bigserial PRIMARY KEY,
         partition_name text NOT NULL,
         range_start timestamptz NOT NULL,
         range_end timestamptz NOT NULL,
         row_count bigint NOT NULL,
         min_id bigint,
         max_id bigint,
         ids_sha256 bytea,
         exported_to text,
         removed_by text NOT NULL DEFAULT current_user,
         removed_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TRIGGER audit_retention_log_append_only
         BEFORE UPDATE OR DELETE OR TRUNCATE ON public.audit_retention_log
         FOR EACH STATEMENT EXECUTE FUNCTION public.auditevt_refuse_change()""",
]


# Recreate a replaced table's policies and grants (table and column grants) on audit_log,
# whatever earlier revisions made them.
_COPY_SECURITY = (
    """DO $$
DECLARE
  policy record;
  grant_row record;
BEGIN
  FOR policy IN
"""
    + _POLICIES_OF.replace("@TABLE", "public.@SOURCE")
    + """
  LOOP
    EXECUTE format('CREATE POLICY %I ON public.audit_log AS %s FOR %s TO %s%s%s', policy.polname,
"""
    + _policy_clauses("      ")
    + """
  END LOOP;
  FOR grant_row IN
    SELECT a.grantee, string_agg(a.privilege_type, ', ') AS privileges
    FROM pg_class c, aclexplode(c.relacl) a
    WHERE c.oid = 'public.@SOURCE'::regclass AND a.grantee <> c.relowner
    GROUP BY a.grantee
  LOOP
    EXECUTE format('GRANT %s ON public.audit_log TO %s', grant_row.privileges,
                   CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                        ELSE grant_row.grantee::regrole::text END);
  END LOOP;
  FOR grant_row IN
    SELECT a.grantee, a.privilege_type, string_agg(quote_ident(att.attname), ', ') AS columns
    FROM pg_attribute att, aclexplode(att.attacl) a
    WHERE att.attrelid = 'public.@SOURCE'::regclass AND att.attacl IS NOT NULL
    GROUP BY a.grantee, a.privilege_type
  LOOP
    EXECUTE format('GRANT %s (%s) ON public.audit_log TO %s', grant_row.privilege_type,
                   grant_row.columns,
                   CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                        ELSE grant_row.grantee::regrole::text END);
  END LOOP;
END
$$"""
)


# Recreate a replaced table's other indexes (the reader's, and any a DBA added) on audit_log,
# under their own names; the replaced table's copies are renamed out of the way first.
_COPY_INDEXES = """
DO $$
DECLARE
  index_row record;
BEGIN
  FOR index_row IN
    SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indrelid = 'public.@SOURCE'::regclass AND NOT i.indisprimary
      AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)
  LOOP
    EXECUTE format('ALTER INDEX public.%I RENAME TO %I', index_row.name,
                   left('old_' || md5(index_row.name || clock_timestamp()::text), 63));
    EXECUTE replace(index_row.definition, ' ON public.@SOURCE ', ' ON public.audit_log ');
  END LOOP;
END
$$"""


def _copy_security(source: str) -> str:
    return _COPY_SECURITY.replace("@SOURCE", source)


def _append_only_triggers() -> None:
    op.execute(
        "CREATE TRIGGER audit_log_append_only_statement BEFORE UPDATE OR DELETE OR TRUNCATE"
        " ON public.audit_log FOR EACH STATEMENT EXECUTE FUNCTION public.auditevt_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_append_only_row BEFORE UPDATE OR DELETE"
        " ON public.audit_log FOR EACH ROW EXECUTE FUNCTION public.auditevt_refuse_change()"
    )


def _schema() -> str:
    # Functions run with a fixed search_path, so they name the schema they were made in.
    name = op.get_bind().exec_driver_sql("SELECT quote_ident(current_schema())").scalar()
    return str(name)


def _convert() -> None:
    schema = _schema()
    op.execute("ALTER TABLE public.audit_log RENAME TO audit_log_unpartitioned")
    op.execute(
        "ALTER TABLE public.audit_log_unpartitioned RENAME CONSTRAINT audit_log_pkey"
        " TO audit_log_unpartitioned_pkey"
    )
    op.execute(
        "ALTER TABLE public.audit_log_unpartitioned RENAME CONSTRAINT audit_log_event_id_key"
        " TO audit_log_unpartitioned_event_id_key"
    )
    # The sequence goes with the table it is owned by: keep it for the new one.
    op.execute("ALTER SEQUENCE public.audit_log_id_seq OWNED BY NONE")
    op.execute(
        "CREATE TABLE public.audit_log (LIKE public.audit_log_unpartitioned INCLUDING DEFAULTS"
        " INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE (event_id)"
    )
    op.execute("ALTER SEQUENCE public.audit_log_id_seq OWNED BY public.audit_log.id")
    op.execute(
        "ALTER TABLE public.audit_log ADD CONSTRAINT audit_log_pkey"
        " PRIMARY KEY (id, event_id)"
    )
    op.execute(
        "ALTER TABLE public.audit_log ADD CONSTRAINT audit_log_event_id_key"
        " UNIQUE (event_id)"
    )
    op.execute(_COPY_INDEXES.replace("@SOURCE", "audit_log_unpartitioned"))
    op.execute("CREATE TABLE public.audit_log_default PARTITION OF public.audit_log DEFAULT")
    for statement in _PARTITION_FUNCTIONS:
        op.execute(statement.replace("@S.", f"{schema}."))
    # Partitions from the oldest row's month; rows whose id is not time-ordered go to default.
    # The owner reads its own table through forced RLS only with it lifted for this copy.
    op.execute("ALTER TABLE public.audit_log_unpartitioned NO FORCE ROW LEVEL SECURITY")
    op.execute(f"""
DO $$
DECLARE
  oldest timestamptz;
BEGIN
  SELECT to_timestamp(min(('x' || substr(replace(event_id::text, '-', ''), 1, 12))::bit(48)
                          ::bigint) / 1000.0)
  INTO oldest
  FROM public.audit_log_unpartitioned
  WHERE substr(event_id::text, 15, 1) = '7';
  PERFORM public.auditevt_ensure_partitions(coalesce(oldest, now()), {MONTHS_AHEAD});
END
$$""")
    op.execute("INSERT INTO public.audit_log SELECT * FROM public.audit_log_unpartitioned")
    # Security, as the old table had it: the same policies, triggers and grants.
    op.execute("ALTER TABLE public.audit_log ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE public.audit_log FORCE ROW LEVEL SECURITY")
    op.execute(_copy_security("audit_log_unpartitioned"))
    _append_only_triggers()
    # Partitions made before the parent had its policies get them now.
    op.execute("""
SELECT public.auditevt_harden_partition(inhrelid::regclass)
FROM pg_inherits WHERE inhparent = 'public.audit_log'::regclass""")
    op.execute("DROP TABLE public.audit_log_unpartitioned")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _convert()
    for statement in _RETENTION_TABLES:
        op.execute(statement)
    # Callers of the partition functions: the app and relay roles that may use audit_log.
    op.execute("""
DO $$
DECLARE
  grantee oid;
BEGIN
  FOR grantee IN
    SELECT DISTINCT a.grantee FROM pg_class c, aclexplode(c.relacl) a
    WHERE c.oid IN ('public.audit_log'::regclass, 'public.audit_outbox'::regclass)
      AND a.grantee NOT IN (0, c.relowner)
  LOOP
    EXECUTE format('GRANT EXECUTE ON FUNCTION auditevt_ensure_partitions(timestamptz, integer)'
                   ' TO %s', grantee::regrole::text);
  END LOOP;
END
$$""")
    # Who verifies seals reads the retention log too (it explains rows retention removed).
    op.execute("""
DO $$
DECLARE
  grantee oid;
BEGIN
  IF to_regclass('public.audit_seals') IS NULL THEN
    RETURN;
  END IF;
  FOR grantee IN
    SELECT DISTINCT a.grantee FROM pg_class c, aclexplode(c.relacl) a
    WHERE c.oid = 'public.audit_seals'::regclass AND a.privilege_type = 'SELECT'
      AND a.grantee NOT IN (0, c.relowner)
  LOOP
    EXECUTE format('GRANT SELECT ON public.audit_retention_log TO %s', grantee::regrole::text);
  END LOOP;
END
$$""")
    op.execute("REVOKE EXECUTE ON FUNCTION auditevt_ensure_partition(timestamptz) FROM PUBLIC")
    op.execute("REVOKE EXECUTE ON FUNCTION auditevt_harden_partition(regclass) FROM PUBLIC")
    op.execute(
        "REVOKE EXECUTE ON FUNCTION auditevt_ensure_partitions(timestamptz, integer) FROM PUBLIC"
    )


def downgrade() -> None:
    # Back to one table, every row copied (for development databases; retention's removals
    # and legal holds are forgotten).
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TABLE public.audit_retention_log")
    op.execute("DROP TABLE public.audit_legal_hold")
    op.execute("ALTER TABLE public.audit_log RENAME TO audit_log_partitioned")
    op.execute("ALTER TABLE public.audit_log_partitioned RENAME CONSTRAINT audit_log_pkey"
               " TO audit_log_partitioned_pkey")
    op.execute("ALTER TABLE public.audit_log_partitioned RENAME CONSTRAINT audit_log_event_id_key"
               " TO audit_log_partitioned_event_id_key")
    op.execute("ALTER SEQUENCE public.audit_log_id_seq OWNED BY NONE")
    op.execute(
        "CREATE TABLE public.audit_log (LIKE public.audit_log_partitioned INCLUDING DEFAULTS"
        " INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS)"
    )
    op.execute("ALTER SEQUENCE public.audit_log_id_seq OWNED BY public.audit_log.id")
    op.execute(
        "ALTER TABLE public.audit_log ADD CONSTRAINT audit_log_pkey"
        " PRIMARY KEY (id)"
    )
    op.execute(
        "ALTER TABLE public.audit_log ADD CONSTRAINT audit_log_event_id_key"
        " UNIQUE (event_id)"
    )
    op.execute(_COPY_INDEXES.replace("@SOURCE", "audit_log_partitioned"))
    # Rows read through the parent are held by the parent's policies alone.
    op.execute("ALTER TABLE public.audit_log_partitioned NO FORCE ROW LEVEL SECURITY")
    op.execute("INSERT INTO public.audit_log SELECT * FROM public.audit_log_partitioned")
    op.execute("ALTER TABLE public.audit_log ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE public.audit_log FORCE ROW LEVEL SECURITY")
    op.execute(_copy_security("audit_log_partitioned"))
    _append_only_triggers()
    op.execute("DROP TABLE public.audit_log_partitioned")
    for function in (
        "auditevt_ensure_partitions(timestamptz, integer)",
        "auditevt_ensure_partition(timestamptz)",
        "auditevt_harden_partition(regclass)",
        "auditevt_month_uuid(timestamptz)",
    ):
        op.execute(f"DROP FUNCTION {function}")
