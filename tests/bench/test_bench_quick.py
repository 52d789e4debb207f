"""Every bench script runs (``--quick``: tiny sizes) and writes its result record.

Nothing here is about speed: that is ``make bench``'s job.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import scripts

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"id", "value", "unit", "baseline", "ratio", "target", "met"}
IDS = {
    "bench_overhead": "overhead",
    "bench_fanout": "fan-out",
    "bench_ledger": "ledger",
    "bench_ledger_pg": "ledger-pg",
    "bench_replicas": "replicas",
    "bench_large": "large",
    "bench_mcp": "mcp",
    "bench_discord": "discord",
    "bench_startup": "startup",
}


def test_every_bench_script_is_known():
    assert sorted(IDS) == scripts()


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(IDS))
def test_quick_run_writes_its_result(module: str, tmp_path: Path):
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--quick", "--result-file", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert FIELDS <= set(result), result
    assert result["id"] == IDS[module]
    assert isinstance(result["value"], int | float)
    assert isinstance(result["met"], bool)
    assert result["id"] in done.stdout  # the table was printed
