"""Crash recovery: kill -9 the serving process at random points of its jobs, many times.

Each run starts ``bench.soak_crash_child`` (an ``ImageService`` with an OpenAI-compatible
emulator and the placeholder provider, three workers making jobs) and kills it with SIGKILL:
even runs right after a chosen step of a job commits (``KILL_POINTS``, in turn), odd runs at
a random moment. Then this process waits for the dead one's lease to lapse (``LEASE_S``) and
"restarts" it (``ImageService.open``, which releases what the dead process held) and checks:

- ``audit``: no hold open, every ledger sums to its account, one capture or one refund per
  hold, every charge equal to the images delivered, every job record agreeing with its hold;
- the user's balance equals the grant minus every capture (nothing lost, nothing refunded
  twice);
- every job the dead process reported as delivered is in the database, succeeded, with the
  same charge (a committed charge is never lost);
- the next run first sends again every request the dead process never answered (same
  idempotency key): it must get the stored result with no new charge, or "already ran and
  failed" when the job was refunded; never a second charge, never images for free.

``states_at_kill`` counts where the interrupted jobs were when the process died.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.soak_crash_child import KILL_POINTS
from bench.soak_support import audit
from core import Caller, ImageService, load_settings
from core.db import open_database
from tests.emulators import Fault, create_emulator, running

ROOT = Path(__file__).resolve().parents[1]
GRANT = 1_000_000
USER = "crash"
KEY_ENV = "IMAGEGATE_CRASH_OPENAI_KEY"
LEASE_S = 0.3  # the dead child's holds are released this long after its last renewal


@dataclass
class CrashReport:
    runs: int = 0
    killed: int = 0
    jobs_started: int = 0
    jobs_delivered: int = 0
    jobs_failed: int = 0
    replays: int = 0
    replays_served: int = 0  # stored result returned, no new charge
    replays_refused: int = 0  # "already ran and failed": the job had been refunded
    credits_lost: int = 0
    credits_doubled: int = 0
    kill_points: Counter[str] = field(default_factory=Counter)
    states_at_kill: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # The API key the runs used: never reported, not even in a failed assertion.
    secrets: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "crash_runs": self.runs,
            "crash_kills": self.killed,
            "crash_jobs_started": self.jobs_started,
            "crash_jobs_delivered": self.jobs_delivered,
            "crash_jobs_failed": self.jobs_failed,
            "crash_replays": self.replays,
            "crash_replays_served": self.replays_served,
            "crash_replays_refused": self.replays_refused,
            "credits_lost": self.credits_lost,
            "credits_doubled": self.credits_doubled,
            "crash_kill_points": dict(self.kill_points),
            "crash_states_at_kill": dict(self.states_at_kill),
            "crash_problems": self.problems[:20],
            "crash_seconds": round(self.seconds, 1),
        }


def _config(tmp: Path, base_url: str, database: dict[str, Any] | None) -> Path:
    path = tmp / "crash.toml"
    section = {"path": str(tmp / "crash.db"), "lease_s": LEASE_S, **(database or {})}
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in section.items())
    path.write_text(
        f"""
