"""Orchestrator: batching, retries, Retry-After, deadline, partial success and fallback,
with scripted fake models and a fake clock (no HTTP, no real sleeping)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import httpx

from core.errors import (
    ContentRejectedError,
    JobTimeoutError,
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from core.orchestrator import Orchestrator, split
from core.providers.base import Capabilities, ImageModel, Plan, ProviderContext
from core.settings import ProviderSettings
from core.types import GeneratedImage, ImageRequest


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedModel(ImageModel):
    """Each call pops the next outcome: an exception to raise or a number of images."""

    kind = "fake"

    def __init__(self, name: str, script: Iterable[object], per_call: int = 2) -> None:
        settings = ProviderSettings(kind="placeholder", max_concurrency=2)
        super().__init__(
            ProviderContext(name=name, settings=settings, http=httpx.AsyncClient()), "m"
        )
        self.script = list(script)
        self.per_call = per_call
        self.calls: list[tuple[int, int]] = []

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(operations=frozenset({"generate"}), max_images_per_call=self.per_call)

    def plan(self, request: ImageRequest) -> Plan:
        return Plan(operation="generate", n=request.n, request=request)

    async def do_generate(self, plan: Plan, count: int, deadline: float) -> list[GeneratedImage]:
        self.calls.append((plan.offset, count))
        outcome = self.script.pop(0) if self.script else count
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await asyncio.sleep(3600)
        return [GeneratedImage(data=b"x", seed=plan.offset + i) for i in range(int(outcome))]


async def _accept(model, image):
    return "ok"


def _chain(*models: ScriptedModel, n: int) -> list[tuple[ImageModel, Plan]]:
    request = ImageRequest(prompt="p", n=n)
    return [(m, m.plan(request)) for m in models]


def _orchestrator(clock: FakeClock, retries: int = 2) -> Orchestrator:
    return Orchestrator(max_retries=retries, base_delay_s=2.0, clock=clock, sleep=clock.sleep)


def test_split_batches():
    assert split(5, 2) == [2, 2, 1]
    assert split(1, 4) == [1]
    assert split(8, 8) == [8]
    assert split(3, 0) == [1, 1, 1]


async def test_batches_by_images_per_call_with_offsets():
    clock = FakeClock()
    model = ScriptedModel("a", [], per_call=2)
    outcome = await _orchestrator(clock).run(_chain(model, n=5), clock() + 60, _accept)
    assert sorted(model.calls) == [(0, 2), (2, 2), (4, 1)]
    assert len(outcome.delivered) == 5 and outcome.error is None


async def test_retries_retryable_errors_with_backoff_then_succeeds():
    clock = FakeClock()
    model = ScriptedModel(
        "a", [ProviderUnavailableError("down"), ProviderUnavailableError("down"), 1]
    )
    outcome = await _orchestrator(clock).run(_chain(model, n=1), clock() + 600, _accept)
    assert len(outcome.delivered) == 1 and outcome.attempts == 3
    assert 2.0 <= clock.sleeps[0] <= 2.5 and 4.0 <= clock.sleeps[1] <= 5.0


async def test_gives_up_after_two_retries():
    clock = FakeClock()
    model = ScriptedModel("a", [ProviderUnavailableError("down")] * 5)
    outcome = await _orchestrator(clock).run(_chain(model, n=1), clock() + 600, _accept)
    assert outcome.delivered == [] and isinstance(outcome.error, ProviderUnavailableError)
    assert len(model.calls) == 3


async def test_non_retryable_error_is_not_retried():
    clock = FakeClock()
    model = ScriptedModel("a", [ProviderRejectedError("bad prompt")])
    outcome = await _orchestrator(clock).run(_chain(model, n=1), clock() + 600, _accept)
    assert len(model.calls) == 1 and clock.sleeps == []
    assert isinstance(outcome.error, ProviderRejectedError)


async def test_retry_after_is_honoured_up_to_60_seconds():
    clock = FakeClock()
    model = ScriptedModel("a", [ProviderRateLimitedError("slow down", retry_after=7.0), 1])
    await _orchestrator(clock).run(_chain(model, n=1), clock() + 600, _accept)
    assert clock.sleeps == [7.0]


async def test_retry_after_over_60_seconds_fails_over_instead_of_waiting():
    clock = FakeClock()
    first = ScriptedModel("a", [ProviderRateLimitedError("later", retry_after=3600.0)])
    second = ScriptedModel("b", [1])
    outcome = await _orchestrator(clock).run(_chain(first, second, n=1), clock() + 600, _accept)
    assert clock.sleeps == [] and [d.model.ctx.name for d in outcome.delivered] == ["b"]


async def test_no_retry_when_the_wait_would_pass_the_deadline():
    clock = FakeClock()
    model = ScriptedModel("a", [ProviderRateLimitedError("wait", retry_after=30.0), 1])
    outcome = await _orchestrator(clock).run(_chain(model, n=1), clock() + 10, _accept)
    assert clock.sleeps == [] and isinstance(outcome.error, ProviderRateLimitedError)


async def test_partial_success_is_kept_when_one_batch_fails():
    clock = FakeClock()
    model = ScriptedModel("a", [2, ProviderRejectedError("no")], per_call=2)
    outcome = await _orchestrator(clock).run(_chain(model, n=4), clock() + 600, _accept)
    assert len(outcome.delivered) == 2 and isinstance(outcome.error, ProviderRejectedError)


async def test_fallback_only_for_missing_images_and_only_on_availability_errors():
    clock = FakeClock()
    first = ScriptedModel("a", [2, ProviderAuthError("bad key")], per_call=2)
    second = ScriptedModel("b", [], per_call=2)
    outcome = await _orchestrator(clock).run(_chain(first, second, n=4), clock() + 600, _accept)
    assert second.calls == [(2, 2)]
    assert [d.model.ctx.name for d in outcome.delivered] == ["a", "a", "b", "b"]
    assert outcome.error is None


async def test_content_refusal_is_never_retried_nor_failed_over():
    clock = FakeClock()
    first = ScriptedModel("a", [ContentRejectedError("flagged")])
    second = ScriptedModel("b", [1])
    outcome = await _orchestrator(clock).run(_chain(first, second, n=1), clock() + 600, _accept)
    assert isinstance(outcome.error, ContentRejectedError)
    assert len(first.calls) == 1 and second.calls == []


async def test_deadline_stops_a_hanging_provider(monkeypatch):
    model = ScriptedModel("a", ["hang"])
    orchestrator = Orchestrator(max_retries=0)
    loop = asyncio.get_running_loop()
    outcome = await orchestrator.run(_chain(model, n=1), loop.time() + 0.05, _accept)
    assert isinstance(outcome.error, JobTimeoutError)


async def test_a_provider_timeout_once_the_deadline_passed_is_the_job_timeout():
    clock = FakeClock()
    deadline = clock() + 10

    class NoticesTheDeadline(ScriptedModel):
        async def do_generate(self, plan, count, deadline):
            clock.now = deadline  # its own check woke before the orchestrator's timer
            raise ProviderTimeoutError("the provider did not answer in time")

    late = NoticesTheDeadline("a", [])
    outcome = await _orchestrator(clock, retries=0).run(_chain(late, n=1), deadline, _accept)
    assert isinstance(outcome.error, JobTimeoutError)
    # Before the deadline it stays the provider's timeout (retried, and may fail over).
    slow = ScriptedModel("b", [ProviderTimeoutError("slow")])
    outcome = await _orchestrator(clock, retries=0).run(_chain(slow, n=1), clock() + 10, _accept)
    assert isinstance(outcome.error, ProviderTimeoutError)


async def test_provider_returning_more_images_than_asked_is_truncated():
    clock = FakeClock()
    model = ScriptedModel("a", [5], per_call=4)
    outcome = await _orchestrator(clock).run(_chain(model, n=2), clock() + 600, _accept)
    assert len(outcome.delivered) == 2


async def test_concurrency_per_provider_is_bounded():
    active = 0
    peak = 0

    class Slow(ScriptedModel):
        async def do_generate(self, plan, count, deadline):
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1
            return [GeneratedImage(data=b"x")] * count

    model = Slow("a", [], per_call=1)
    outcome = await Orchestrator().run(
        _chain(model, n=8), asyncio.get_running_loop().time() + 5, _accept
    )
    assert len(outcome.delivered) == 8 and peak == 2
