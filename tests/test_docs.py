"""Every ```python block in README.md and docs/*.md runs: the examples are kept true.

The blocks of one file run in order in one namespace, in a temporary working directory, so a
later block may use what an earlier one defined. They must run offline.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def test_docs_exist_and_have_examples() -> None:
    names = {path.name for path in DOCS}
    assert {"api.md", "contract.md", "getting-started.md", "security.md", "operations.md"} <= names
    assert sum(len(python_blocks(path)) for path in DOCS) >= 10


@pytest.mark.parametrize("path", DOCS, ids=[path.name for path in DOCS])
def test_docs_python_examples_run(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TELEMETRY_INTERNAL_URL", raising=False)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem.replace('-', '_')}"}
    for number, block in enumerate(python_blocks(path), start=1):
        code = compile(block, f"{path.name} (python block {number})", "exec")
        exec(code, namespace)
    assert os.getcwd() == str(tmp_path)


@pytest.mark.parametrize(
    "package",
    [
        "auditevt",
        "telemetry_client",
        "telemetry_client.testing",
        "audit_middleware",
        "audit_middleware.review",
    ],
)
def test_docs_api_reference_lists_every_public_name(package: str) -> None:
    import importlib

    reference = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = reference.split(f"## `{package}`\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([A-Za-z_][A-Za-z0-9_]*)` \|", section, re.MULTILINE)
    assert listed == list(importlib.import_module(package).__all__)
