"""The import rules of docs/architecture.md, checked from the source: a package imports
only the packages its row names, and nothing under pipeline/ imports jobs/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline"

ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "context": set(),
    "config": set(),
    "schemas": set(),
    "types": {"schemas"},
    "storage": {"config", "schemas", "types"},
    "models": {"config", "core", "schemas", "storage"},
    "linking": {"models", "schemas", "storage", "types"},
    "stages": {"config", "context", "core", "linking", "models", "schemas", "storage", "types"},
    "evaluation": {"context", "core", "linking", "schemas", "storage", "types"},
    "training": {
        "config",
        "core",
        "evaluation",
        "linking",
        "models",
        "schemas",
        "stages",
        "storage",
        "types",
    },
    "execution": {
        "config",
        "context",
        "core",
        "linking",
        "models",
        "schemas",
        "stages",
        "storage",
        "types",
    },
    "sample": {
        "config",
        "context",
        "core",
        "evaluation",
        "models",
        "schemas",
        "storage",
        "training",
    },
    "run": {"config", "core", "execution", "models", "sample", "schemas", "storage", "types"},
    "orchestrate": {"config", "schemas", "storage"},
    "bench": {
        "config",
        "context",
        "core",
        "evaluation",
        "execution",
        "linking",
        "models",
        "run",
        "sample",
        "schemas",
        "stages",
        "storage",
        "training",
        "types",
    },
}


def _unit(module: str) -> str:
    """The package (or top-level module) of ``pipeline`` a dotted name belongs to."""
    return module.split(".")[1]


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imported_modules(source: str) -> list[str]:
    """Every module an ``import`` names, at any depth, except under ``if TYPE_CHECKING:``;
    ``from pipeline import x`` counts as ``pipeline.x``."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pipeline":
                found.extend(f"pipeline.{a.name}" for a in node.names)
            else:
                found.append(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def violations() -> list[str]:
    bad = []
    for path in sorted(PIPELINE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel == Path("pipeline/__init__.py"):
            continue
        unit = _unit(".".join(rel.with_suffix("").parts))
        for mod in imported_modules(path.read_text()):
            if mod.split(".")[0] == "jobs":
                bad.append(f"{rel} imports {mod} (pipeline never imports jobs)")
            elif mod.startswith("pipeline.") and (dep := _unit(mod)) != unit:
                if unit not in ALLOWED:
                    bad.append(f"{rel}: package {unit!r} has no row in docs/architecture.md")
                elif dep not in ALLOWED[unit]:
                    bad.append(f"{rel} imports {mod}: {unit} may not import {dep}")
    return bad


def test_imports_follow_the_architecture() -> None:
    assert violations() == []


def test_every_package_has_a_rule() -> None:
    units = {p.stem for p in PIPELINE.glob("*.py")} | {
        p.parent.name for p in PIPELINE.glob("*/__init__.py")
    }
    assert units - {"__init__"} == set(ALLOWED)


def test_the_rules_are_the_ones_the_docs_draw() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| (\w+) \| ([^|]+) \|$", doc, re.M)
    drawn = {
        pkg: set() if deps.startswith("(") else {d.strip() for d in deps.split(",")}
        for pkg, deps in rows
        if pkg != "package"
    }
    assert drawn == ALLOWED


def test_the_checker_sees_a_forbidden_import() -> None:
    # A deferred import inside a function counts; one under TYPE_CHECKING does not.
    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pipeline.models import loading\n"
        "def f():\n    from pipeline import run\n    import jobs.annotate\n"
    )
    assert imported_modules(src) == ["typing", "pipeline.run", "jobs.annotate"]
