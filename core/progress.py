"""Progress of a job, as the service reports it to a front end's ``progress`` callback.

``progress(stage, info)`` is awaited by the job itself (keep it quick; an exception from it is
logged and ignored). Every ``info`` names the ``job_id``. The stages come in this order:

1. ``"queued"`` (zero or more times): the job's credits are reserved and it waits for a slot
   at its provider (``[providers.<name>] max_concurrency`` jobs run at once). ``info``:
   ``provider``, ``model`` (the reference that runs first), ``position`` (1 = next),
   ``limit`` (jobs that run at once there), and ``starts_in_s`` (estimated seconds until it
   starts: the median run time of the provider's last 20 jobs in this process, once per full
   round of ``limit`` jobs ahead; absent until one job there has finished). Sent when the job
   enters the queue and each time its position changes. A job that finds a free slot skips
   this stage.
2. ``"generating"`` (exactly once, unless the job is cancelled while queued): the job has
   its slot; its deadline (``[defaults] job_deadline_s``) starts now. ``info``:
   ``provider``, ``model``, ``n``.
3. ``"provider"`` (zero or more times): what the backend reports, below.

Then the service call returns or raises. A request refused before its credits are reserved
(bad input, quota) and a replayed request send no progress at all.

Progress that a provider reports while it works: its queue position, wait time or steps.
An adapter calls ``await report(ProviderProgress(...))`` from ``do_generate`` whenever its
backend tells it something (a WebUI's ``/progress``, a ComfyUI ``progress`` message, a Horde
``check``). ``ImageService`` installs the receiver for the job with ``reporting_to`` and passes
each report on to the front end's progress callback as the stage ``"provider"`` with the
fields of ``ProviderProgress.info()``; both front ends show ``info["detail"]``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from .errors import finite_seconds

log = logging.getLogger("imagegate")


@dataclass(frozen=True)
class ProviderProgress:
    """One report; every field is optional (a backend tells what it knows)."""

    provider: str
    queue_position: int | None = None  # 0 or None: not waiting in a queue
    wait_s: float | None = None  # the backend's estimate of the time left
    step: int | None = None
    steps: int | None = None
    fraction: float | None = None  # 0..1, where the backend gives only that

    def __post_init__(self) -> None:
        # A backend's numbers arrive unchecked (JSON reads 1e999 as infinity): made finite
        # here, where every adapter's report enters, so that no front end's rounding fails.
        object.__setattr__(self, "wait_s", finite_seconds(self.wait_s))
        if self.fraction is not None:
            fraction = None if math.isnan(self.fraction) else min(1.0, max(0.0, self.fraction))
            object.__setattr__(self, "fraction", fraction)

    def detail(self) -> str:
        """One line for a person: "queued at ComfyUI, position 3, about 40 s left"."""
        parts: list[str] = []
        if self.queue_position:
            parts.append(f"queued at {self.provider}, position {self.queue_position}")
        elif self.step is not None and self.steps:
            parts.append(f"{self.provider}: step {self.step} of {self.steps}")
        elif self.fraction is not None:
            parts.append(f"{self.provider}: {round(100 * min(1.0, self.fraction))}% done")
        else:
            parts.append(f"{self.provider} is working on it")
        if self.wait_s is not None and self.wait_s >= 1:
            parts.append(f"about {_duration(self.wait_s)} left")
        return ", ".join(parts)

    def info(self) -> dict[str, Any]:
        """The fields, without the unset ones, plus ``detail``."""
        fields = {k: v for k, v in self.__dict__.items() if v is not None}
        return {**fields, "detail": self.detail()}


Receiver = Callable[[ProviderProgress], Awaitable[None]]
Progress = Callable[[str, dict[str, Any]], Awaitable[None]]
"""A front end's progress callback: ``await progress(stage, info)``, stages as above."""

_receiver: ContextVar[Receiver | None] = ContextVar("imagegate_provider_progress", default=None)


@contextlib.contextmanager
def reporting_to(receiver: Receiver | None) -> Iterator[None]:
    """Send the reports of the provider calls made inside this block (and in the tasks they
    start) to ``receiver``."""
    token = _receiver.set(receiver)
    try:
        yield
    finally:
        _receiver.reset(token)


async def report(progress: ProviderProgress) -> None:
    """Pass a report on; never raises, since a front end's trouble must not fail a job."""
    receiver = _receiver.get()
    if receiver is None:
        return
    try:
        await receiver(progress)
    except Exception as exc:  # noqa: BLE001 - progress is advisory
        log.info("progress report failed: %s", type(exc).__name__)


def forward_to(
    progress: Progress,
    job: dict[str, Any],
    *,
    min_interval_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> Receiver:
    """A receiver that passes reports on as ``progress("provider", {**job, **info})``: a
    report that says nothing new is dropped, and so is one within ``min_interval_s`` of the
    last unless it moves between queued and running (a GPU reports every step; a Discord
    message or an MCP notification per step would be noise)."""
    last: dict[str, Any] = {"detail": None, "queued": None, "at": float("-inf")}

    async def receive(report_: ProviderProgress) -> None:
        info = report_.info()
        queued = bool(report_.queue_position)
        now = clock()
        if info["detail"] == last["detail"]:
            return
        if queued == last["queued"] and now - last["at"] < min_interval_s:
            return
        last.update(detail=info["detail"], queued=queued, at=now)
        await progress("provider", {**job, **info})

    return receive


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 90 else f"{round(seconds / 60)} min"
