"""Run the benchmarks; print one JSON object a line: {"name", "value", "unit", "detail"}.

    python benchmarks/run.py [--quick] [--only contract,middleware,relay,seal,review]

``--quick`` finishes within five minutes on a 2-core machine. Ratios are measured side by side
in one run (the machine may be shared and noisy); absolute figures are in ``detail``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

SUITES = ("contract", "middleware", "relay", "loop", "storage", "seal", "review")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (< 5 minutes)")
    parser.add_argument(
        "--only", default=",".join(SUITES), help=f"comma-separated suites of {', '.join(SUITES)}"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SUITES))
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(unknown)}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for name in chosen:
        module = importlib.import_module(f"bench_{name}")
        started = time.perf_counter()
        for entry in module.run(args.quick):
            print(json.dumps(entry), flush=True)
        print(
            json.dumps(
                {
                    "name": f"{name}.wall_time",
                    "value": round(time.perf_counter() - started, 1),
                    "unit": "s",
                    "detail": {"quick": args.quick},
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
