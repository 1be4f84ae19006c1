"""The arrows point down only: auditevt_demo -> audit_middleware -> telemetry_client -> auditevt.

Walks every module under src/ (imports inside functions included) and fails on any import of a
package above the importing one.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = ["auditevt", "telemetry_client", "audit_middleware", "auditevt_demo"]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def upward_imports(src: Path = SRC) -> list[str]:
    problems = []
    for package in LAYERS:
        rank = LAYERS.index(package)
        for path in sorted((src / package).rglob("*.py")):
            for line, module in _imports(path):
                top = module.split(".")[0]
                if top in LAYERS and LAYERS.index(top) > rank:
                    problems.append(f"{path.relative_to(src)}:{line} imports {module}")
    return problems


def test_import_graph_has_no_upward_import() -> None:
    assert upward_imports() == []


def test_import_graph_check_sees_an_upward_import_inside_a_function(tmp_path: Path) -> None:
    for package in LAYERS:
        (tmp_path / package).mkdir()
    (tmp_path / "auditevt" / "_bad.py").write_text(
        "def f():\n    from audit_middleware import AuditStore\n", encoding="utf-8"
    )
    (tmp_path / "auditevt_demo" / "_fine.py").write_text("import auditevt\n", encoding="utf-8")
    assert upward_imports(tmp_path) == ["auditevt/_bad.py:2 imports audit_middleware"]
