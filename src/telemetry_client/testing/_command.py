"""``auditevt telemetry``: the stand-in as a process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from auditevt import SigningKey
from auditevt._cli import command
from auditevt._cli_signing import add_signing_key_argument, signing_keys_argument
from telemetry_client.testing._faults import FaultInjection
from telemetry_client.testing._server import bind, run_server, url_of
from telemetry_client.testing._standin import TelemetryStandIn

__all__ = ["TELEMETRY", "serve_forever", "telemetry_command"]

_HELP = "serve a Telemetry stand-in (every endpoint, dedup, fault injection)"
"""The line ``auditevt --help`` shows for ``telemetry``."""


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 8900,
    faults: FaultInjection | None = None,
    *,
    signing_key: SigningKey | str | Sequence[SigningKey | str] | None = None,
    out: TextIO | None = None,
) -> None:
    """Serve a stand-in on ``host:port`` in this thread until SIGINT or SIGTERM.

    Prints the base URL first (useful with ``port=0``). OSError when the port cannot be bound.
    With ``signing_key``, requests without a valid signature are answered 401.
    """
    standin = TelemetryStandIn(faults, signing_key=signing_key)
    sock = bind(host, port)
    try:
        stream = sys.stdout if out is None else out
        signing = ""
        if standin.verifier is not None:
            fingerprints = ", ".join(key.fingerprint for key in standin.verifier.keys)
            signing = f"; signatures required (keys {fingerprints})"
        print(
            f"Telemetry stand-in on {url_of(sock)}: {standin.faults.describe()}{signing}",
            file=stream,
            flush=True,
        )
        run_server(standin.app, sock)
    finally:
        sock.close()


def telemetry_command(
    host: str = "127.0.0.1",
    port: int = 8900,
    failure_rate: float = 0.0,
    latency: float = 0.0,
    retry_after: int | None = 1,
    *,
    seed: int | None = None,
    signing_key: SigningKey | str | Sequence[SigningKey | str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``auditevt telemetry``; the exit status (2: bad arguments, 1: cannot listen)."""
    errors = sys.stderr if err is None else err
    try:
        faults = FaultInjection(
            failure_rate=failure_rate, latency=latency, retry_after=retry_after, seed=seed
        )
    except (TypeError, ValueError) as exc:
        print(f"auditevt telemetry: error: {exc}", file=errors)
        return 2
    try:
        serve_forever(host, port, faults, signing_key=signing_key, out=out)
    except ValueError as exc:
        print(f"auditevt telemetry: error: {exc}", file=errors)
        return 2
    except OSError as exc:
        print(f"auditevt telemetry: error: cannot listen on {host}:{port}: {exc}", file=errors)
        return 1
    return 0


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
    add_signing_key_argument(parser, "answer 401 to any request not signed with this key")


@command("telemetry", help=_HELP, arguments=_telemetry_arguments)
def TELEMETRY(args: argparse.Namespace) -> int:
    return telemetry_command(
        args.host,
        args.port,
        args.failure_rate,
        args.latency,
        args.retry_after,
        seed=args.seed,
        signing_key=signing_keys_argument(args, "telemetry"),
    )


"""``auditevt telemetry``, registered in the ``auditevt.commands`` entry-point group."""
