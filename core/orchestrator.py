"""Runs one job across provider calls: batching, retries, the deadline and fallback.

- ``n`` is split by each model's images-per-call; batches run in parallel, bounded per provider.
- Only retryable errors (408/409/429/5xx, transport) are retried, at most ``max_retries`` times,
  with exponential backoff and jitter; a Retry-After up to 60 s replaces the backoff.
- Partial successes are kept: a failed batch never throws away images another batch delivered.
- The next model of the chain is tried only for availability errors (``fallback_ok``), and only
  for the images still missing. Content refusals stop the job at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import (
    ContentRejectedError,
    ImageGateError,
    InvalidRequestError,
    JobCancelledError,
    JobTimeoutError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
)
from .images import ImageInfo
from .providers.base import ImageModel, Plan
from .types import GeneratedImage

MAX_RETRY_AFTER_S = 60.0

Validate = Callable[[ImageModel, GeneratedImage], Awaitable[ImageInfo]]


@dataclass
class Delivered:
    model: ImageModel
    image: GeneratedImage
    checked: ImageInfo  # the decoded type and size, from ``validate``


@dataclass
class Outcome:
    """What a job produced: every delivered image, the warnings, and the error that stopped it
    (None when every image arrived)."""

    delivered: list[Delivered] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: ImageGateError | None = None
    attempts: int = 0


def split(n: int, per_call: int) -> list[int]:
    """Batch sizes: ``split(5, 2) == [2, 2, 1]``."""
    per_call = max(1, per_call)
    return [min(per_call, n - start) for start in range(0, n, per_call)]


class Orchestrator:
    """Stateless apart from the per-provider semaphores; ``clock`` and ``sleep`` are injectable."""

    def __init__(
        self,
        *,
        max_retries: int = 2,
        base_delay_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.max_retries = max_retries
        self.base_delay_s = base_delay_s
        self.clock = clock
        self.sleep = sleep
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    def _semaphore(self, model: ImageModel) -> asyncio.Semaphore:
        name = model.ctx.name
        if name not in self._semaphores:
            self._semaphores[name] = asyncio.Semaphore(model.ctx.settings.max_concurrency)
        return self._semaphores[name]

    async def run(
        self,
        chain: list[tuple[ImageModel, Plan]],
        deadline: float,
        validate: Validate,
        *,
        cancel: asyncio.Event | None = None,
    ) -> Outcome:
        """Run the job on the first model, falling back along ``chain`` for missing images.

        ``chain`` holds each model with its plan for the full job; ``deadline`` is a
        ``clock()`` value. Never raises for provider failures: they end up in ``Outcome.error``.
        When ``cancel`` is set, the calls still running are cancelled (the adapters stop
        polling), the images delivered so far are kept, and the error is ``JobCancelledError``.
        """
        cancel = cancel or asyncio.Event()
        outcome = Outcome()
        wanted = chain[0][1].n
        for model, plan in chain:
            missing = wanted - len(outcome.delivered)
            if missing <= 0:
                break
            if cancel.is_set():
                outcome.error = _cancelled(len(outcome.delivered), wanted)
                break
            outcome.warnings.extend(w for w in plan.warnings if w not in outcome.warnings)
            errors = await self._run_model(
                model, plan, missing, deadline, validate, outcome, cancel
            )
            if cancel.is_set() and len(outcome.delivered) < wanted:
                outcome.error = _cancelled(len(outcome.delivered), wanted)
                break
            if not errors:
                if len(outcome.delivered) < wanted:
                    outcome.warnings.append(
                        f"{model.ref} returned {len(outcome.delivered)} of {wanted} images"
                    )
                outcome.error = None
                break
            outcome.error = _worst(errors)
            if not all(getattr(e, "fallback_ok", False) for e in errors):
                break
        return outcome

    async def _run_model(
        self,
        model: ImageModel,
        plan: Plan,
        missing: int,
        deadline: float,
        validate: Validate,
        outcome: Outcome,
        cancel: asyncio.Event,
    ) -> list[ImageGateError]:
        offset = len(outcome.delivered)
        batches = split(missing, model.capabilities.max_images_per_call)
        starts = [offset + sum(batches[:i]) for i in range(len(batches))]
        calls = [
            self._batch(
                model, replace(plan, offset=start), count, deadline, validate, outcome, cancel
            )
            for start, count in zip(starts, batches, strict=True)
        ]
        if len(calls) == 1:  # most jobs: no task to spawn for one call
            results: list[list[Delivered] | BaseException] = [await _settled(calls[0])]
        else:
            results = await asyncio.gather(*calls, return_exceptions=True)
        errors: list[ImageGateError] = []
        for result in results:
            if isinstance(result, ImageGateError):
                errors.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                outcome.delivered.extend(result)
        return errors

    async def _batch(
        self,
        model: ImageModel,
        plan: Plan,
        count: int,
        deadline: float,
        validate: Validate,
        outcome: Outcome,
        cancel: asyncio.Event,
    ) -> list[Delivered]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + max(0.0, deadline - self.clock())):
                # A cancel stops the wait at the provider; images it returned are kept.
                images = await _stoppable(
                    self._with_retries(model, plan, count, deadline, outcome), cancel
                )
                return [
                    Delivered(model, image, await _checked(model, image, validate))
                    for image in images[:count]
                ]
        except TimeoutError:
            raise _job_timeout(model) from None
        except ProviderTimeoutError:
            # The adapter's own deadline check and the timeout above watch the same instant;
            # whichever wakes first, a job past its deadline reports one error.
            if self.clock() < deadline:
                raise
            raise _job_timeout(model) from None

    async def _with_retries(
        self, model: ImageModel, plan: Plan, count: int, deadline: float, outcome: Outcome
    ) -> list[GeneratedImage]:
        for attempt in range(self.max_retries + 1):
            outcome.attempts += 1
            try:
                async with self._semaphore(model):
                    return await model.do_generate(plan, count, deadline)
            except ProviderError as exc:
                delay = self._delay(exc, attempt)
                if delay is None or self.clock() + delay >= deadline:
                    raise
                await self.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, exc: ProviderError, attempt: int) -> float | None:
        """Seconds to wait before the next try, or None to stop retrying."""
        if not exc.retryable or attempt >= self.max_retries:
            return None
        if exc.retry_after is not None:
            return exc.retry_after if exc.retry_after <= MAX_RETRY_AFTER_S else None
        backoff = self.base_delay_s * 2**attempt
        return backoff * random.uniform(1.0, 1.25)


def _job_timeout(model: ImageModel) -> JobTimeoutError:
    return JobTimeoutError(
        f"{model.ref} did not finish before the job deadline; nothing was charged for"
        " the missing images"
    )


async def _settled(call: Awaitable[list[Delivered]]) -> list[Delivered] | ImageGateError:
    """What ``gather(..., return_exceptions=True)`` would give for one call."""
    try:
        return await call
    except ImageGateError as exc:
        return exc


async def _stoppable(
    call: Coroutine[Any, Any, list[GeneratedImage]], cancel: asyncio.Event
) -> list[GeneratedImage]:
    """Await ``call`` in this task, unless ``cancel`` is set first: then it is cancelled
    (a timeout scope that the cancel moves to now, so no extra task runs the call).

    Raises:
        JobCancelledError: ``cancel`` was set first.
    """
    if cancel.is_set():
        call.close()
        raise JobCancelledError("cancelled")
    loop = asyncio.get_running_loop()
    scope = asyncio.timeout(None)
    active = True

    def expire(_: asyncio.Future[Any]) -> None:
        if active and cancel.is_set():
            scope.reschedule(loop.time())

    stop = asyncio.ensure_future(cancel.wait())
    stop.add_done_callback(expire)
    try:
        async with scope:
            return await call
    except TimeoutError:
        if scope.expired() and cancel.is_set():
            raise JobCancelledError("cancelled") from None
        raise
    finally:
        active = False
        stop.cancel()


def _cancelled(delivered: int, wanted: int) -> JobCancelledError:
    if not delivered:
        return JobCancelledError("the job was cancelled before any image arrived")
    return JobCancelledError(f"the job was cancelled after {delivered} of {wanted} images")


async def _checked(model: ImageModel, image: GeneratedImage, validate: Validate) -> ImageInfo:
    try:
        return await validate(model, image)
    except InvalidRequestError as exc:
        raise ProviderResponseError(
            f"{model.ctx.name} sent an image that could not be used ({exc.message})",
            provider=model.ctx.name,
        ) from None


def _worst(errors: list[ImageGateError]) -> ImageGateError:
    """The error to report: a content refusal first, then one that forbids fallback."""
    for error in errors:
        if isinstance(error, ContentRejectedError):
            return error
    for error in errors:
        if not getattr(error, "fallback_ok", False):
            return error
    return errors[0]
