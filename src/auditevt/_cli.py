"""The ``auditevt`` command line.

Subcommands live in :data:`COMMANDS`, a table of :class:`Command` values: a name, a help line, a
function that adds its arguments and a function that runs it. A subcommand implemented in
another package (``migrate``, ``relay``, ``demo``, ``telemetry``) is added as one more entry whose
two functions import that package when called, so ``auditevt`` itself still imports only
pydantic and the standard library, and a missing extra is a one-line error, not a crash.

A user error (a bad argument, an unreadable file, an unknown model) is one line on stderr and
exit status 2; ``validate`` exits 1 when any event is invalid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, NoReturn

from pydantic import ValidationError

from auditevt.__version__ import CONTRACT_VERSION, __version__
from auditevt._event import Event
from auditevt._fields import error_path
from auditevt._schema import MODELS, json_schema, write_schema_files

__all__ = ["COMMANDS", "Command", "UsageError", "build_parser", "main"]


class UsageError(Exception):
    """A mistake of the caller's: printed as one line, exit status 2."""


@dataclass(frozen=True)
class Command:
    """One subcommand of ``auditevt``."""

    name: str
    """What the user types."""
    help: str
    """One line for ``auditevt --help``."""
    add_arguments: Callable[[argparse.ArgumentParser], None]
    """Adds the subcommand's arguments to its parser."""
    run: Callable[[argparse.Namespace], int]
    """Does the work and returns the exit status; raises :class:`UsageError` for user errors."""


class _Parser(argparse.ArgumentParser):
    # argparse prints its usage and exits on a bad argument; we want one line and a status.
    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("auditevt").strip()
        raise UsageError(f"{command}: {message}" if command else message)


# --- schema -----------------------------------------------------------------------------------


def _schema_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        metavar="MODEL",
        help=f"a model name (default Event): {', '.join(MODELS)}",
    )
    parser.add_argument(
        "--write",
        metavar="DIR",
        help="write <Model>.json for every model into DIR instead of printing one schema "
        "(regenerate the checked-in files with: auditevt schema --write src/auditevt/schemas)",
    )


def _schema_run(args: argparse.Namespace) -> int:
    if args.write is not None:
        if args.model is not None:
            raise UsageError("schema: give either MODEL or --write, not both")
        try:
            paths = write_schema_files(args.write)
        except OSError as exc:
            raise UsageError(f"schema: cannot write to {args.write}: {exc.strerror}") from exc
        print(f"wrote {len(paths)} schema files to {args.write}")
        return 0
    try:
        schema = json_schema(args.model or "Event")
    except ValueError as exc:
        raise UsageError(f"schema: {exc}") from exc
    print(json.dumps(schema, indent=2, ensure_ascii=False))
    return 0


# --- validate ---------------------------------------------------------------------------------


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        default="-",
        metavar="FILE",
        help="JSON Lines, one Event a line (default -, standard input); blank lines are skipped",
    )


def _lines(path: str) -> Iterator[bytes]:
    if path == "-":
        yield from sys.stdin.buffer
        return
    try:
        stream: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed below, after streaming
    except OSError as exc:
        raise UsageError(f"validate: cannot read {path}: {exc.strerror}") from exc
    with stream:
        yield from stream


def _got(error: Any) -> str:
    """`` (got VALUE)`` for a scalar input, so the line names the bad value too."""
    value = error.get("input")
    if error["type"] in ("missing", "json_invalid") or isinstance(value, dict | list):
        return ""
    text = repr(value)
    return f" (got {text[:77] + '...' if len(text) > 80 else text})"


def _validate_run(args: argparse.Namespace) -> int:
    valid = invalid = 0
    out = sys.stdout
    for number, line in enumerate(_lines(args.file), start=1):
        if not line.strip():
            continue
        try:
            Event.model_validate_json(line)
        except ValidationError as exc:
            invalid += 1
            for error in exc.errors(include_url=False):
                out.write(f"line {number}: {error_path(error)}: {error['msg']}{_got(error)}\n")
        else:
            valid += 1
    out.write(f"valid={valid} invalid={invalid}\n")
    return 1 if invalid else 0


# --- commands of the other packages (imported when run) ---------------------------------------


def _database_url_argument(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--database-url",
        required=required,
        metavar="URL",
        help="postgresql+psycopg://user@host:5432/db or sqlite:///path.sqlite3",
    )


def _telemetry_url_argument(parser: argparse.ArgumentParser, default_help: str) -> None:
    parser.add_argument(
        "--telemetry-url",
        metavar="URL",
        help=f"Telemetry's base URL (https, or http on loopback); default: {default_help}",
    )


