"""``auditevt seal``, ``keygen``, ``verify`` and ``prove``: the ``auditevt._cli.Command`` values.

Registered as entry points in the ``auditevt.commands`` group (``pyproject.toml``). A user error
(a bad URL, an unreadable key or export, a bad argument) raises ``UsageError``: one line on
stderr, exit status 2. A failure of the database is one line and exit status 1; ``verify`` also
exits 1 when it finds anything wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_middleware._exceptions import IntegrityError
from audit_middleware.integrity._export import build_export, verify_export
from audit_middleware.integrity._keys import generate_key_files, load_public_keys, load_signing_key
from audit_middleware.integrity._report import VerifyReport
from audit_middleware.integrity._sealer import Sealer, SealerConfig, create_engine
from audit_middleware.integrity._sink import DirectorySink
from audit_middleware.integrity._verify import DEFAULT_MAX_UNSEALED_AGE, verify_database
from auditevt._cli import UsageError, command

__all__ = ["KEYGEN", "PROVE", "SEAL", "VERIFY"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_DB_HELP = "postgresql+psycopg://user@host:5432/db or sqlite:///path.sqlite3"

_HELP = {
    "seal": "seal committed audit rows into a signed, chained Merkle seal (one pass)",
    "keygen": "write a new Ed25519 seal key pair (private and public PEM files)",
    "verify": "check audit rows and seals (or an export); exit 1 if anything was tampered with",
    "prove": "export an organization's sealed rows with inclusion proofs, for offline audit",
}
"""The line each command shows in ``auditevt --help``, by name."""


def _fail(command: str, exc: Exception) -> int:
    print(f"auditevt {command}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
    return 1


def _check_url(command: str, url: str) -> None:
    try:
        create_engine(url)  # parses only; nothing connects
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{command}: --database-url: {exc}") from None


def _on_database(
    url: str,
    work: Callable[Concatenate[AsyncEngine, _P], Awaitable[_T]],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    """``work(engine, *args, **kwargs)`` on an engine for ``url``, disposed of afterwards."""

    async def run() -> _T:
        engine = create_engine(url)
        try:
            return await work(engine, *args, **kwargs)
        finally:
            await engine.dispose()

    return asyncio.run(run())


# --- seal ------------------------------------------------------------------------------------


def seal_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``auditevt seal``."""
    parser.add_argument("--database-url", required=True, metavar="URL", help=_DB_HELP)
    parser.add_argument("--key", required=True, metavar="FILE", help="the private key (PEM)")
    parser.add_argument(
        "--publish", metavar="DIR", help="also write each seal to DIR, outside the database"
    )
    _sealer_option(parser, "max_rows", "N", "most rows per seal")
    _sealer_option(parser, "settle", "S", "seconds to wait for writers in flight")


def _sealer_option(parser: argparse.ArgumentParser, field: str, metavar: str, help: str) -> None:
    # The option takes its type and default from the SealerConfig field it sets.
    default = getattr(SealerConfig, field)
    parser.add_argument(
        f"--{field.replace('_', '-')}",
        type=type(default),
        default=default,
        metavar=metavar,
        help=f"{help} (default {default})",
    )


async def _seal(args: argparse.Namespace, config: SealerConfig) -> str:
    key = load_signing_key(args.key)
    sink = DirectorySink(args.publish) if args.publish else None
    async with Sealer.from_url(args.database_url, key, sink=sink, config=config) as sealer:
        seals = []
        while True:  # a backlog larger than max_rows: full seals back to back
            seal = await sealer.run_once()
            if seal is None:
                break
            seals.append(seal)
            if seal.count < config.max_rows:
                break
        lag = sealer.stats.seal_lag()
        tail = f"; rows not sealed yet: oldest {lag:.0f} s old" if lag else "; every row sealed"
    if not seals:
        return f"nothing to seal{tail}"
    rows = sum(seal.count for seal in seals)
    return (
        f"sealed {rows} rows in {len(seals)} seal(s) (seal {seals[0].seq}..{seals[-1].seq}, "
        f"ids up to {seals[-1].last_id}){tail}"
    )


