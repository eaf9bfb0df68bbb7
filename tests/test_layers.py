"""The layering written in arcscope/__init__.py holds: every import in src/ points to a lower row."""

from __future__ import annotations

import ast
from pathlib import Path

import arcscope

SRC = Path(arcscope.__file__).parent


def _imports(path: Path) -> set[str]:
    """The arcscope packages a module imports (at the top or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "arcscope" else [f"arcscope.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        out |= {n.split(".")[1] for n in names if n.startswith("arcscope.")}
    return out


def test_every_import_points_down_the_layers():
    row = {pkg: i for i, pkgs in enumerate(arcscope.LAYERS) for pkg in pkgs}
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue
        own = rel.parts[0].removesuffix(".py")
        assert own in row, f"{rel}: package {own!r} is missing from arcscope.LAYERS"
        for dep in _imports(path) - {own}:
            if dep not in row:
                wrong.append(f"{rel} imports arcscope.{dep}, which arcscope.LAYERS does not place")
            elif row[dep] >= row[own]:
                wrong.append(f"{rel} imports arcscope.{dep} (row {row[dep]}) from row {row[own]}")
    assert not wrong, "\n".join(wrong)


def test_the_cli_starts_without_torch():
    import subprocess
    import sys

    code = "import sys, arcscope.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
