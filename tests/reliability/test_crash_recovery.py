"""Crash recovery (issue 8): kill -9 the serving process at every step of a job, many times.

Half the runs die right after a chosen step commits (reserve, job record, provider answer,
images stored, charge, refund, final record), half at a random moment. After each restart:
no hold is left open, the ledger sums to the balance, every job is either delivered and
charged or refunded, every job the dead process delivered is there with its charge, and
sending its unanswered requests again (same idempotency keys) never charges twice and never
hands out images that were refunded. ``make soak`` runs more of the same (``bench/soak_crash.py``).
Both database backends: the dead process's transactions are SQLite's or PostgreSQL's.
"""

from __future__ import annotations

from bench.soak_crash import KILL_POINTS, run_crash_phase


async def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    tmp_path, backend, secrets_guard
):
    steps = 2 * len(KILL_POINTS)  # even runs stop at each step in turn
    # PostgreSQL: each step once at least (a second backend, the same code above it).
    budget_s = 0 if "url_env" in backend else 18
    report = await run_crash_phase(
        tmp_path, runs=30, budget_s=budget_s, min_runs=steps, seed=20, database=backend
    )
    for key in report.secrets:
        secrets_guard.register(key, "crash-run API key")
    figures = report.as_dict()
    assert report.problems == [], figures
    assert (report.credits_lost, report.credits_doubled) == (0, 0), figures
    assert report.runs >= steps, figures
    assert set(KILL_POINTS) <= set(report.kill_points), figures
    assert report.killed == report.runs, figures
    assert report.jobs_delivered > 0 and report.jobs_failed > 0, figures
    assert report.replays_served > 0 and report.replays_refused > 0, figures
