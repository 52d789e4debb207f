"""``make soak``: the reliability figures of issue 8, measured in one run.

    python -m bench.soak [--quick] [--jobs N] [--users N] [--fault-rate F] [--crash-runs N]
                         [--pidns-runs N] [--fuzz-examples N] [--no-matrix] [--seed S]
                         [--out PATH]

Phases (each in its own module): the fault matrix (``soak_matrix``), the load soak
(``soak_load``: jobs through one ``ImageService`` with random faults), crash recovery
(``soak_crash``: kill -9 and restart, many times), two processes in separate PID namespaces
sharing one database (``soak_pidns``: frozen and killed, jobs queued longer than a lease), a
zero-credit user's largest edit against the event loop (``soak_lag``), hostile input
(``soak_hostile``) and fuzzing (``soak_fuzz``); the load soak's database is then moved to
PostgreSQL (``soak_dbcopy``). A secrets guard (``tests/secrets_guard.py``) watches every log
record and error message of the whole run for the API keys it used, and the database is
scanned for them at the end. Prints the figures with a pass/fail line per check, writes them
to ``bench/results/soak.json``, and exits non-zero if any check failed.

``--quick`` is a smoke run for the tests (< 30 s): a few hundred jobs, a few crashes, few fuzz
examples, no matrix (the tests run the matrix themselves). Its memory figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "soak.json"


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run (< 30 s)")
    parser.add_argument("--jobs", type=int, help="load soak jobs (default 10000; quick 300)")
    parser.add_argument("--users", type=int, help="concurrent users (default 50; quick 30)")
    parser.add_argument("--fault-rate", type=float, default=0.1, help="share of jobs with a fault")
    parser.add_argument("--crash-runs", type=int, help="kill -9 runs (default 60; quick 4)")
    parser.add_argument(
        "--pidns-runs", type=int, help="two-process PID-namespace runs (default 10; quick 0)"
    )
    parser.add_argument("--fuzz-examples", type=int, help="per target (default 2000; quick 30)")
    parser.add_argument("--no-matrix", action="store_true", help="skip the fault matrix")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULT, help="where to write the JSON")
    args = parser.parse_args(argv)
    quick = args.quick
    args.jobs = args.jobs or (300 if quick else 10_000)
    args.users = args.users or (30 if quick else 50)
    args.crash_runs = args.crash_runs if args.crash_runs is not None else (4 if quick else 60)
    args.pidns_runs = args.pidns_runs if args.pidns_runs is not None else (0 if quick else 10)
    args.fuzz_examples = args.fuzz_examples or (30 if quick else 2000)
    args.matrix = not (args.no_matrix or quick)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    from tests.secrets_guard import SecretsGuard

    guard = SecretsGuard()
    guard.install(keep=False)
    # aiosqlite's DEBUG lines echo every SQL call; the database itself is scanned instead.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="imagegate-soak-") as tmp:
        figures = asyncio.run(run(Path(tmp), args, guard))
    guard.uninstall()
    figures["secret_leaks"] = len(guard.leaks)
    figures["secret_leak_places"] = sorted(
        {f"{leak.label} in {leak.where}" for leak in guard.leaks}
    )
    figures["log_records_scanned"] = guard.records
    figures["error_messages_scanned"] = guard.errors
    figures["seconds"] = round(time.monotonic() - started, 1)
    checks = evaluate(figures, args)
    figures["checks"] = checks
    figures["passed"] = all(ok for ok, _ in checks.values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
    print(render(figures, args))
    print(f"\nwritten to {args.out}")
    return 0 if figures["passed"] else 1


async def run(tmp: Path, args: argparse.Namespace, guard: Any) -> dict[str, Any]:
    from bench import (
        soak_crash,
        soak_dbcopy,
        soak_fuzz,
        soak_hostile,
        soak_lag,
        soak_load,
        soak_matrix,
        soak_pidns,
    )

    figures: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "command": " ".join(["python -m bench.soak", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": _machine(),
        "seed": args.seed,
    }
    if args.matrix:
        print("fault matrix ...", flush=True)
        start = time.monotonic()
        (tmp / "matrix").mkdir()
        cells, failed = await soak_matrix.run_matrix(tmp / "matrix")
        figures.update(
            matrix_cells=cells,
            matrix_failed=len(failed),
            matrix_failures=[f"{cell}: {'; '.join(p)}" for cell, p in failed][:20],
            matrix_seconds=round(time.monotonic() - start, 1),
        )
    print(f"load soak: {args.jobs} jobs, {args.users} users ...", flush=True)
    (tmp / "load").mkdir()
    load = await soak_load.run_load(
        tmp / "load",
        jobs=args.jobs,
        users=args.users,
        fault_rate=args.fault_rate,
        seed=args.seed,
        quick=args.quick,
    )
    figures.update(_load_figures(load, guard))
    print("db copy of the load soak's database to PostgreSQL ...", flush=True)
    figures.update(await soak_dbcopy.run_copy(tmp / "load" / "soak.db"))
    print(f"crash recovery: {args.crash_runs} kill -9 runs ...", flush=True)
    (tmp / "crash").mkdir()
    crash = await soak_crash.run_crash_phase(tmp / "crash", runs=args.crash_runs, seed=args.seed)
    for key in crash.secrets:
        guard.register(key, "crash-run API key")
    figures.update(crash.as_dict())
    figures["secrets_in_database"] = _scan_database(tmp / "crash" / "crash.db", crash.secrets)
    print(f"two processes, separate PID namespaces: {args.pidns_runs} runs ...", flush=True)
    pidns = await soak_pidns.run_pidns_phase(tmp / "pidns", runs=args.pidns_runs)
    figures.update(pidns.as_dict())
    figures["free_images"] = figures.get("free_images", 0) + pidns.free_images
    figures["late_charges"] = figures.get("late_charges", 0) + pidns.late_charges
    print("a zero-credit user's largest edit, event-loop lag ...", flush=True)
    (tmp / "lag").mkdir()
    seconds = 0.5 if args.quick else 2.0
    figures.update(await soak_lag.run_lag_phase(tmp / "lag", seconds=seconds))
    print("hostile input ...", flush=True)
    (tmp / "hostile").mkdir()
    figures.update(await soak_hostile.run_all(tmp / "hostile"))
    print(f"fuzzing: {args.fuzz_examples} examples per target ...", flush=True)
    figures.update(await asyncio.to_thread(_fuzz, soak_fuzz, args.fuzz_examples, args.quick))
    return figures


def _load_figures(load: dict[str, Any], guard: Any) -> dict[str, Any]:
    from bench.soak_load import LoadFigures

    result: LoadFigures = load["figures"]
    for key in result.secrets:
        guard.register(key, "soak emulator API key")
    audit = load["audit"]
    warm, end = load["warm"], load["end"]
    samples = result.samples
    step = max(1, len(samples) // 120)
    return {
        "jobs": result.jobs,
        "jobs_per_s": round(result.jobs / result.seconds, 1) if result.seconds else 0.0,
        "load_seconds": round(result.seconds, 1),
        "delivered": result.delivered,
        "refused": dict(result.refused),
        "operations": dict(result.operations),
        "reads": result.reads,
        "untyped_errors": len(result.untyped_errors),
        "untyped_error_examples": result.untyped_errors[:10],
        "faults_injected": sum(result.faults_injected.values()),
        "faults_by_kind": dict(result.faults_injected),
        "faults_seen": load["faults_seen"],
        "provider_requests": load["provider_requests"],
        "ignored_callbacks": load["ignored_callbacks"],
        "replays": result.replays,
        "replays_served": result.replays_served,
        "holds": audit.holds,
        "credits_charged": audit.charged,
        "credits_reported_to_callers": result.charged_reported,
        "refunds": audit.refunds,
        "partial_refunds": audit.partial_refunds,
        "free_images": audit.free_images,
        "late_charges": audit.late_charges,
        "stuck_holds": audit.stuck_holds,
        "ledger_mismatches": audit.ledger_mismatches,
        "double_entries": audit.double_entries,
        "missing_refunds": audit.missing_refunds,
        "charge_mismatches": audit.charge_mismatches,
        "job_mismatches": audit.job_mismatches,
        "running_jobs": audit.running_jobs,
        "audit_problems": audit.problems[:20],
        "balance_mismatches": len(result.balance_mismatches),
        "balance_mismatch_examples": result.balance_mismatches[:10],
        "fd_before": warm.get("fds"),
        "fd_after": end["fds"],
        "fd_growth": end["fds"] - warm.get("fds", end["fds"]),
        "tasks_before": warm.get("tasks"),
        "tasks_after": end["tasks"],
        "task_growth": end["tasks"] - warm.get("tasks", end["tasks"]),
        "rss_before_mb": round(warm.get("rss", end["rss"]), 1),
        "rss_after_mb": round(end["rss"], 1),
        "rss_growth_mb": round(end["rss"] - warm.get("rss", end["rss"]), 1),
        "rss_max_mb": round(max((s[1] for s in samples), default=end["rss"]), 1),
        "rss_growth_second_half_mb": _second_half_growth(samples),
        "series": [
            {"t": round(t, 1), "rss_mb": round(rss, 1), "fds": fds, "tasks": tasks}
            for t, rss, fds, tasks in samples[::step]
        ],
    }


def _second_half_growth(samples: list[tuple[float, float, int, int]]) -> float:
    """RSS at the end of the run minus RSS at its middle (MB): the slope once warm."""
    busy = samples[: max(1, len(samples) - 4)]  # the last samples are after the users left
    if len(busy) < 4:
        return 0.0
    return round(busy[-1][1] - busy[len(busy) // 2][1], 1)


def _fuzz(module: Any, examples: int, quick: bool) -> dict[str, Any]:
    total, failures = 0, []
    per_target = {}
    for name in module.TARGETS:
        count, failure = module.run_target(name, examples, derandomize=quick)
        total += count
        per_target[name] = count
        if failure:
            failures.append(failure)
    return {
        "fuzz_targets": len(module.TARGETS),
        "fuzz_examples": total,
        "fuzz_examples_by_target": per_target,
        "fuzz_crashes": len(failures),
        "fuzz_failures": [f[:1500] for f in failures],
    }


def _scan_database(path: Path, secrets: list[str]) -> int:
    """How many stored text values contain one of ``secrets``."""
    import sqlite3

    if not path.exists():
        return 0
    found = 0
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - our own tables
                text = " ".join(str(value) for value in row)
                found += any(secret in text for secret in secrets)
    return found


def evaluate(f: dict[str, Any], args: argparse.Namespace) -> dict[str, tuple[bool, str]]:
    """Each check: (passed, what it requires)."""
    zero = (
        "untyped_errors", "stuck_holds", "ledger_mismatches", "double_entries", "missing_refunds",
        "charge_mismatches", "job_mismatches", "running_jobs", "balance_mismatches",
        "credits_lost", "credits_doubled", "fuzz_crashes", "secret_leaks", "secrets_in_database",
        "hostile_controls_failed", "db_copy_mismatches", "free_images", "pidns_released_live",
        "pidns_released_early",
    )  # fmt: skip
    checks = {name: (f.get(name) == 0, "= 0") for name in zero}
    checks["crash_problems"] = (not f.get("crash_problems"), "none")
    checks["ssrf_refused"] = (f["ssrf_refused"] == f["ssrf_cases"], "= ssrf_cases")
    checks["hostile_refused"] = (f["hostile_refused"] == f["hostile_cases"], "= hostile_cases")
    checks["faults_injected"] = (f["faults_injected"] > 0, "> 0")
    checks["task_growth"] = (f["task_growth"] <= 0, "<= 0 (flat)")
    checks["pidns_problems"] = (not f.get("pidns_problems"), "none")
    checks["zero_credit_refused"] = (
        f["zero_credit_refused"] == f["zero_credit_attempts"],
        "= zero_credit_attempts",
    )
    if not args.quick:  # a few hundred jobs say nothing about memory or connection pools
        checks["pidns_runs"] = (f["pidns_runs"] >= 10, ">= 10")
        checks["pidns_late_charges"] = (f["pidns_late_charges"] > 0, "> 0 (a freeze in each run)")
        checks["zero_credit_lag_max_ms"] = (f["zero_credit_lag_max_ms"] <= 100, "<= 100")
        checks["fd_growth"] = (f["fd_growth"] <= 10, "<= 10 (flat)")
        checks["rss_growth_mb"] = (f["rss_growth_mb"] <= 30, "<= 30 MB from warm-up to end")
        checks["rss_growth_second_half_mb"] = (
            f["rss_growth_second_half_mb"] <= 8,
            "<= 8 MB over the second half (flat once warm)",
        )
    if "matrix_failed" in f:
        checks["matrix_failed"] = (f["matrix_failed"] == 0, "= 0")
    return checks


KEYS = [
    ("matrix_cells", "fault matrix cells (variant x fault x persistence)"),
    ("matrix_failed", "  cells that failed"),
    ("jobs", "jobs through the service"),
    ("jobs_per_s", "  jobs per second"),
    ("delivered", "  delivered"),
    ("faults_injected", "  faults injected"),
    ("faults_seen", "  faults that hit a request"),
    ("provider_requests", "  provider requests (emulators)"),
    ("refunds", "  refunds (holds given back in full)"),
    ("partial_refunds", "  partial refunds (part of a hold given back)"),
    ("credits_charged", "  credits charged"),
    ("replays_served", "  idempotent retries answered from the store"),
    ("ignored_callbacks", "  duplicate or late callbacks ignored"),
    ("stuck_holds", "  stuck holds"),
    ("ledger_mismatches", "  ledger mismatches"),
    ("balance_mismatches", "  users whose balance != grants - reported charges"),
    ("untyped_errors", "  errors that were not ImageGateError"),
    ("fd_before", "  open file descriptors after warm-up"),
    ("fd_after", "  open file descriptors at the end"),
    ("tasks_before", "  asyncio tasks after warm-up"),
    ("tasks_after", "  asyncio tasks at the end"),
    ("rss_before_mb", "  RSS after warm-up (MB)"),
    ("rss_after_mb", "  RSS at the end (MB)"),
    ("rss_max_mb", "  RSS peak (MB)"),
    ("rss_growth_second_half_mb", "  RSS growth over the second half (MB)"),
    ("db_copy_rows", "rows copied to PostgreSQL (db copy)"),
    ("db_copy_mismatches", "  rows that differ after the copy"),
    ("free_images", "images delivered without their charge"),
    ("late_charges", "jobs charged after their hold was released (late charges)"),
    ("pidns_runs", "runs of two processes in separate PID namespaces"),
    ("pidns_long_jobs", "  jobs that queued longer than a lease and the old hold lifetime"),
    ("pidns_released_live", "  holds released while their process lived"),
    ("pidns_released_frozen", "  holds of a frozen process released by the other"),
    ("pidns_released_after_kill", "  holds of a killed process released after its lease"),
    ("pidns_released_early", "  ... released before its lease lapsed"),
    ("zero_credit_lag_max_ms", "event-loop lag while a zero-credit user sends the largest edit"),
    ("zero_credit_lag_baseline_max_ms", "  the same without that user (ms)"),
    ("zero_credit_refusal_max_ms", "  time to refuse that user (ms)"),
    ("crash_runs", "kill -9 runs"),
    ("crash_jobs_started", "  jobs started in killed processes"),
    ("crash_replays_served", "  retries after a restart served from the store"),
    ("crash_replays_refused", "  retries after a restart refused (job was refunded)"),
    ("credits_lost", "  credits lost"),
    ("credits_doubled", "  credits doubled"),
    ("ssrf_cases", "SSRF cases"),
    ("ssrf_refused", "  refused"),
    ("hostile_cases", "hostile input cases (SSRF included)"),
    ("hostile_refused", "  refused cleanly, nothing charged"),
    ("fuzz_examples", "fuzz examples"),
    ("fuzz_crashes", "  targets with an untyped error"),
    ("log_records_scanned", "log records scanned for secrets"),
    ("error_messages_scanned", "error messages scanned for secrets"),
    ("secret_leaks", "  secrets found"),
    ("seconds", "total seconds"),
]


def render(f: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [f"imagegate soak ({f['mode']}, {f['command']})", ""]
    width = max(len(label) for _, label in KEYS)
    for key, label in KEYS:
        if key in f:
            lines.append(f"{label.ljust(width)}  {f[key]}")
    lines += ["", "checks:"]
    for name, (ok, rule) in f["checks"].items():
        lines.append(f"  {'ok  ' if ok else 'FAIL'} {name} {rule} (is {f.get(name)})")
    problems = (
        f.get("matrix_failures", []) + f.get("audit_problems", []) + f.get("crash_problems", [])
        + f.get("hostile_failures", []) + f.get("fuzz_failures", [])
        + f.get("untyped_error_examples", []) + f.get("balance_mismatch_examples", [])
        + f.get("db_copy_problems", []) + f.get("pidns_problems", [])
        + f.get("secret_leak_places", [])
    )  # fmt: skip
    if problems:
        lines += ["", "problems:"] + [f"  {p[:300]}" for p in problems[:30]]
    lines += ["", "PASSED" if f["passed"] else "FAILED"]
    return "\n".join(lines)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except OSError:
        return "unknown"


def _machine() -> dict[str, Any]:
    try:
        from bench.common import machine

        return machine()
    except Exception:  # the benchmarks' helper is optional here
        import os
        import platform

        return {"cores": os.cpu_count(), "python": platform.python_version()}


if __name__ == "__main__":
    sys.exit(main())
