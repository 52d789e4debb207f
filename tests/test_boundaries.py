"""The dependency direction bot -> core <- mcp_server, and core's curated public surface."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import core

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"discord", "mcp", "bot", "mcp_server"}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_discord_or_mcp_statically():
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_top_levels(path) & FORBIDDEN)
        for path in (ROOT / "core").rglob("*.py")
        if _imported_top_levels(path) & FORBIDDEN
    }
    assert offenders == {}


def test_importing_core_loads_neither_discord_nor_mcp():
    code = (
        "import sys, core, core.cli, core.service\n"
        "bad = [m for m in ('discord', 'mcp') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_front_ends_import_only_the_public_core_surface():
    offenders = []
    for package in ("bot", "mcp_server"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ImportFrom)
                    and node.module
                    and node.module.startswith("core.")
                ):
                    offenders.append(f"{path.relative_to(ROOT)}: from {node.module}")
                if isinstance(node, ast.Import):
                    offenders += [
                        f"{path.relative_to(ROOT)}: import {a.name}"
                        for a in node.names
                        if a.name.startswith("core.")
                    ]
    assert offenders == []


def test_core_all_is_sorted_and_complete():
    assert core.__all__ == sorted(core.__all__)
    missing = [name for name in core.__all__ if not hasattr(core, name)]
    assert missing == []
