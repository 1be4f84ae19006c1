"""The ``auditevt`` subcommands this package owns: ``migrate`` and ``relay``.

Registered as entry points in the ``auditevt.commands`` group (see ``auditevt._cli``).
"""

from __future__ import annotations

import argparse
import sys

from audit_middleware._exceptions import MigrationError
from audit_middleware.delivery._command import relay_command
from audit_middleware.storage._migrate import migrate_command
from audit_middleware.storage._urls import async_url
from auditevt._cli import Command, UsageError
from auditevt._cli_signing import add_signing_key_argument, signing_keys_argument

__all__ = ["MIGRATE", "RELAY", "add_database_url", "add_telemetry_url"]


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


def _migrate_run(args: argparse.Namespace) -> int:
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


def _relay_run(args: argparse.Namespace) -> int:
    return relay_command(
        args.database_url,
        args.telemetry_url,
        args.until_empty,
        metrics_port=args.metrics_port,
        signing_key=signing_keys_argument(args, "relay"),
    )


MIGRATE = Command(
    name="migrate",
    help="create or upgrade the audit tables (and PostgreSQL's RLS, roles, triggers)",
    add_arguments=_migrate_arguments,
    run=_migrate_run,
)
RELAY = Command(
    name="relay",
    help="forward the outbox to Telemetry until stopped (or until empty)",
    add_arguments=_relay_arguments,
    run=_relay_run,
)
