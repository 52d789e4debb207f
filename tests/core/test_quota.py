"""The quota ledger on both backends: races (many connections, several processes),
idempotency, at-most-once settle/release, partial charges, period rollover, expiry, rate and
in-flight limits, and a property test that random sequences keep every invariant."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import parse_settings
from core.db import open_database
from core.errors import IdempotencyConflictError, QuotaExceededError, RateLimitedError
from core.quota import Policy, QuotaStore, period_end, period_key


class Clock:
    def __init__(self, now: float = 1_763_700_000.0) -> None:  # 2025-11-21, a Friday
        self.now = now

    def __call__(self) -> float:
        return self.now


_OPEN: list[QuotaStore] = []


async def _store(backend: dict, clock: Clock | None = None) -> QuotaStore:
    """A store on the database a ``backend`` section (tests/conftest.py) names."""
    settings = parse_settings({"database": backend})
    store = QuotaStore(await open_database(settings.database), clock or Clock())
    _OPEN.append(store)
    return store


@pytest.fixture(autouse=True)
async def _close_stores():
    yield
    while _OPEN:
        await _OPEN.pop().db.close()


def _key() -> str:
    return uuid.uuid4().hex


async def _reserve(
    store: QuotaStore, user: str, amount: int, policy: Policy, key: str | None = None
):
    return await store.reserve(
        user, amount=amount, idem_key=key or _key(), request_hash="h", policy=policy
    )


async def test_reserve_settle_charges_only_delivered(backend):
    store = await _store(backend)
    policy = Policy(allowance=10)
    hold = await _reserve(store, "u", 4, policy)
    assert (await store.status("u", policy)).remaining == 6
    assert await store.settle(hold.hold_id, 2) == 2
    status = await store.status("u", policy)
    assert (status.remaining, status.held, status.in_flight) == (8, 0, 0)
    assert await store.check_ledger() == []


async def test_also_writes_with_the_hold_and_with_the_charge_or_not_at_all(backend):
    store = await _store(backend)
    policy = Policy(allowance=10)

    async def create(tx):
        await tx.execute("CREATE TABLE note (what TEXT)")

    await store.db.transact(create)

    def note(what: str):
        async def write(tx, value):
            await tx.execute("INSERT INTO note VALUES (?)", (f"{what} {value}",))

        return write

    async def fail(tx, value):
        await note("doomed")(tx, value)
        raise RuntimeError("the job record could not be written")

    with pytest.raises(RuntimeError):
        await store.reserve(
            "u", amount=4, idem_key="k0", request_hash="h", policy=policy, also=fail
        )
    assert (await store.status("u", policy)).remaining == 10  # no hold without its record

    hold = await store.reserve(
        "u", amount=4, idem_key="k1", request_hash="h", policy=policy, also=note("held")
    )
    replay = await store.reserve(
        "u", amount=4, idem_key="k1", request_hash="h", policy=policy, also=note("again")
    )
    assert replay.replayed and replay.hold_id == hold.hold_id
    with pytest.raises(RuntimeError):
        await store.settle_and_report(hold.hold_id, 3, policy=policy, also=fail)
    assert (await store.status("u", policy)).held == 4  # not charged without its record
    charged, status = await store.settle_and_report(
        hold.hold_id, 3, policy=policy, also=note("charged")
    )
    assert (charged, status.remaining, status.held) == (3, 7, 0)
    again, status = await store.settle_and_report(hold.hold_id, 3, policy=policy)
    assert (again, status.remaining) == (0, 7)
    notes = [row[0] for row in await store.db.fetchall("SELECT what FROM note")]
    assert notes == [f"held {hold}", "charged 3"]
    assert await store.check_ledger() == []
    with pytest.raises(LookupError):
        await store.settle_and_report("no-such-hold", 1, policy=policy)


async def test_settle_and_release_happen_at_most_once(backend):
    store = await _store(backend)
    policy = Policy(allowance=10)
    hold = await _reserve(store, "u", 3, policy)
    assert await store.settle(hold.hold_id, 3) == 3
    assert await store.settle(hold.hold_id, 3) == 0
    assert await store.release(hold.hold_id) is False
    other = await _reserve(store, "u", 3, policy)
    assert await store.release(other.hold_id) is True
    assert await store.release(other.hold_id) is False
    assert (await store.status("u", policy)).remaining == 7
    assert await store.check_ledger() == []


async def test_idempotent_replay_returns_the_same_hold(backend):
    store = await _store(backend)
    policy = Policy(allowance=10)
    first = await _reserve(store, "u", 2, policy, key="k1")
    again = await _reserve(store, "u", 2, policy, key="k1")
    assert again.hold_id == first.hold_id and again.replayed
    assert (await store.status("u", policy)).remaining == 8
    with pytest.raises(IdempotencyConflictError):
        await store.reserve("u", amount=2, idem_key="k1", request_hash="other", policy=policy)


async def test_allowance_is_drawn_before_granted_credits(backend):
    store = await _store(backend)
    policy = Policy(allowance=5)
    await store.grant("u", 10, reason="gift", policy=policy)
    hold = await _reserve(store, "u", 7, policy)
    status = await store.status("u", policy)
    assert (status.remaining, status.granted) == (8, 8)
    await store.release(hold.hold_id)
    status = await store.status("u", policy)
    assert (status.remaining, status.granted) == (15, 10)


async def test_refusal_names_the_limit_and_reset_time(backend):
    store = await _store(backend)
    policy = Policy(allowance=2)
    with pytest.raises(QuotaExceededError) as info:
        await _reserve(store, "u", 3, policy)
    assert "needs 3" in info.value.message and "resets at" in info.value.message
    assert info.value.retry_at is not None


async def test_period_rollover_restores_the_allowance_and_keeps_grants(backend):
    clock = Clock()
    store = await _store(backend, clock)
    policy = Policy(allowance=3)
    await store.grant("u", 1, reason="gift", policy=policy)
    hold = await _reserve(store, "u", 3, policy)
    await store.settle(hold.hold_id, 3)
    assert (await store.status("u", policy)).remaining == 1
    clock.now += 86_400
    assert (await store.status("u", policy)).remaining == 4
    hold = await _reserve(store, "u", 4, policy)
    await store.settle(hold.hold_id, 4)
    assert await store.check_ledger() == []


async def test_refund_after_rollover_does_not_inflate_the_new_period(backend):
    clock = Clock()
    store = await _store(backend, clock)
    policy = Policy(allowance=3)
    hold = await _reserve(store, "u", 3, policy)
    clock.now += 86_400
    await _reserve(store, "u", 1, policy)  # rolls the period over
    await store.release(hold.hold_id)
    assert (await store.status("u", policy)).remaining == 2
    assert await store.check_ledger() == []


async def test_sweeper_releases_expired_holds(backend):
    clock = Clock()
    store = await _store(backend, clock)
    policy = Policy(allowance=5, hold_ttl_s=60)
    await _reserve(store, "u", 5, policy)
    assert await store.sweep() == 0
    clock.now += 61
    assert await store.sweep() == 1
    assert (await store.status("u", policy)).remaining == 5
    assert [e.kind for e in await store.history("u")][:1] == ["expire"]


async def test_rate_limit_and_in_flight_cap(backend):
    clock = Clock()
    store = await _store(backend, clock)
    policy = Policy(allowance=100, rate_per_minute=3)
    for _ in range(3):
        await _reserve(store, "u", 1, policy)
    with pytest.raises(RateLimitedError) as info:
        await _reserve(store, "u", 1, policy)
    assert "3 per minute" in info.value.message and info.value.retry_at is not None
    clock.now += 20
    await _reserve(store, "u", 1, policy)
    capped = Policy(allowance=100, max_in_flight=1)
    await _reserve(store, "v", 1, capped)
    with pytest.raises(RateLimitedError, match="running"):
        await _reserve(store, "v", 1, capped)


async def test_a_refused_debit_does_not_use_a_rate_slot(backend):
    store = await _store(backend)
    policy = Policy(allowance=1, rate_per_minute=1)
    with pytest.raises(QuotaExceededError):
        await _reserve(store, "u", 2, policy)
    await _reserve(store, "u", 1, policy)


async def test_allowance_override(backend):
    store = await _store(backend)
    policy = Policy(allowance=5)
    await store.set_allowance("u", 20, policy=policy)
    assert (await store.status("u", policy)).remaining == 20
    await store.set_allowance("u", None, policy=policy)
    assert (await store.status("u", policy)).remaining == 5
    entries = await store.history("u")
    assert [(e.kind, e.reason) for e in entries] == [
        ("allowance", "allowance 20 -> the default (5) per day"),
        ("allowance", "allowance 5 -> 20 per day"),
    ]
    assert await store.check_ledger() == []  # no credits moved


def test_period_keys_and_ends():
    from datetime import UTC, datetime

    now = datetime(2026, 11, 21, 15, 30, tzinfo=UTC)
    assert period_key("day", now) == "2026-11-21"
    assert period_key("week", now) == "2026-W47"
    assert period_key("month", now) == "2026-11"
    assert period_end("day", now) == datetime(2026, 11, 22, tzinfo=UTC)
    assert period_end("week", now) == datetime(2026, 11, 23, tzinfo=UTC)
    assert period_end("month", datetime(2026, 12, 31, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


async def test_race_200_reserves_over_8_connections(backend):
    stores = [await _store(backend) for _ in range(8)]
    policy = Policy(allowance=37)

    async def attempt(i: int) -> bool:
        try:
            await _reserve(stores[i % 8], "u", 1, policy)
            return True
        except QuotaExceededError:
            return False

    results = await asyncio.gather(*(attempt(i) for i in range(200)))
    assert sum(results) == 37
    status = await stores[0].status("u", policy)
    assert (status.remaining, status.held) == (0, 37)
    assert await stores[0].check_ledger() == []


@pytest.mark.parametrize(
    "policy, limit",
    [
        (Policy(allowance=10**6, max_in_flight=5), 5),
        (Policy(allowance=10**6, rate_per_minute=7), 7),
    ],
    ids=["in-flight", "rate"],
)
async def test_no_limit_bypass_with_200_reserves_over_8_connections(backend, policy, limit):
    stores = [await _store(backend) for _ in range(8)]

    async def attempt(i: int) -> bool:
        try:
            await _reserve(stores[i % 8], "u", 1, policy)
            return True
        except RateLimitedError:
            return False

    assert sum(await asyncio.gather(*(attempt(i) for i in range(200)))) == limit
    assert (await stores[0].status("u", policy)).in_flight == limit


def _process_worker(backend: dict, attempts: int, queue) -> None:
    async def run() -> int:
        store = await _store(backend)
        ok = 0
        for _ in range(attempts):
            try:
                await _reserve(store, "u", 1, Policy(allowance=50))
                ok += 1
            except QuotaExceededError:
                pass
        await store.db.close()  # an open aiosqlite thread would keep the process alive
        return ok

    queue.put(asyncio.run(run()))


async def test_race_across_4_processes(tmp_path):
    # SQLite; PostgreSQL's processes race in tests/test_replicas.py (3 MCP servers).
    backend = {"path": str(tmp_path / "q.db")}
    await _store(backend)  # create and migrate before the processes race
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_process_worker, args=(backend, 40, queue)) for _ in range(4)]
    for w in workers:
        w.start()
    counts = await asyncio.to_thread(lambda: [queue.get(timeout=90) for _ in workers])
    await asyncio.to_thread(lambda: [w.join(30) for w in workers])
    assert sum(counts) == 50
    store = await _store(backend)
    assert (await store.status("u", Policy(allowance=50))).remaining == 0
    assert await store.check_ledger() == []


operations = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "release", "grant", "tick", "sweep"]),
        st.integers(0, 6),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_random_sequences_keep_every_invariant(backend, ops):
    # One database for all examples (a new one each costs more than the example): each
    # example is a new user, and every user's ledger must still sum to their account.
    asyncio.run(_check_sequence(backend, ops, _key()))


async def _check_sequence(backend: dict, ops, u: str) -> None:
    clock = Clock()
    store = await _store(backend, clock)
    policy = Policy(allowance=10, hold_ttl_s=3600)
    holds: list[tuple[str, int]] = []
    charged = granted = 0
    for op, value in ops:
        if op == "reserve":
            try:
                hold = await _reserve(store, u, value, policy)
                holds.append((hold.hold_id, value))
            except QuotaExceededError:
                pass
        elif op == "settle" and holds:
            hold_id, amount = holds.pop(value % len(holds))
            charged += await store.settle(hold_id, min(value, amount + 1))
        elif op == "release" and holds:
            await store.release(holds.pop(value % len(holds))[0])
        elif op == "grant":
            await store.grant(u, value, reason="p", policy=policy)
            granted += value
        elif op == "tick":
            clock.now += value * 1800
        elif op == "sweep":
            await store.sweep()
        status = await store.status(u, policy)
        assert status.remaining >= 0 and status.held >= 0
        assert await store.check_ledger() == []
    for hold_id, _ in holds:
        await store.release(hold_id)
    status = await store.status(u, policy)
    assert status.held == 0 and status.in_flight == 0
    assert status.granted <= granted
    await _OPEN.pop().db.close()
