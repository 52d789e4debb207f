"""Instance leases, on both backends: only the holds and jobs of a process whose lease lapsed
are released.

Several ``Leases`` on one database stand for several processes (the two-process test with
separate PID namespaces is ``tests/reliability/test_leases_processes.py``); a fake clock
moves time on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx

from core import Caller, ImageRequest, ImageService
from core.leases import Leases
from core.pg import PostgresDatabase
from core.quota import Policy, QuotaStore
from core.store import ImageStore
from tests.conftest import PG_URL_ENV, make_settings
from tests.core.test_quota import Clock
from tests.emulators import Fault, create_emulator

POLICY = Policy(allowance=10, hold_ttl_s=1)


async def _hold(store: QuotaStore, key: str, owner: str | None) -> str:
    hold = await store.reserve(
        "u", amount=1, idem_key=key, request_hash="h", policy=POLICY, owner=owner
    )
    return hold.hold_id


async def _states(store: QuotaStore, holds: dict[str, str]) -> dict[str, str]:
    return {name: (await store.hold_state(hold_id) or ("?",))[0] for name, hold_id in holds.items()}


FROZEN_S = 3.0  # a lease short enough to wait out on PostgreSQL, whose leases run on its clock


async def sweep_until_released(store: QuotaStore, instance: str) -> int:
    """Sweep until a sweep releases something; returns how many. A lease lapses when the
    clock leases follow says so: at once on SQLite (the store's fake clock was moved past
    it), within real seconds on PostgreSQL (the server's clock)."""
    with anyio.fail_after(FROZEN_S + 10):
        while not (released := await store.sweep(instance=instance)):
            await asyncio.sleep(0.05)
    return released


async def test_only_holds_of_lapsed_leases_are_released(store):
    clock, db = store.clock, store.db
    alive, me, frozen = (
        Leases(db, 3600, clock),
        Leases(db, 3600, clock),
        Leases(db, FROZEN_S, clock),
    )
    for lease in (alive, frozen, me):
        await lease.register()
    holds = {
        "alive": await _hold(store, "a", alive.instance_id),
        "frozen": await _hold(store, "f", frozen.instance_id),
        "mine": await _hold(store, "m", me.instance_id),
        "unknown": await _hold(store, "u", "oldhost/123/456"),  # no lease: an old version
        "ownerless": await _hold(store, "o", None),
    }
    assert await store.sweep(instance=me.instance_id) == 1  # only the unknown owner's
    clock.now += 1.5  # past every hold's TTL (1 s): a hold with a live lease stays held
    assert await store.sweep(instance=me.instance_id) == 1  # the owner-less one expired
    assert (await _states(store, holds))["frozen"] == "held"
    clock.now += FROZEN_S  # frozen's lease lapses; alive's and mine are renewed
    assert await alive.renew() and await me.renew()
    assert await sweep_until_released(store, me.instance_id) == 1
    assert await _states(store, holds) == {
        "alive": "held",
        "frozen": "expired",
        "mine": "held",
        "unknown": "expired",
        "ownerless": "expired",
    }
    # Even with its own lease lapsed, a process never releases its own holds.
    late = await _hold(store, "l", frozen.instance_id)
    assert await store.sweep(instance=frozen.instance_id) == 0
    assert await store.check_ledger() == []
    # The frozen process wakes up: its renewal reports the lapse and takes a new lease.
    assert await me.forget_lapsed() == 1  # frozen's (never its own)
    assert not await frozen.renew()
    assert await frozen.renew()
    assert await store.sweep(instance=me.instance_id) == 0
    assert (await store.hold_state(late) or ("?",))[0] == "held"


async def test_on_postgresql_leases_follow_the_servers_clock(tmp_path, pg_url, monkeypatch):
    """Hosts whose clocks are an hour apart share one PostgreSQL database: the one ahead
    releases nothing of a live process's, and the one behind still releases a dead one's once
    its lease lapsed, both by the server's clock."""
    monkeypatch.setenv(PG_URL_ENV, pg_url)
    settings = make_settings(tmp_path, database={"url_env": PG_URL_ENV, "lease_s": 60})
    caller = Caller(frontend="cli", user_id="alice")
    behind = ImageService.open(settings, sweeper=False, clock=lambda: time.time() - 3600)
    ahead = ImageService.open(settings, sweeper=False, clock=lambda: time.time() + 3600)
    async with await behind as live, await ahead as skewed:
        dead = Leases(live.db, 0.5)  # a process that stopped renewing
        await dead.register()
        holds = {}
        for name, owner in (("live", live.owner), ("dead", dead.instance_id)):
            hold = await live.quotas.reserve(
                caller.key, amount=1, idem_key=name, request_hash="h",
                policy=live.policy(caller), owner=owner,
            )  # fmt: skip
            holds[name] = hold.hold_id
        assert await sweep_until_released(live.quotas, live.owner) == 1  # an hour behind
        assert await skewed.recover() == 0  # an hour ahead
        assert await live.leases.renew() and await skewed.leases.renew()
        assert await _states(live.quotas, holds) == {"live": "held", "dead": "expired"}
        assert await live.quotas.check_ledger() == []


async def _beside_a_lock(
    db: PostgresDatabase, url: str, sweep: Callable[[], Awaitable[int]], table: str, key: str
) -> int:
    """What ``sweep`` returns, run while another connection has locked one row of ``table``
    (``key`` in its first column); fails as soon as the sweep waits for that lock."""
    other = await asyncpg.connect(url)
    try:
        async with other.transaction():
            column = "hold_id" if table == "hold" else "job_id"
            await other.execute(f"SELECT 1 FROM {table} WHERE {column} = $1 FOR UPDATE", key)
            task = asyncio.create_task(sweep())
            while not task.done():
                assert not await db.fetchall(
                    "SELECT 1 FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND application_name = 'imagegate'"
                ), f"the sweep waited for a {table} row another transaction had locked"
                await asyncio.sleep(0.01)
            return await task
    finally:
        await other.close()


async def test_sweeps_pass_over_rows_another_transaction_has_locked(pg_url: str, tmp_path: Path):
    """Replicas sweeping at once on PostgreSQL: each takes only the holds and jobs nobody
    else has locked, in one order (holds by user and id, jobs by id), so they never wait for
    each other in a circle (they deadlocked, and the transaction retry hid it)."""
    db = await PostgresDatabase.open(pg_url)
    await db.upgrade()
    clock = Clock()
    quotas, store = QuotaStore(db, clock), ImageStore(db, tmp_path, durable=False, clock=clock)
    gone = Leases(db, 10, clock)
    await gone.register()
    holds = [await _hold(quotas, key, gone.instance_id) for key in "abc"]

    async def job(tx: Any, index: int) -> None:
        request = {"operation": "generate"}
        await store.insert_job(
            tx, f"job{index}", user="u", request=request, model="m", hold_id=holds[index],
            owner=gone.instance_id,
        )  # fmt: skip

    for index in range(3):
        await db.transact(job, index)
    await gone.drop()  # no live lease stands behind its holds and jobs any more
    assert await _beside_a_lock(db, pg_url, lambda: quotas.sweep(), "hold", holds[1]) == 2
    assert (
        await _beside_a_lock(db, pg_url, lambda: store.interrupt_lapsed("me"), "job", "job1") == 2
    )
    assert await quotas.sweep() == 1  # the rows left, once free
    assert await store.interrupt_lapsed("me") == 1
    assert await quotas.check_ledger() == []
    await db.close()


async def test_a_second_service_leaves_a_live_one_alone(tmp_path, backend):
    """Two services on one database (one host, one pid namespace or not): the second
    releases nothing of the first while it lives, and its holds once it has gone."""
    settings = make_settings(tmp_path, database=backend, quota={"hold_ttl_s": 0.001})
    caller = Caller(frontend="cli", user_id="alice")
    async with await ImageService.open(settings, sweeper=False) as second:
        first = await ImageService.open(settings, sweeper=False)
        try:
            assert first.owner != second.owner
            await first.quotas.reserve(
                caller.key,
                amount=3,
                idem_key="k",
                request_hash="h",
                policy=first.policy(caller),
                owner=first.owner,
            )
            assert await second.recover() == 0
            assert (await second.quota(caller)).held == 3
        finally:
            await first.aclose()  # ends its lease: what it left held is anybody's to release
        assert await second.recover() == 1
        assert (await second.quota(caller)).held == 0


async def test_jobs_queued_longer_than_a_lease_and_the_hold_ttl_are_charged(tmp_path, monkeypatch):
    """Three jobs on a provider that takes one call at a time, each call 0.6 s: the last one
    queues 1.2 s, longer than the lease (1 s) and the old hold lifetime (0.05 s), while a
    second service sweeps the same database every 20 ms. Every job is charged in full."""
    emu = create_emulator("openai", api_key="sk-queue-test", image_size=(64, 64))
    emu.inject(Fault(delay_s=0.6, path="/images/"), times=3)
    monkeypatch.setenv("IG_QUEUE_KEY", "sk-queue-test")
    settings = make_settings(
        tmp_path,
        database={"lease_s": 1.0},
        providers={
            "openai": {
                "kind": "openai",
                "base_url": "http://openai.test" + emu.base_path,
                "api_key_env": "IG_QUEUE_KEY",
                "models": ["dall-e-2"],
                "max_concurrency": 1,
            }
        },
        quota={"allowance": 10, "hold_ttl_s": 0.05, "sweep_interval_s": 0.02},
    )
    caller = Caller(frontend="cli", user_id="alice")
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=emu.app)) as http,
        await ImageService.open(settings, http=http, sweeper=False) as service,
        await ImageService.open(settings, http=http, sweeper=True),
    ):
        request = ImageRequest(prompt="a queue", model="openai:dall-e-2")
        results = await asyncio.gather(*(service.generate(caller, request) for _ in range(3)))
        assert [r.credits_charged for r in results] == [1, 1, 1]
        assert (await service.quota(caller)).remaining == 7
        kinds = [e.kind for e in await service.history(caller, caller)]
        assert sorted(kinds) == ["capture"] * 3 + ["hold"] * 3  # nothing expired or refunded
