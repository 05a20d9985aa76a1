"""ARCHITECTURE.md names the module and function of every step; each name it cites exists.

A citation is a backticked path, optionally followed by `:` and a dotted name inside that
file: `payment_service/service_layer/create.py:CreateDeposit.__call__`. Moving or renaming a
step without updating the document fails here rather than leaving a newcomer a dead map."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "ARCHITECTURE.md"
CITATION = re.compile(r"`([A-Za-z0-9_./-]+\.(?:py|proto|yml|yaml|toml|md))(?::([A-Za-z_][\w.]*))?`")


def _citations() -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in CITATION.finditer(DOCUMENT.read_text())]


def _defines(tree: ast.Module, dotted: str) -> bool:
    """Whether `dotted` (a function, class, Class.method or module-level name) is in `tree`."""
    scope: list[ast.stmt] = list(tree.body)
    for part in dotted.split("."):
        found: ast.stmt | None = None
        for node in scope:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name == part:
                    found = node
                    break
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == part for t in targets):
                    found = node
                    break
        if found is None:
            return False
        scope = list(found.body) if isinstance(found, ast.ClassDef) else []
    return True


def test_the_document_cites_steps() -> None:
    assert len([c for c in _citations() if c[1]]) >= 20


def test_every_cited_path_and_name_exists() -> None:
    missing: list[str] = []
    for path, name in _citations():
        file = ROOT / path
        if not file.exists():
            missing.append(path)
        elif name is not None and not _defines(ast.parse(file.read_text()), name):
            missing.append(f"{path}:{name}")
    assert not missing, f"ARCHITECTURE.md cites what does not exist: {missing}"
