"""Two processes with the same host name in separate PID namespaces share one database.

Each run starts ``bench.soak_pidns_child`` twice under ``unshare --pid --fork --mount-proc``
(so both are pid 1 on host ``$(hostname)``, as two containers in one pod are), against an
OpenAI-compatible emulator whose every call takes ``CALL_S``, at most one call at a time
per process (``max_concurrency = 1``), so jobs queue for longer than the old hold lifetime
(``hold_ttl_s``) and than a lease. Both sweep every 0.1 s. The run checks:

- while both live, neither releases a hold of the other (``released_live`` = 0), however long
  the jobs queue;
- after SIGSTOP of one with jobs under way, the other releases its holds once its lease has
  lapsed; after SIGCONT those jobs deliver and are charged anyway (``late_charges`` > 0);
- after ``kill -9`` of it, the other releases its holds, but only once its lease has lapsed
  (``released_early`` = 0: each release's ledger time is at or after the lease's end);
- the ledger audit (``bench/soak_support.audit``) and no image handed out without its charge
  (``free_images`` = 0).

Needs root (a PID namespace); ``tests/reliability/test_leases_processes.py`` runs one run.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.soak_support import audit
from core import Caller, ImageService, load_settings
from tests.emulators import Fault, create_emulator, running

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV = "IMAGEGATE_PIDNS_OPENAI_KEY"
# A lease must outlast the longest event-loop stall of a live process: the first provider
# call of a process stalls it for about 0.5 s on this machine (importing the HTTP client).
LEASE_S = 1.5
HOLD_TTL_S = 0.2
CALL_S = 0.6  # with three workers on one call slot, a job takes about 1.8 s
WORKERS = 3
GRANT = 100_000
WAIT_S = 60.0  # the longest any step may take before the run is reported as stuck


@dataclass
class PidnsReport:
    runs: int = 0
    jobs: int = 0  # answered jobs, both processes
    long_jobs: int = 0  # of them, jobs that took longer than the lease and the old hold TTL
    released_live: int = 0  # holds released while their process lived (must be 0)
    released_after_kill: int = 0  # holds of the killed process released by the other
    released_early: int = 0  # ... before the killed process's lease had lapsed (must be 0)
    released_frozen: int = 0  # holds of the frozen (SIGSTOP) process released by the other
    survivor_released: int = 0  # the survivor's, after the freeze (see ``_kill_and_check``)
    late_charges: int = 0  # jobs that delivered after their hold was released, charged anyway
    free_images: int = 0  # images delivered without their charge (must be 0)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "pidns_runs": self.runs,
            "pidns_jobs": self.jobs,
            "pidns_long_jobs": self.long_jobs,
            "pidns_released_live": self.released_live,
            "pidns_released_after_kill": self.released_after_kill,
            "pidns_released_early": self.released_early,
            "pidns_released_frozen": self.released_frozen,
            "pidns_survivor_released": self.survivor_released,
            "pidns_late_charges": self.late_charges,
            "pidns_free_images": self.free_images,
            "pidns_problems": self.problems[:20],
            "pidns_seconds": round(self.seconds, 1),
        }


def _config(tmp: Path, base_url: str) -> Path:
    path = tmp / "pidns.toml"
    path.write_text(
        f"""
