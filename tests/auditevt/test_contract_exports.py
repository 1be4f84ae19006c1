"""What is particular to ``auditevt``'s surface (``__all__``: tests/test_exported_members.py)."""

from __future__ import annotations

import enum
import inspect
import subprocess
import sys

import auditevt
from auditevt import __all__ as exported_members


def test_exported_enums_are_string_enums() -> None:
    members = [getattr(auditevt, name) for name in exported_members]
    for member in members:
        if inspect.isclass(member) and issubclass(member, enum.Enum):
            assert issubclass(member, enum.StrEnum), member


def test_auditevt_imports_only_pydantic_and_the_stdlib() -> None:
    # What Telemetry installs is auditevt with pydantic alone: importing every module of the
    # package (the CLI too) must not need anything else.
    code = (
        "import sys, pkgutil, importlib, auditevt\n"
        "for m in pkgutil.iter_modules(auditevt.__path__):\n"
        "    importlib.import_module('auditevt.' + m.name)\n"
        "print('\\n'.join(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    allowed = {
        "auditevt",
        "pydantic",
        "pydantic_core",
        "typing_extensions",
        "typing_inspection",
        "annotated_types",
    }
    third_party = {
        name
        for name in done.stdout.split()
        if name not in sys.stdlib_module_names and not name.startswith("_")
    }
    assert third_party <= allowed, third_party - allowed