@command("seal", help=_HELP["seal"], arguments=seal_arguments)
def SEAL(args: argparse.Namespace) -> int:
    """Seal once (every committed row below the safe horizon); print one line."""
    _check_url("seal", args.database_url)
    try:
        config = SealerConfig(max_rows=args.max_rows, settle=args.settle)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"seal: {exc}") from None
    try:
        load_signing_key(args.key)
    except IntegrityError as exc:
        raise UsageError(f"seal: --key: {exc}") from None
    try:
        print(asyncio.run(_seal(args, config)))
    except IntegrityError as exc:
        return _fail("seal", exc)
    if not args.publish:
        print("auditevt seal: warning: seals not published (give --publish DIR)", file=sys.stderr)
    return 0


# --- keygen ----------------------------------------------------------------------------------


def keygen_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``auditevt keygen``."""
    parser.add_argument("--out", required=True, metavar="DIR", help="where to write the pair")


@command("keygen", help=_HELP["keygen"], arguments=keygen_arguments)
def KEYGEN(args: argparse.Namespace) -> int:
    """Write a new key pair; print both paths."""
    try:
        private, public = generate_key_files(args.out)
    except IntegrityError as exc:
        raise UsageError(f"keygen: --out: {exc}") from None
    print(f"private key (keep secret, mode 0600): {private}")
    print(f"public key (give to verifiers): {public}")
    return 0


# --- verify ----------------------------------------------------------------------------------


def verify_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``auditevt verify``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--database-url", metavar="URL", help=_DB_HELP)
    source.add_argument("--export", metavar="FILE", help="an export of `auditevt prove`")
    parser.add_argument(
        "--public-key",
        required=True,
        action="append",
        metavar="FILE",
        help="a trusted public key (PEM); repeat for keys rotated out",
    )
    parser.add_argument("--organization", type=int, metavar="N", help="check N's rows only")
    parser.add_argument("--published", metavar="DIR", help="compare with seals published in DIR")
    parser.add_argument(
        "--max-unsealed-age",
        type=float,
        default=DEFAULT_MAX_UNSEALED_AGE,
        metavar="S",
        help="unsealed rows older than S seconds are a problem "
        f"(default {DEFAULT_MAX_UNSEALED_AGE:.0f})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _print_report(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    for finding in report.findings:
        print(f"{'PROBLEM' if finding.problem else 'note'} {finding.kind}: {finding.message}")
    print(report.summary())


@command("verify", help=_HELP["verify"], arguments=verify_arguments)
def VERIFY(args: argparse.Namespace) -> int:
    """Verify the database or an export; exit 0 when clean, 1 when anything is wrong."""
    try:
        keys = load_public_keys(args.public_key)
    except IntegrityError as exc:
        raise UsageError(f"verify: --public-key: {exc}") from None
    if args.published is not None and not Path(args.published).is_dir():
        raise UsageError(f"verify: --published: {args.published} is not a directory")
    if args.export is not None:
        try:
            data: Any = json.loads(Path(args.export).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"verify: cannot read {args.export}: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"verify: {args.export} is not JSON: {exc}") from None
        try:
            report = verify_export(data, keys, published=args.published)
        except IntegrityError as exc:
            raise UsageError(f"verify: {args.export}: {exc}") from None
    else:
        _check_url("verify", args.database_url)
        try:
            report = _on_database(
                args.database_url,
                verify_database,
                keys,
                organization=args.organization,
                published=args.published,
                max_unsealed_age=args.max_unsealed_age,
            )
        except IntegrityError as exc:
            return _fail("verify", exc)
    _print_report(report, args.json)
    return 0 if report.ok else 1


# --- prove -----------------------------------------------------------------------------------


def prove_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``auditevt prove``."""
    parser.add_argument("--database-url", required=True, metavar="URL", help=_DB_HELP)
    parser.add_argument("--organization", required=True, type=int, metavar="N")
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="where to write (- for stdout)"
    )


@command("prove", help=_HELP["prove"], arguments=prove_arguments)
def PROVE(args: argparse.Namespace) -> int:
    """Write organization N's sealed rows with their inclusion proofs and the seals."""
    _check_url("prove", args.database_url)
    try:
        export = _on_database(args.database_url, build_export, args.organization)
    except IntegrityError as exc:
        return _fail("prove", exc)
    text = json.dumps(export, indent=1) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    try:
        Path(args.out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"prove: cannot write {args.out}: {exc.strerror}") from None
    print(f"wrote {len(export['rows'])} rows and {len(export['seals'])} seals to {args.out}")
    return 0
