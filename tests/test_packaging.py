"""The wheel a non-editable install gets: every file of the packages (the dashboard's templates
and stylesheet included), built without setuptools warning about the configuration."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "bot", "mcp_server")


def _source_files() -> set[str]:
    return {
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.mark.slow
def test_the_wheel_holds_every_package_file_without_a_setuptools_warning(tmp_path: Path):
    source = tmp_path / "src"  # a copy: the build writes build/ and egg-info next to its input
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    output = built.stdout + built.stderr
    assert not re.search(r"\w+Warning: ", output), output[-3000:]  # Python warnings, not pip's
    (wheel,) = tmp_path.glob("imagegate-*.whl")
    assert _source_files() <= set(zipfile.ZipFile(wheel).namelist())
