from __future__ import annotations

import enum
import inspect
import subprocess
import sys

import auditevt
from auditevt import __all__ as exported_members

INCLUDED_PRIVATE_MEMBERS = {"__version__"}


def _isort_style(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 calls isort-style: CONSTANTS, then Classes, then functions.
    if name.isupper():
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


def test_all_imports_are_exported() -> None:
    public = {
        name
        for name in vars(auditevt)
        if not name.startswith("_") or name in INCLUDED_PRIVATE_MEMBERS
    }
    assert set(exported_members) == public


def test_all_is_sorted_and_unique() -> None:
    assert exported_members == sorted(exported_members, key=_isort_style)
    assert len(set(exported_members)) == len(exported_members)


def test_exported_classes_and_functions_come_from_auditevt() -> None:
    for name in exported_members:
        member = getattr(auditevt, name)
        if inspect.isclass(member) or inspect.isfunction(member):
            assert member.__module__.startswith("auditevt."), name


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
