"""Late charges (issue 12 item 1): a job that delivers after its hold was released (its
process's lease lapsed, or another host's clock ran ahead) is charged all the same, as a
``late_charge`` ledger entry; what no credit covers is owed, and the next allowance pays it.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from core import Caller, ImageRequest, ImageService
from core.leases import Leases
from core.quota import Policy, QuotaStore
from tests.conftest import make_settings
from tests.core.test_leases import sweep_until_released
from tests.emulators import Fault, create_emulator

DAY = 86_400


async def release_while_running(store: QuotaStore, user: str, amount: int, policy: Policy):
    """A hold whose process's lease lapsed, released by the sweep of another."""
    lease = Leases(store.db, 0.2, store.clock)
    await lease.register()
    hold = await store.reserve(
        user,
        amount=amount,
        idem_key=f"k{time.time_ns()}",
        request_hash="h",
        policy=policy,
        owner=lease.instance_id,
    )
    store.clock.now += 2  # type: ignore[attr-defined]
    assert await sweep_until_released(store, "another") == 1
    return hold


async def charge_late(service: ImageService, caller: Caller, amount: int, *, spent: int = 0):
    """Give ``caller`` a late charge of ``amount``: a hold of a process with no live lease,
    released by this service's recovery, then settled; ``spent`` credits are held by another
    job of this process meanwhile (so the late charge may run into debt)."""
    policy = service.policy(caller)
    hold = await service.quotas.reserve(
        caller.key,
        amount=amount,
        idem_key=f"late-{time.time_ns()}",
        request_hash="h",
        policy=policy,
        owner="a-process-whose-lease-lapsed",
    )
    assert await service.recover() == 1
    if spent:
        await service.quotas.reserve(
            caller.key,
            amount=spent,
            idem_key=f"spent-{time.time_ns()}",
            request_hash="h",
            policy=policy,
            owner=service.owner,
        )
    await service.quotas.settle_and_report(hold.hold_id, amount, policy=policy)


async def test_a_released_hold_is_charged_late_from_allowance_grants_then_debt(store):
    policy = Policy(allowance=3)
    await store.grant("u", 1, reason="gift", policy=policy)
    hold = await release_while_running(store, "u", 3, policy)
    await store.reserve("u", amount=2, idem_key="other", request_hash="h", policy=policy)
    # Allowance 3 + 1 granted, 2 of it held again by another job: 2 left, the late job costs 3.
    charged, status = await store.settle_and_report(hold.hold_id, 3, policy=policy)
    assert charged == 3
    assert (status.remaining, status.debt, status.late_charged) == (-1, 1, 3)
    again, _ = await store.settle_and_report(hold.hold_id, 3, policy=policy)
    assert again == 0  # at most once
    assert await store.hold_state(hold.hold_id) == ("settled", 3)
    late = [e for e in await store.history("u") if e.kind == "late_charge"]
    assert [(e.d_allowance_used, e.d_granted, e.d_debt, e.d_held) for e in late] == [(1, -1, 1, 3)]
    assert await store.check_ledger() == []
    store.clock.now += DAY  # the next allowance pays the debt first
    status = await store.status("u", policy)
    assert (status.remaining, status.debt, status.late_charged) == (2, 0, 0)
    await store.reserve("u", amount=2, idem_key="next", request_hash="h", policy=policy)
    assert (await store.status("u", policy)).remaining == 0
    assert await store.check_ledger() == []
    reset = [e for e in await store.history("u") if e.kind == "reset"][0]
    assert reset.d_debt == -1 and reset.reason.endswith("; 1 of it paid the debt")


async def test_nothing_delivered_after_a_release_charges_nothing(store):
    policy = Policy(allowance=3)
    hold = await release_while_running(store, "u", 2, policy)
    charged, status = await store.settle_and_report(hold.hold_id, 0, policy=policy)
    assert (charged, status.remaining, status.late_charged) == (0, 3, 0)
    assert await store.hold_state(hold.hold_id) == ("expired", 0)


async def test_a_job_whose_hold_another_host_released_is_still_charged(tmp_path, monkeypatch):
    """The user-level case: a job runs on a slow provider while a second service, whose clock
    runs an hour ahead (another host), decides the first one's lease lapsed and releases its
    hold. The job still delivers and is charged; the user sees it in their status and ledger,
    owes what no credit covered, and cannot spend it again."""
    emu = create_emulator("openai", api_key="sk-late-test", image_size=(64, 64))
    emu.inject(Fault(delay_s=0.5, path="/images/"))
    monkeypatch.setenv("IG_LATE_KEY", "sk-late-test")
    settings = make_settings(
        tmp_path,
        providers={
            "openai": {
                "kind": "openai",
                "base_url": "http://openai.test" + emu.base_path,
                "api_key_env": "IG_LATE_KEY",
                "models": ["dall-e-2"],
            }
        },
        quota={"allowance": 1},
    )
    caller = Caller(frontend="cli", user_id="alice")
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=emu.app)) as http,
        await ImageService.open(settings, http=http, sweeper=False) as service,
    ):
        request = ImageRequest(prompt="late", model="openai:dall-e-2")
        job = asyncio.create_task(service.generate(caller, request))
        while not emu.requests:  # reserved, and the provider is working on it
            await asyncio.sleep(0.01)
        ahead = lambda: time.time() + 3600  # noqa: E731
        async with await ImageService.open(settings, http=http, sweeper=False, clock=ahead):
            pass  # its start-up recovery released the "lapsed" hold
        assert (await service.quota(caller)).remaining == 1
        result = await job
        assert result.credits_charged == 1 and len(result.images) == 1
        status = await service.quota(caller)
        assert (status.remaining, status.debt, status.late_charged) == (0, 0, 1)
        kinds = [e.kind for e in await service.history(caller, caller)]
        assert kinds == ["capture", "late_charge", "expire", "hold"]
        assert (await service.job(caller, result.job_id)).status == "succeeded"
