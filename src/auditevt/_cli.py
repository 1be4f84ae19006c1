"""The ``auditevt`` command line.

Every subcommand is a :class:`Command` value: a name, a help line, a function that adds its
arguments and a function that runs it (the decorator :func:`command` makes one of the last).
This package defines ``schema`` and ``validate``; the packages above it register theirs
(``migrate``, ``relay``, ``telemetry``, ``demo``, ...) as entry points in the
``auditevt.commands`` group, so the contract layer never imports upward and ``auditevt`` with
pydantic alone still starts: a command whose extra is missing says which one.

One exit-status rule for every command:

- 0: done;
- 1: a runtime failure (the database is unreachable, a port is taken, events are invalid): one
  line on stderr;
- 2: a user error (a bad argument or value, an unreadable file, an unknown name): one line on
  stderr, raised as :class:`UsageError` or returned by the command;
- 130: interrupted (Ctrl-C).

Never a traceback for either kind of error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import IO, Any, NoReturn

from pydantic import ValidationError

from auditevt.__version__ import CONTRACT_VERSION, __version__
from auditevt._event import Event
from auditevt._fields import error_path
from auditevt._schema import MODELS, json_schema, write_schema_files

__all__ = [
    "BUILTIN_COMMANDS",
    "ENTRY_POINT_GROUP",
    "Command",
    "UsageError",
    "build_parser",
    "command",
    "find_commands",
    "main",
]


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
    """Does the work and returns the exit status: 0 success, 1 a runtime failure (one line on
    stderr); raises :class:`UsageError` for a user error (exit 2)."""


def command(
    name: str, *, help: str, arguments: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Callable[[argparse.Namespace], int]], Command]:
    """Make the decorated function the ``run`` of a :class:`Command` and bind its name to that.

    ``@command("seal", help=..., arguments=seal_arguments)`` over ``def SEAL(args)``: ``SEAL``
    is then the :class:`Command` value an ``auditevt.commands`` entry point names.
    """

    def decorate(run: Callable[[argparse.Namespace], int]) -> Command:
        return Command(name=name, help=help, add_arguments=arguments, run=run)

    return decorate


class _Parser(argparse.ArgumentParser):
    # argparse prints its usage and exits on a bad argument; we want one line and a status.
    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("auditevt").strip()
        raise UsageError(f"{command}: {message}" if command else message)


_HELP = {
    "schema": "print the JSON Schema of Event or another model",
    "validate": "check JSON Lines of Events; exit 1 if any is invalid",
}
"""The line each built-in command shows in ``auditevt --help``, by name."""


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


@command("schema", help=_HELP["schema"], arguments=_schema_arguments)
def _SCHEMA(args: argparse.Namespace) -> int:
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


@command("validate", help=_HELP["validate"], arguments=_validate_arguments)
def _VALIDATE(args: argparse.Namespace) -> int:
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


# --- the registry -----------------------------------------------------------------------------

#: The entry-point group where other packages register their subcommands, each a :class:`Command`.
ENTRY_POINT_GROUP = "auditevt.commands"

BUILTIN_COMMANDS: tuple[Command, ...] = (_SCHEMA, _VALIDATE)
"""The commands of the contract package itself."""


def _unavailable(name: str, exc: ImportError) -> Command:
    # A command whose package cannot be imported (its extra is not installed) still shows in
    # --help, and running it says which extra to install: one line, exit 2.
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.set_defaults(_accepts_anything=True)

    def run(args: argparse.Namespace) -> int:
        raise UsageError(f"{name}: {exc}")

    return Command(name=name, help=f"(unavailable: {exc})", add_arguments=add_arguments, run=run)


def find_commands() -> tuple[Command, ...]:
    """The built-in commands, then those registered under :data:`ENTRY_POINT_GROUP` by name.

    Loading an entry point imports its package; one that cannot be imported becomes a command
    that explains why when run.
    """
    found: dict[str, Command] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            command = entry_point.load()
        except ImportError as exc:
            command = _unavailable(entry_point.name, exc)
        if not isinstance(command, Command) or command.name != entry_point.name:
            raise TypeError(
                f"entry point {entry_point.name!r} = {entry_point.value!r} in group "
                f"{ENTRY_POINT_GROUP!r} must be an auditevt._cli.Command named {entry_point.name!r}"
            )
        found.setdefault(command.name, command)
    builtin = {command.name for command in BUILTIN_COMMANDS}
    return BUILTIN_COMMANDS + tuple(found[name] for name in sorted(found) if name not in builtin)


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``auditevt`` with one subparser per command (default: all)."""
    if commands is None:
        commands = find_commands()
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
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown and not getattr(args, "_accepts_anything", False):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
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
