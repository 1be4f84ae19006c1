"""``auditevt demo``, registered in the ``auditevt.commands`` entry-point group."""

from __future__ import annotations

import argparse

from audit_middleware._commands import add_telemetry_url
from auditevt._cli import command
from auditevt._cli_signing import add_signing_key_argument, signing_keys_argument
from auditevt_demo._demo import demo_command

__all__ = ["DEMO"]

_HELP = "run a sample Core API with the middleware, the relay and a Telemetry stand-in"
"""The line ``auditevt --help`` shows for ``demo``."""


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requests", type=int, default=200, metavar="N", help="audited requests (default 200)"
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="where audit rows go (default: ./auditevt-demo.sqlite3, made anew)",
    )
    add_telemetry_url(parser, "a Telemetry stand-in on loopback")
    parser.add_argument(
        "--no-forward",
        action="store_true",
        help="leave events in the outbox (deliver them later with auditevt relay)",
    )
    add_signing_key_argument(
        parser, "sign every request to Telemetry (the demo's own stand-in requires it, and "
        "makes a key up when none is given)"
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="after the report, keep serving the Core API and its audit review page (Ctrl-C)",
    )


@command("demo", help=_HELP, arguments=_demo_arguments)
def DEMO(args: argparse.Namespace) -> int:
    return demo_command(
        requests=args.requests,
        database_url=args.database_url,
        telemetry_url=args.telemetry_url,
        forward=not args.no_forward,
        signing_key=signing_keys_argument(args, "demo"),
        serve=args.serve,
    )
