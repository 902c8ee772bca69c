"""core/'s sub-packages import one way (docs/ARCHITECTURE.md), checked on the source.

Each rule names what a layer may import from core; an import inside a function counts the
same as one at the top (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "core"

#: layer -> the core layers it may import (itself always)
ALLOWED = {
    "errors": set(),
    "process": set(),
    "config": {"errors"},
    "runs": {"errors", "config", "process"},
    "jobs": {"errors", "config", "process", "runs"},
    "report": {"errors", "config", "process", "runs", "jobs"},
    "simclr": {"errors", "config"},
    "training": {"errors", "config", "process", "runs", "jobs", "simclr"},
    "evaluation": {"errors", "config", "process", "runs", "report", "simclr", "training"},
    "cli": {"errors", "config", "process", "runs", "jobs", "report", "simclr", "training", "evaluation"},
}
#: modules at core/'s top that belong to no layer: the package's entry points
ENTRY = {"__init__", "__main__"}


def layer_of(path: Path) -> str:
    rel = path.relative_to(CORE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def core_imports(path: Path) -> set[str]:
    """The core layers ``path`` imports (``core.X...`` -> X)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"core.{a.name}" for a in node.names] if node.module == "core" else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "core" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_core_imports_point_one_way():
    wrong = []
    for path in sorted(CORE.rglob("*.py")):
        layer = layer_of(path)
        if layer in ENTRY:
            continue
        assert layer in ALLOWED, f"{path}: a new layer {layer!r}; add it to ALLOWED and to docs/ARCHITECTURE.md"
        for dep in core_imports(path) - {layer}:
            if dep not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(CORE.parent)} ({layer}) imports core.{dep}")
    assert not wrong, "\n".join(wrong)


def test_no_relative_imports_and_no_textual_in_core():
    for path in sorted(CORE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import (core uses absolute imports)"
                assert not (node.module or "").startswith("textual"), f"{path} imports Textual"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("textual") for a in node.names), f"{path} imports Textual"


def test_no_source_module_is_over_450_lines():
    root = CORE.parent
    long = [f"{p.relative_to(root)}: {n}" for p in sorted([*CORE.rglob("*.py"), *(root / "simclr_tui").rglob("*.py")])
            if (n := len(p.read_text().splitlines())) > 450]
    assert not long, long
