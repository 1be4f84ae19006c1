"""The distribution: what a bare install pulls in, and what a missing extra says."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires

import pytest


def test_packaging_bare_install_requires_pydantic_only() -> None:
    unconditional = [req for req in requires("auditevt") or [] if "extra ==" not in req]
    assert [req.split(">")[0].split("=")[0].split("<")[0].strip() for req in unconditional] == [
        "pydantic"
    ]


def test_packaging_importing_auditevt_loads_no_web_or_db_stack() -> None:
    code = (
        "import sys, auditevt, auditevt._cli; "
        "heavy = {'httpx', 'tenacity', 'starlette', 'sqlalchemy', 'psycopg', 'aiosqlite'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("package", "missing", "extra"),
    [
        ("telemetry_client", "httpx", "auditevt[client]"),
        ("telemetry_client", "tenacity", "auditevt[client]"),
        ("audit_middleware", "sqlalchemy", "auditevt[middleware]"),
        ("audit_middleware", "starlette", "auditevt[middleware]"),
        ("audit_middleware", "psycopg", "auditevt[middleware]"),
        ("audit_middleware.review", "jinja2", "auditevt[middleware]"),
    ],
)
def test_packaging_missing_extra_names_the_extra(package: str, missing: str, extra: str) -> None:
    # A None entry in sys.modules makes the dependency look uninstalled to find_spec and import.
    code = f"import sys; sys.modules[{missing!r}] = None; import {package}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    last_line = out.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError") or last_line.startswith("ModuleNotFoundError")
    assert extra in last_line
