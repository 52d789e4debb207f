"""What the reliability phases share: a server on the running loop, and the ledger audit.

``audit(service)`` is the referee of every phase. It reads the quota tables and the job records
and counts every way a credit could go wrong: a hold still open, a ledger that does not sum to
its account, a second capture or refund, a charge that differs from what was delivered, a job
whose record disagrees with its hold. A phase passes when every count except ``refunds`` (and
the informational ``partial_refunds`` and ``late_charges``) is zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import uvicorn

from core import ImageService


@contextlib.asynccontextmanager
async def serve_in_loop(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on the running event loop; yields ``http://127.0.0.1:PORT``.

    The ``CallbackHub`` resolves futures of the loop it runs on, so it must share the
    service's loop (a server in another thread would set them from the wrong thread).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("callback server stopped before it started")
        await asyncio.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class Relay:
    """An ASGI app that forwards to whichever app ``target`` is now (404 when none).

    One server per test module instead of one per ``CallbackHub``: starting and stopping
    uvicorn costs about 0.2 s each time.
    """

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.target is not None:
            await self.target(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@dataclass
class Audit:
    """Counts from one pass over the quota and job tables (see the module docstring)."""

    holds: int = 0
    jobs: int = 0
    charged: int = 0  # credits captured, in total
    refunds: int = 0  # holds given back in full (released or expired)
    late_charges: int = 0  # holds released while their job lived, charged when it delivered
    free_images: int = 0  # images of a job whose hold was never charged (must be 0)
    partial_refunds: int = 0  # settled holds whose unused part was given back
    stuck_holds: int = 0  # still 'held'
    ledger_mismatches: int = 0  # users whose ledger does not sum to their account
    double_entries: int = 0  # a hold with two captures or two refunds
    missing_refunds: int = 0  # a closed hold whose credits were not given back
    charge_mismatches: int = 0  # captured != delivered images x price
    job_mismatches: int = 0  # job record disagrees with its hold (status or credits)
    running_jobs: int = 0  # jobs still marked running
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.stuck_holds
            or self.ledger_mismatches
            or self.double_entries
            or self.missing_refunds
            or self.charge_mismatches
            or self.job_mismatches
            or self.running_jobs
            or self.free_images
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["problems"] = self.problems[:20]
        return out


async def audit(service: ImageService, *, finished: bool = True) -> Audit:
    """Check every hold, ledger entry and job of the service's database.

    ``finished``: no job may still be running (false while a phase is under way).
    """
    db = service.db
    result = Audit()
    result.ledger_mismatches = len(await service.quotas.check_ledger())
    entries: dict[str, Counter[str]] = defaultdict(Counter)
    captured: dict[str, int] = defaultdict(int)
    refunded: dict[str, int] = defaultdict(int)
    for hold_id, kind, d_held in await db.fetchall(
        "SELECT hold_id, kind, d_held FROM ledger WHERE hold_id IS NOT NULL"
    ):
        entries[hold_id][kind] += 1
        if kind == "capture":
            captured[hold_id] += -d_held
        elif kind in ("release", "expire"):
            refunded[hold_id] += -d_held
    images: dict[str, int] = defaultdict(int)
    for job_id, model, operation in await db.fetchall(
        "SELECT i.job_id, i.model, j.operation FROM image i JOIN job j USING (job_id)"
    ):
        images[job_id] += service.registry.price(model, operation)
    jobs = {
        row[0]: row
        for row in await db.fetchall("SELECT job_id, status, credits_charged, hold_id FROM job")
    }
    result.jobs = len(jobs)
    holds = await db.fetchall(
        "SELECT hold_id, state, from_allowance + from_granted, settled_amount, job_id FROM hold"
    )
    result.holds = len(holds)
    for hold_id, state, amount, settled, job_id in holds:
        kinds = entries[hold_id]
        late = kinds["late_charge"]  # released, then charged when its job delivered after all
        result.late_charges += late
        if (
            kinds["hold"] != 1
            or kinds["capture"] > 1
            or kinds["release"] + kinds["expire"] > 1
            or late > 1
        ):
            result.double_entries += 1
            result.problems.append(f"hold {hold_id}: ledger entries {dict(kinds)}")
        job = jobs.get(job_id or "")
        if state == "held":
            result.stuck_holds += finished
            continue
        if state == "settled":
            result.charged += captured[hold_id]
            refund = amount if late else amount - settled
            if captured[hold_id] != settled or refunded[hold_id] != refund:
                result.missing_refunds += 1
                result.problems.append(
                    f"hold {hold_id}: settled {settled} of {amount}, captured"
                    f" {captured[hold_id]}, refunded {refunded[hold_id]}"
                )
            result.partial_refunds += settled < amount
            if job is not None and images[job_id] != settled:
                result.charge_mismatches += 1
                result.problems.append(
                    f"job {job_id}: charged {settled} for images worth {images[job_id]}"
                )
            if job is not None and (job[1] not in ("succeeded", "partial") or job[2] != settled):
                result.job_mismatches += 1
                result.problems.append(
                    f"job {job_id}: status {job[1]} with {job[2]} credits, but its hold"
                    f" captured {settled}"
                )
        else:
            result.refunds += 1
            if captured[hold_id] or refunded[hold_id] != amount:
                result.missing_refunds += 1
                result.problems.append(
                    f"hold {hold_id} {state}: refunded {refunded[hold_id]} of {amount}"
                )
            if job is not None and (job[1] in ("succeeded", "partial") or job[2]):
                result.job_mismatches += 1
                result.problems.append(
                    f"job {job_id}: status {job[1]} with {job[2]} credits, but its hold was {state}"
                )
    (result.free_images,) = await db.fetchone(
        "SELECT count(*) FROM image i JOIN job j ON j.job_id = i.job_id"
        " JOIN hold h ON h.hold_id = j.hold_id WHERE h.state <> 'settled'"
    )
    if result.free_images:
        result.problems.append(f"{result.free_images} image(s) delivered without a charge")
    if finished:
        result.running_jobs = sum(job[1] == "running" for job in jobs.values())
        if result.running_jobs:
            result.problems.append(f"{result.running_jobs} job(s) still marked running")
    return result


def open_fds() -> int:
    """File descriptors this process holds open now."""
    import os

    return len(os.listdir("/proc/self/fd"))
