"""``python -m bench [--quick] [--only ID,...] [--docs PATH]``: run every ``bench/bench_*.py``
in its own process, print one table, and write ``bench/results/latest.json``.

Always exits 0 when the scripts ran: a missed target is printed as MISSED, not raised.
``--docs PATH`` also writes the table and the machine as a Markdown page.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, Result, details_text, machine, table

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "latest.json"
TIMEOUT_S = 300


def scripts() -> list[str]:
    """Module names of the bench scripts, in file-name order."""
    return sorted(path.stem for path in BENCH_DIR.glob("bench_*.py"))


def run_one(module: str, quick: bool) -> Result | str:
    """A script's result, or the reason it produced none."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", f"bench.{module}", "--result-file", str(out)]
        try:
            done = subprocess.run(
                command + (["--quick"] if quick else []),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return f"timed out after {TIMEOUT_S} s"
        if done.returncode != 0 or not out.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"exit {done.returncode}: " + " / ".join(tail)
        return Result(**json.loads(out.read_text()))


def markdown(results: list[Result], info: dict, when: str) -> str:
    """The page for docs/benchmarks.md: the table, the details, and how each was measured."""
    facts = ", ".join(f"{k} {v}" for k, v in info.items())
    lines = [
        "# Benchmarks",
        "",
        f"Measured {when} with `make bench` on: {facts}.",
        "Each baseline was measured in the same run. `python -m bench --docs docs/benchmarks.md`"
        " rewrites this page; `bench/results/latest.json` has the same figures.",
        "",
        table(results),
        "",
        "## Details",
        "",
    ]
    lines += [f"- **{r.id}**: {details_text(r)}" for r in results]
    lines += ["", "## How each figure is measured", ""]
    for module in scripts():
        doc = " ".join((importlib.import_module(f"bench.{module}").__doc__ or "").split())
        lines.append(f"- `bench/{module}.py`: {doc}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run; figures mean nothing")
    parser.add_argument("--only", help="comma-separated ids or module names to run")
    parser.add_argument("--docs", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args()

    wanted = {w.strip().replace("-", "") for w in (args.only or "").split(",") if w.strip()}
    modules = [m for m in scripts() if not wanted or m.removeprefix("bench_") in wanted]
    results: list[Result] = []
    failures: list[str] = []
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure
    for module in modules:
        start = time.monotonic()
        outcome = run_one(module, args.quick)
        took = time.monotonic() - start
        if isinstance(outcome, str):
            failures.append(f"{module}: {outcome}")
            print(f"{module}: FAILED ({outcome})", flush=True)
            continue
        results.append(outcome)
        state = "ok" if outcome.met else "MISSED"
        print(f"{module}: {state} ({took:.1f} s)", flush=True)

    info = {**machine(), "load_1m_before": round(load_before, 2)}
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": info, "when": when, "quick": args.quick}
    document["results"] = [r.to_json() for r in results]
    RESULTS.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")

    print()
    print(table(results))
    for result in results:
        print(f"  {result.id}: {details_text(result)}")
    print(f"\nmachine: {', '.join(f'{k} {v}' for k, v in info.items())}")
    missed = [r.id for r in results if not r.met]
    if missed:
        print(f"MISSED: {', '.join(missed)}")
    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"results written to {RESULTS.relative_to(ROOT)}")
    if args.docs:
        args.docs.write_text(markdown(results, info, when), encoding="utf-8")
        print(f"table written to {args.docs}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
