"""The ``auditevt`` subcommands this package owns: ``migrate`` and ``relay``.

Registered as entry points in the ``auditevt.commands`` group (see ``auditevt._cli``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_middleware._exceptions import ConfigurationError, MigrationError, StoreError
from audit_middleware.delivery._command import relay_command
from audit_middleware.storage._migrate import migrate_command
from audit_middleware.storage._partitions import DEFAULT_MONTHS_AHEAD, Partitions
from audit_middleware.storage._retention import RetentionWindow, apply_retention, plan_retention
from audit_middleware.storage._store import create_engine
from audit_middleware.storage._urls import async_url
from auditevt._cli import UsageError, command
from auditevt._cli_signing import add_signing_key_argument, signing_keys_argument

__all__ = [
    "MIGRATE",
    "PARTITIONS",
    "RELAY",
    "RETENTION",
    "add_database_url",
    "add_telemetry_url",
]

_HELP = {
    "migrate": "create or upgrade the audit tables (and PostgreSQL's RLS, roles, triggers)",
    "relay": "forward the outbox to Telemetry until stopped (or until empty)",
    "partitions": (
        "create audit_log's monthly partitions ahead of time and report them (PostgreSQL)"
    ),
    "retention": (
        "remove whole months of audit_log older than --keep, once delivered and not on hold"
    ),
}
"""The line each command shows in ``auditevt --help``, by name."""


def add_database_url(parser: argparse.ArgumentParser, *, required: bool, help: str = "") -> None:
    """The ``--database-url`` option every database command shares."""
    parser.add_argument(
        "--database-url",
        required=required,
        metavar="URL",
        help=help or "postgresql+psycopg://user@host:5432/db or sqlite:///path.sqlite3",
    )


def add_telemetry_url(parser: argparse.ArgumentParser, default_help: str) -> None:
    """The ``--telemetry-url`` option of the commands that send to Telemetry."""
    parser.add_argument(
        "--telemetry-url",
        metavar="URL",
        help=f"Telemetry's base URL (https, or http on loopback); default: {default_help}",
    )


def _migrate_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_url(parser, required=True)


@command("migrate", help=_HELP["migrate"], arguments=_migrate_arguments)
def MIGRATE(args: argparse.Namespace) -> int:
    try:
        async_url(args.database_url)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"migrate: --database-url: {exc}") from None
    try:
        print(migrate_command(args.database_url))
    except MigrationError as exc:
        print(f"auditevt migrate: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


def _relay_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_url(parser, required=True)
    add_telemetry_url(parser, "$TELEMETRY_INTERNAL_URL")
    parser.add_argument(
        "--until-empty",
        action="store_true",
        help="exit 0 once the outbox holds nothing deliverable (default: run until SIGTERM)",
    )
    parser.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on PORT"
    )
    add_signing_key_argument(parser, "sign every request to Telemetry")


@command("relay", help=_HELP["relay"], arguments=_relay_arguments)
def RELAY(args: argparse.Namespace) -> int:
    return relay_command(
        database_url=args.database_url,
        telemetry_url=args.telemetry_url,
        until_empty=args.until_empty,
        metrics_port=args.metrics_port,
        signing_key=signing_keys_argument(args, "relay"),
    )


def _partitions_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_url(parser, required=True)
    parser.add_argument(
        "--months-ahead",
        type=int,
        default=DEFAULT_MONTHS_AHEAD,
        metavar="N",
        help=f"months of partitions kept ready after this one (default {DEFAULT_MONTHS_AHEAD})",
    )


@command("partitions", help=_HELP["partitions"], arguments=_partitions_arguments)
def PARTITIONS(args: argparse.Namespace) -> int:
    engine = _postgresql_engine("partitions", args.database_url)
    return asyncio.run(_partitions(engine, args.months_ahead))


async def _partitions(engine: AsyncEngine, months_ahead: int) -> int:
    try:
        partitions = Partitions(engine)
        try:
            await partitions.ensure(months_ahead)
        except ConfigurationError as exc:
            raise UsageError(f"partitions: {exc}") from None
        stats = await partitions.stats()
    except StoreError as exc:
        print(f"auditevt partitions: error: {exc}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    for partition in stats.partitions:
        print(f"{partition.name}: ~{partition.live_rows} rows, {partition.size_bytes} bytes")
    print(f"partitions ready {stats.months_ahead} month(s) ahead; default partition holds "
          f"~{stats.default_rows} row(s)")
    return 0


def _retention_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_url(parser, required=True)
    parser.add_argument(
        "--keep",
        required=True,
        metavar="WINDOW",
        help="how long rows are kept: 6y, 18m or 400d; older whole months are removed",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be removed; change nothing"
    )
    parser.add_argument(
        "--export",
        metavar="DIR",
        help="write each removed partition's rows to DIR/<partition>.jsonl first",
    )


@command("retention", help=_HELP["retention"], arguments=_retention_arguments)
def RETENTION(args: argparse.Namespace) -> int:
    try:
        keep = RetentionWindow.parse(args.keep)
    except ConfigurationError as exc:
        raise UsageError(f"retention: --keep: {exc}") from None
    engine = _postgresql_engine("retention", args.database_url)
    return asyncio.run(_retention(engine, keep, args.dry_run, args.export))


async def _retention(
    engine: AsyncEngine, keep: RetentionWindow, dry_run: bool, export: str | None
) -> int:
    try:
        if dry_run:
            decisions = await plan_retention(engine, keep)
        else:
            decisions = await apply_retention(engine, keep, export_dir=export)
    except StoreError as exc:
        print(f"auditevt retention: error: {exc}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    verb = "would remove" if dry_run else "removed"
    for decision in decisions:
        if decision.removable:
            where = f", exported to {decision.exported_to}" if decision.exported_to else ""
            print(f"{verb} {decision.partition}: {decision.rows} row(s){where}")
        else:
            print(f"kept {decision.partition}: {'; '.join(decision.kept_because)}")
    removed = sum(decision.removable for decision in decisions)
    print(f"retention (keep {keep}): {verb} {removed} partition(s), kept "
          f"{len(decisions) - removed} older than the window")
    return 0


def _postgresql_engine(command: str, url: str) -> AsyncEngine:
    try:
        parsed = async_url(url)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{command}: --database-url: {exc}") from None
    if not parsed.drivername.startswith("postgresql"):
        raise UsageError(
            f"{command}: SQLite has no partitions; its audit_log keeps every row "
            "(append-only). Retention and partitions need PostgreSQL"
        )
    return create_engine(url)