[database]
path = "{tmp / "pidns.db"}"
lease_s = {LEASE_S}
[images]
dir = "{tmp / "images"}"
[providers.openai]
kind = "openai"
base_url = "{base_url}"
api_key_env = "{KEY_ENV}"
models = ["dall-e-2"]
max_concurrency = 1
timeout_s = 30
[pricing]
default = 1
[quota]
allowance = 0
hold_ttl_s = {HOLD_TTL_S}
sweep_interval_s = 0.1
[defaults]
job_deadline_s = 60
""",
        encoding="utf-8",
    )
    return path


class Child:
    """One ``bench.soak_pidns_child`` in its own PID namespace, and what it printed."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.events: list[dict[str, Any]] = []
        self.instance = ""
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, tmp: Path, name: str, config: Path, env: dict[str, str]) -> Child:
        plan = {
            "config": str(config),
            "user": f"pidns-{name}",
            "name": name,
            "model": "openai:dall-e-2",
            "workers": WORKERS,
        }
        plan_path = tmp / f"plan-{name}.json"
        plan_path.write_text(json.dumps(plan), encoding="utf-8")
        process = await asyncio.create_subprocess_exec(
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            sys.executable,
            "-m",
            "bench.soak_pidns_child",
            str(plan_path),
            cwd=str(ROOT),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return cls(name, process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:  # cut short by the kill
                continue
            if event["event"] == "ready":
                self.instance = event["instance"]
            self.events.append(event)

    def done(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "done"]

    def service_pid(self) -> int:
        """The host pid of the Python process (pid 1 inside its namespace)."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return int(children[0])

    def signal(self, signum: int) -> None:
        os.kill(self.service_pid(), signum)

    async def finish(self) -> None:
        """Wait for the process to end (killing it if it does not in time)."""
        try:
            await asyncio.wait_for(self.process.wait(), WAIT_S)
        except TimeoutError:
            self.process.kill()  # --kill-child takes the service with it
            await self.process.wait()
        await self._reader


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait until ``check()`` is true (polled every 20 ms).

    Raises:
        TimeoutError: not within ``WAIT_S``, naming ``what``.
    """
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"stuck waiting for {what}")
        await asyncio.sleep(0.02)


class Ledger:
    """Read-only queries on the run's database (the children write it meanwhile)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute(sql, params).fetchall()

    def holds(self, owner: str, state: str) -> int:
        sql = "SELECT count(*) FROM hold WHERE owner = ? AND state = ?"
        return self.rows(sql, (owner, state))[0][0]

    def lease_end(self, instance: str) -> int | None:
        rows = self.rows("SELECT expires_at FROM instance WHERE instance_id = ?", (instance,))
        return rows[0][0] if rows else None

    def release_times(self, owner: str, since: int) -> list[int]:
        return [
            row[0]
            for row in self.rows(
                "SELECT l.created_at FROM ledger l JOIN hold h ON h.hold_id = l.hold_id"
                " WHERE h.owner = ? AND l.kind = 'expire' AND l.created_at >= ?",
                (owner, since),
            )
        ]

    def late_charges(self, owner: str) -> int:
        return self.rows(
            "SELECT count(*) FROM ledger l JOIN hold h ON h.hold_id = l.hold_id"
            " WHERE h.owner = ? AND l.kind = 'late_charge'",
            (owner,),
        )[0][0]


async def run_pidns_phase(tmp: Path, *, runs: int) -> PidnsReport:
    """``runs`` runs of two processes in separate PID namespaces, one killed in each."""
    report = PidnsReport()
    started = time.monotonic()
    key = f"sk-pidns-{secrets.token_hex(12)}"
    emu = create_emulator("openai", api_key=key, image_size=(64, 64))
    emu.inject(Fault(delay_s=CALL_S, path="/images/"), times=10**6)
    env = {**os.environ, KEY_ENV: key, "PYTHONPATH": str(ROOT)}
    saved = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = key  # the parent opens the same config for its checks
    try:
        async with running(emu) as url:
            for run in range(runs):
                run_dir = tmp / f"run{run}"
                run_dir.mkdir(parents=True, exist_ok=True)
                await _one_run(run_dir, _config(run_dir, url + emu.base_path), env, report)
                report.runs += 1
    finally:
        if saved is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = saved
    report.seconds = time.monotonic() - started
    return report


async def _one_run(tmp: Path, config: Path, env: dict[str, str], report: PidnsReport) -> None:
    settings = load_settings(config)
    async with await ImageService.open(settings, sweeper=False) as service:
        admin = Caller(frontend="cli", user_id="ops", is_admin=True)
        for name in ("a", "b"):
            await service.grant(admin, Caller(frontend="cli", user_id=f"pidns-{name}"), GRANT)
    ledger = Ledger(settings.database.path)
    children: list[Child] = []
    try:
        first = await Child.start(tmp, "a", config, env)
        children.append(first)
        # The second starts while the first has holds: its start-up recovery must keep them.
        await until(
            lambda: bool(first.instance) and ledger.holds(first.instance, "held") > 0,
            "the first process's holds",
        )
        second = await Child.start(tmp, "b", config, env)
        children.append(second)
        long_s = max(LEASE_S, HOLD_TTL_S)
        for child in (first, second):
            await until(
                lambda c=child: sum(e["seconds"] > long_s for e in c.done()) >= 2,
                f"two long jobs of process {child.name}",
            )
        report.released_live += sum(ledger.holds(c.instance, "expired") for c in children)
        await _freeze_and_check(first, ledger, report)
        await _kill_and_check(first, second, ledger, report)
        second.signal(signal.SIGTERM)
        for child in children:
            await child.finish()
    except TimeoutError as exc:
        report.problems.append(f"run {tmp.name}: {exc}")
    finally:
        for child in children:
            if child.process.returncode is None:
                child.process.kill()
            await child.finish()
    await _audit(settings, children, report)


async def _freeze_and_check(victim: Child, ledger: Ledger, report: PidnsReport) -> None:
    """SIGSTOP ``victim`` while it has jobs under way, until the other process released its
    holds (its lease lapsed); after SIGCONT those jobs deliver and must be charged anyway."""
    await until(lambda: ledger.holds(victim.instance, "held") > 0, "holds to freeze")
    victim.signal(signal.SIGSTOP)
    try:
        await until(lambda: ledger.holds(victim.instance, "expired") > 0, "the frozen one's holds")
    finally:
        victim.signal(signal.SIGCONT)
    report.released_frozen += ledger.holds(victim.instance, "expired")
    await until(lambda: ledger.late_charges(victim.instance) > 0, "a late charge")


async def _kill_and_check(
    victim: Child, survivor: Child, ledger: Ledger, report: PidnsReport
) -> None:
    """kill -9 ``victim``; its holds must be released by ``survivor``, after its lease."""
    seen_end = ledger.lease_end(victim.instance) or 0
    killed_ms = int(time.time() * 1000)
    victim.signal(signal.SIGKILL)
    await victim.process.wait()
    lease_end = ledger.lease_end(victim.instance) or seen_end  # gone only if already swept
    await until(lambda: ledger.holds(victim.instance, "held") == 0, "the killed process's holds")
    times = ledger.release_times(victim.instance, since=killed_ms)
    report.released_after_kill += len(times)
    report.released_early += sum(t < lease_end for t in times)
    # The survivor lost holds only if the freeze caught the victim inside a write: SQLite's
    # lock then kept the survivor from renewing its lease (it is charged late, like the victim).
    report.survivor_released += ledger.holds(survivor.instance, "expired")


async def _audit(settings: Any, children: list[Child], report: PidnsReport) -> None:
    ledger = Ledger(settings.database.path)
    left = ledger.rows("SELECT count(*) FROM hold WHERE state = 'held'")[0][0]
    if left:  # checked before this process's own start-up recovery could tidy them up
        report.problems.append(f"{left} hold(s) still held after both processes ended")
    async with await ImageService.open(settings, sweeper=False) as service:
        result = await audit(service)
        report.problems += [f"audit: {p}" for p in result.problems]
        report.free_images += result.free_images
        report.late_charges += result.late_charges
    for child in children:
        for event in child.done():
            report.jobs += 1
            report.long_jobs += event["seconds"] > max(LEASE_S, HOLD_TTL_S)
            report.free_images += max(0, event["images"] - event["charged"])


async def _main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = await run_pidns_phase(Path(tmp), runs=int(sys.argv[1]) if sys.argv[1:] else 2)
    print(json.dumps(report.as_dict(), indent=2))


if __name__ == "__main__":
    asyncio.run(_main())