[database]
{lines}
[images]
dir = "{tmp / "images"}"
[providers.openai]
kind = "openai"
base_url = "{base_url}"
api_key_env = "{KEY_ENV}"
models = ["dall-e-2"]
timeout_s = 5
[providers.placeholder]
kind = "placeholder"
models = ["default"]
[pricing]
default = 1
[quota]
allowance = 0
[defaults]
job_deadline_s = 20
""",
        encoding="utf-8",
    )
    return path


async def run_crash_phase(
    tmp: Path,
    *,
    runs: int,
    budget_s: float | None = None,
    min_runs: int = 0,
    seed: int = 8,
    database: dict[str, Any] | None = None,
) -> CrashReport:
    """Kill and restart ``runs`` times (fewer if ``budget_s`` runs out first, but at least
    ``min_runs``). ``database``: ``[database]`` keys (default: SQLite in ``tmp``; with
    ``url_env``, PostgreSQL, whose variable the child processes inherit)."""
    report = CrashReport()
    rng = random.Random(seed)
    started = time.monotonic()
    key = f"sk-crash-{secrets.token_hex(12)}"
    report.secrets.append(key)
    emu = create_emulator("openai", api_key=key, image_size=(64, 64))
    saved_key = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = key  # the parent opens the same config
    try:
        config = (tmp, database)
        await _runs(config, emu, key, runs, budget_s, min_runs, rng, started, report)
    finally:
        if saved_key is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = saved_key
    report.seconds = time.monotonic() - started
    return report


async def _runs(
    where: tuple[Path, dict[str, Any] | None],
    emu: Any,
    key: str,
    runs: int,
    budget_s: float | None,
    min_runs: int,
    rng: random.Random,
    started: float,
    report: CrashReport,
) -> None:
    tmp, database = where
    async with running(emu) as url:
        config = _config(tmp, url + emu.base_path, database)
        env = {**os.environ, KEY_ENV: key, "PYTHONPATH": str(ROOT)}
        settings = load_settings(config)
        service = await ImageService.open(settings, sweeper=False)
        admin = Caller(frontend="cli", user_id="ops", is_admin=True)
        await service.grant(admin, Caller(frontend="cli", user_id=USER), GRANT)
        await service.aclose()
        pending: list[dict[str, Any]] = []
        delivered: dict[str, dict[str, Any]] = {}
        for run in range(runs):
            over = budget_s is not None and time.monotonic() - started > budget_s
            if over and run >= min_runs:
                break
            point = KILL_POINTS[(run // 2) % len(KILL_POINTS)] if run % 2 == 0 else None
            # Some provider calls fail for good (503 on every retry): refunds to kill during
            # (only a failed job takes the release and finish_job steps).
            emu.clear()
            refunding = point in ("release", "finish_job")
            failures = 60 if refunding else rng.choice((0, 3, 9, 30))
            emu.inject(Fault(status=503, path="/images/"), times=failures)
            again = rng.sample(sorted(delivered), min(2, len(delivered)))
            plan = {
                "config": str(config),
                "user": USER,
                "run": run,
                "seed": rng.randrange(2**32),
                "models": ["openai:dall-e-2", "placeholder:default"],
                "concurrency": 3,
                "max_jobs": 400,
                "kill_at": point,
                "kill_after": rng.randint(1, 4),
                "replay": pending + [{"key": k, "fields": delivered[k]["fields"]} for k in again],
            }
            events, killed = await _run_child(tmp, plan, env, rng)
            report.runs += 1
            report.killed += killed
            report.kill_points[point or "random moment"] += 1
            pending = await _verify(settings, config, events, delivered, report)


async def _run_child(
    tmp: Path, plan: dict[str, Any], env: dict[str, str], rng: random.Random
) -> tuple[list[dict[str, Any]], bool]:
    plan_path = tmp / f"plan{plan['run']}.json"
    plan_path.write_text(json.dumps(plan), encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.soak_crash_child",
        str(plan_path),
        cwd=str(ROOT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    events: list[dict[str, Any]] = []
    ready = asyncio.Event()

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            try:
                event = json.loads(line)
            except ValueError:  # a line cut short by the kill: the caller never saw it
                continue
            events.append(event)
            if event["event"] == "ready":
                ready.set()

    reader = asyncio.create_task(read())
    try:
        await asyncio.wait_for(ready.wait(), 60)
        if plan["kill_at"]:
            # It kills itself at the chosen step; if that step never comes, kill it anyway.
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(rng.uniform(0.05, 0.7))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        code = await process.wait()
        await reader
    return events, code == -signal.SIGKILL


async def _states(settings: Any, keys: list[str]) -> Counter[str]:
    """Where each interrupted job was when the process died (read before any recovery: the
    database alone is opened, not the service)."""
    states: Counter[str] = Counter()
    db = await open_database(settings.database, migrate=False)
    try:
        for key in keys:
            hold = await db.fetchone("SELECT state, job_id FROM hold WHERE idem_key = ?", (key,))
            if hold is None:
                states["before reserve"] += 1
                continue
            job = await db.fetchone("SELECT status FROM job WHERE job_id = ?", (hold[1],))
            images = (await db.fetchone("SELECT count(*) FROM image WHERE job_id = ?", (hold[1],)))[
                0
            ]
            if job is None:
                states["held, no job record"] += 1
            elif hold[0] == "held":
                states["held, images stored" if images else "held, provider call"] += 1
            elif job[0] == "running":
                states[f"{hold[0]}, job record not final"] += 1
            else:
                states["finished, caller not answered"] += 1
    finally:
        await db.close()
    return states


async def _verify(
    settings: Any,
    config: Path,
    events: list[dict[str, Any]],
    delivered: dict[str, dict[str, Any]],
    report: CrashReport,
) -> list[dict[str, Any]]:
    """Restart, check everything, and return the requests to send again next run."""
    started = {e["key"]: e for e in events if e["event"] == "start"}
    ended = {e["key"]: e for e in events if e["event"] in ("done", "fail")}
    unanswered = [k for k in started if k not in ended]
    report.states_at_kill.update(await _states(settings, unanswered))
    await asyncio.sleep(LEASE_S)  # the dead child's lease runs out
    service = await ImageService.open(settings, sweeper=False)  # the restart
    try:
        problems: list[str] = []
        result = await audit(service)
        problems += [f"audit: {p}" for p in result.problems]
        if not set(result.problems) <= set(report.problems):  # count each problem once
            report.credits_lost += result.missing_refunds + result.charge_mismatches
            report.credits_doubled += result.double_entries
        for key, end in ended.items():
            replay = started[key]["replay"]
            report.replays += replay
            report.jobs_started += not replay
            hold = await service.db.fetchone(
                "SELECT state, settled_amount, job_id FROM hold WHERE idem_key = ?", (key,)
            )
            if end["event"] == "fail":
                report.jobs_failed += not replay
                if replay and end["code"] == "invalid_input":
                    report.replays_refused += 1
                if hold is not None and hold["state"] == "settled":
                    problems.append(f"{key}: failed ({end['code']}) but its hold was settled")
                    report.credits_lost += hold["settled_amount"] or 0
                continue
            report.jobs_delivered += not replay
            report.replays_served += replay and end["replayed"]
            delivered[key] = {"fields": started[key]["fields"], "charged": end["charged"]}
            if hold is None or hold["state"] != "settled" or hold["job_id"] != end["job"]:
                state = None if hold is None else hold["state"]
                problems.append(
                    f"{key}: delivered as job {end['job']}, but its hold is {state}"
                    f" (images handed out without a charge)"
                )
                report.credits_lost += end["images"]
                continue
            job = await service.store.job(end["job"])
            if job is None or job.status not in ("succeeded", "partial"):
                problems.append(f"{key}: delivered, but job record is {job and job.status}")
            charged = hold["settled_amount"]
            if end["replayed"]:
                if end["charged"] != charged:
                    problems.append(f"{key}: replay reported {end['charged']}, hold {charged}")
            elif end["charged"] != charged or end["images"] != charged:
                problems.append(
                    f"{key}: caller saw {end['charged']} credits for {end['images']} images,"
                    f" the hold captured {charged}"
                )
                report.credits_lost += abs(end["charged"] - charged)
        problems += await _balance(service, report)
        report.problems += [p for p in problems if p not in report.problems]
    finally:
        await service.aclose()
    return [{"key": k, "fields": started[k]["fields"]} for k in unanswered]


async def _balance(service: ImageService, report: CrashReport) -> list[str]:
    captured = await service.db.fetchone(
        "SELECT CAST(COALESCE(SUM(settled_amount), 0) AS BIGINT) FROM hold"
        " WHERE user_id = ? AND state = 'settled'",
        (f"cli:{USER}",),
    )
    status = await service.quota(Caller(frontend="cli", user_id=USER))
    expected = GRANT - captured[0]
    actual = status.remaining + status.held
    if actual > expected:
        report.credits_doubled += actual - expected
    elif actual < expected:
        report.credits_lost += expected - actual
    if actual != expected:
        return [f"balance {actual}, expected {expected} (grant {GRANT} - captured {captured[0]})"]
    return []
