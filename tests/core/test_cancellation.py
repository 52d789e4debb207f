"""Cancelling never strands credits (issue 12 item 6): a caller cancelled (an MCP client that
disconnects) at the moment its reservation's transaction runs gets nothing held and no job
left "running". The transaction is made to be running, and held there, when the caller is
cancelled: on SQLite by holding the writer thread inside the reservation's group, on
PostgreSQL by holding a lock on the user's account row that the reservation waits for.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest

from core import Caller, ImageRequest, ImageService
from tests.conftest import make_settings

ALICE = Caller(frontend="cli", user_id="alice")


async def _hold_writer(tx, entered: threading.Event, gate: threading.Event) -> None:
    """A SQLite transaction body that keeps the writer thread until ``gate`` is set."""
    entered.set()
    gate.wait(30)


async def _sqlite_reserve_running(service: ImageService, start: Callable[[], None]):
    """Start the job (``start``) so that its reservation is in the writer's group, executed
    but not committed, held there by the transaction queued after it. Returns the release."""
    first, second = (threading.Event(), threading.Event()), (threading.Event(), threading.Event())
    blocker = asyncio.create_task(service.db.transact(_hold_writer, *first))
    await asyncio.to_thread(first[0].wait)
    start()
    queue = service.db._writer._queue  # the reservation, queued behind the first blocker
    while queue.qsize() < 1:
        await asyncio.sleep(0.005)
    after = asyncio.create_task(service.db.transact(_hold_writer, *second))
    while queue.qsize() < 2:
        await asyncio.sleep(0.005)
    first[1].set()  # the next group: the reservation runs, then the second blocker holds it
    await asyncio.to_thread(second[0].wait)

    async def release() -> None:
        second[1].set()
        await asyncio.gather(blocker, after)

    return release


async def _pg_reserve_running(service: ImageService, start: Callable[[], None]):
    """Start the job so that its reservation has begun and waits for a lock on the user's
    account row that another transaction holds. Returns the release."""
    entered, gate = asyncio.Event(), asyncio.Event()

    async def lock_account(tx) -> None:
        await tx.fetchone("SELECT 1 FROM account WHERE user_id = ? FOR UPDATE", (ALICE.key,))
        entered.set()
        await gate.wait()

    blocker = asyncio.create_task(service.db.transact(lock_account))
    await entered.wait()
    start()
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    while (await service.db.fetchone(waiting))[0] < 1:
        await asyncio.sleep(0.005)

    async def release() -> None:
        gate.set()
        await blocker

    return release


async def test_cancelled_while_its_reservation_runs_strands_nothing(tmp_path, backend):
    settings = make_settings(tmp_path, database={**backend, "lease_s": 3600})
    async with await ImageService.open(settings, sweeper=False) as service:
        admin = Caller(frontend="cli", user_id="ops", is_admin=True)
        await service.grant(admin, ALICE, 5)  # the account row exists (PostgreSQL locks it)
        job: list[asyncio.Task] = []
        start = lambda: job.append(  # noqa: E731
            asyncio.create_task(service.generate(ALICE, ImageRequest(prompt="p", n=2)))
        )
        running: Callable[..., Awaitable[Callable[[], Awaitable[None]]]]
        running = (
            _pg_reserve_running if service.db.dialect == "postgresql" else (_sqlite_reserve_running)
        )
        release = await running(service, start)
        job[0].cancel()  # the client went away while the reservation runs
        await release()
        with pytest.raises(asyncio.CancelledError):
            await job[0]
        status = await service.quota(ALICE)
        assert (status.held, status.in_flight, status.remaining) == (0, 0, 55)
        rows = await service.db.fetchall("SELECT status, error FROM job")
        assert [tuple(r) for r in rows] == [
            ("cancelled", "the job was cancelled before it finished")
        ]
        kinds = sorted(e.kind for e in await service.history(ALICE, ALICE))
        assert kinds == ["grant", "hold", "release"]
        assert await service.quotas.check_ledger() == []