def _import_error(command: str, exc: ImportError) -> UsageError:
    return UsageError(f"{command}: {exc}")


def _migrate_arguments(parser: argparse.ArgumentParser) -> None:
    _database_url_argument(parser, required=True)


def _migrate_run(args: argparse.Namespace) -> int:
    try:
        from audit_middleware import MigrationError, migrate_command
    except ImportError as exc:
        raise _import_error("migrate", exc) from None
    try:
        print(migrate_command(args.database_url))
    except MigrationError as exc:
        print(f"auditevt migrate: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


def _relay_arguments(parser: argparse.ArgumentParser) -> None:
    _database_url_argument(parser, required=True)
    _telemetry_url_argument(parser, "$TELEMETRY_INTERNAL_URL")
    parser.add_argument(
        "--until-empty",
        action="store_true",
        help="exit 0 once the outbox holds nothing deliverable (default: run until SIGTERM)",
    )
    parser.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on PORT"
    )


def _relay_run(args: argparse.Namespace) -> int:
    try:
        from audit_middleware import relay_command
    except ImportError as exc:
        raise _import_error("relay", exc) from None
    return relay_command(
        args.database_url, args.telemetry_url, args.until_empty, metrics_port=args.metrics_port
    )


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requests", type=int, default=200, metavar="N", help="audited requests (default 200)"
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="where audit rows go (default: ./auditevt-demo.sqlite3, made anew)",
    )
    _telemetry_url_argument(parser, "a Telemetry stand-in on loopback")
    parser.add_argument(
        "--no-forward",
        action="store_true",
        help="leave events in the outbox (deliver them later with auditevt relay)",
    )


def _demo_run(args: argparse.Namespace) -> int:
    try:
        from auditevt_demo._demo import demo_command
    except ImportError as exc:
        raise _import_error("demo", exc) from None
    return demo_command(
        requests=args.requests,
        database_url=args.database_url,
        telemetry_url=args.telemetry_url,
        forward=not args.no_forward,
    )


def _telemetry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8900, help="port (default 8900)")
    parser.add_argument(
        "--failure-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="fail this share of requests (0 to 1) with 503/429/500, slow answers or drops",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="S", help="seconds added to every answer"
    )
    parser.add_argument(
        "--retry-after", type=int, default=1, metavar="S", help="Retry-After on 429/503"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the fault dice")


def _telemetry_run(args: argparse.Namespace) -> int:
    try:
        from telemetry_client.testing import telemetry_command
    except ImportError as exc:
        raise _import_error("telemetry", exc) from None
    return telemetry_command(
        args.host,
        args.port,
        args.failure_rate,
        args.latency,
        args.retry_after,
        seed=args.seed,
    )


COMMANDS: tuple[Command, ...] = (
    Command(
        name="demo",
        help="run a sample Core API with the middleware, the relay and a Telemetry stand-in",
        add_arguments=_demo_arguments,
        run=_demo_run,
    ),
    Command(
        name="migrate",
        help="create or upgrade the audit tables (and PostgreSQL's RLS, roles, triggers)",
        add_arguments=_migrate_arguments,
        run=_migrate_run,
    ),
    Command(
        name="relay",
        help="forward the outbox to Telemetry until stopped (or until empty)",
        add_arguments=_relay_arguments,
        run=_relay_run,
    ),
    Command(
        name="telemetry",
        help="serve a Telemetry stand-in (every endpoint, dedup, fault injection)",
        add_arguments=_telemetry_arguments,
        run=_telemetry_run,
    ),
    Command(
        name="schema",
        help="print the JSON Schema of Event or another model",
        add_arguments=_schema_arguments,
        run=_schema_run,
    ),
    Command(
        name="validate",
        help="check JSON Lines of Events; exit 1 if any is invalid",
        add_arguments=_validate_arguments,
        run=_validate_run,
    ),
)
"""Every subcommand, in the order ``--help`` lists them."""


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The argument parser of ``auditevt`` with one subparser per command."""
    parser = _Parser(
        prog="auditevt",
        description="The audit event contract shared by the Core API and Telemetry.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"auditevt {__version__} (contract {CONTRACT_VERSION})",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``auditevt`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    try:
        args = build_parser().parse_args(argv)
        status: int = args._run(args)
    except UsageError as exc:
        print(f"auditevt: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:
        # `auditevt schema | head` closed the pipe: not an error worth a traceback. Point
        # stdout at devnull so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    return status
