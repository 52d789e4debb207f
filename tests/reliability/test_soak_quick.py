"""``python -m bench.soak --quick`` (issue 8): every phase runs and every check passes.

The full run (``make soak``: 10,000 jobs, 60 kill -9 runs, thousands of fuzz examples and the
fault matrix) is kept out of ``make test``'s time budget; this is its smoke run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = (
    "jobs", "faults_injected", "refunds", "stuck_holds", "ledger_mismatches", "crash_runs",
    "credits_lost", "credits_doubled", "ssrf_cases", "ssrf_refused", "fuzz_examples",
    "fuzz_crashes", "secret_leaks", "fd_growth", "rss_growth_mb", "db_copy_rows",
    "db_copy_mismatches",
)  # fmt: skip


def test_quick_soak_passes_and_writes_every_figure(tmp_path):
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--quick", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert set(FIGURES) <= set(figures), set(FIGURES) - set(figures)
    assert figures["passed"] is True
    assert figures["jobs"] >= 300 and figures["faults_injected"] > 0
    assert figures["db_copy_rows"] > figures["jobs"]  # the load soak's database, moved
    assert figures["crash_runs"] >= 1 and figures["ssrf_cases"] == figures["ssrf_refused"] > 50
    for name in (
        "stuck_holds",
        "ledger_mismatches",
        "credits_lost",
        "credits_doubled",
        "fuzz_crashes",
        "secret_leaks",
        "db_copy_mismatches",
    ):
        assert figures[name] == 0, name  # fmt: skip
    assert "PASSED" in run.stdout
