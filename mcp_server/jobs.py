"""Jobs that may outlive the tool call that started them.

A tool runs its ``ImageService`` call as a task tracked here and waits for it up to the
configured bound. A job still running then is handed back as a job id and keeps going;
``get_job`` finds it here (or, once forgotten or after a restart, in the job records). A call
cancelled while it waits cancels its job, and the service releases the job's hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import anyio

from core import ImageResult, Progress

ServiceCall = Callable[[Progress], Coroutine[Any, Any, ImageResult]]


@dataclass(eq=False)
class TrackedJob:
    """One running or recently finished service call."""

    user: str
    n: int
    task: asyncio.Task[ImageResult] = field(init=False, repr=False)
    job_id: str | None = None
    phase: str = "starting"
    detail: str | None = None  # the provider's latest progress, in words
    provider: str | None = None
    position: int = 0  # in the provider's queue (see core.progress); 0 once running
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def done(self) -> bool:
        return self.task.done()

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    async def wait_changed(self, timeout: float) -> None:
        """Return when the job finishes, reports progress, or ``timeout`` passes."""
        if self.task.done():
            return
        waiter = asyncio.ensure_future(self.changed.wait())
        try:
            await asyncio.wait({self.task, waiter}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
        self.changed.clear()


class JobTracker:
    """Per-process registry of jobs started by tool calls, keyed by job id once known."""

    def __init__(self, *, keep_s: float = 3600.0, max_kept: int = 500) -> None:
        self.keep_s = keep_s
        self.max_kept = max_kept
        self._jobs: dict[str, TrackedJob] = {}
        self._live: set[TrackedJob] = set()

    def start(self, user: str, n: int, call: ServiceCall) -> TrackedJob:
        """Run ``call(progress)`` as a task; the service's progress reports name the job id."""
        self._prune()
        job = TrackedJob(user=user, n=n)

        async def progress(phase: str, info: dict[str, Any]) -> None:
            if phase == "provider":  # what the backend reports: queue place, steps, wait
                job.detail = info.get("detail")
            else:
                job.phase = phase
                job.position = info.get("position", 0) if phase == "queued" else 0
                job.provider = info.get("provider", job.provider)
            if info.get("job_id") and job.job_id is None:
                job.job_id = str(info["job_id"])
                self._jobs[job.job_id] = job
            job.changed.set()

        job.task = asyncio.create_task(call(progress))
        self._live.add(job)
        job.task.add_done_callback(lambda task: self._finished(job, task))
        return job

    def get(self, user: str, job_id: str) -> TrackedJob | None:
        """The caller's tracked job, or None (unknown here, or someone else's)."""
        job = self._jobs.get(job_id)
        return job if job is not None and job.user == user else None

    async def cancel(self, job: TrackedJob) -> None:
        """Cancel the job and wait until its hold is released, even inside a cancelled scope."""
        job.task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({job.task})

    async def aclose(self) -> None:
        """Cancel every running job (at shutdown, before the service closes)."""
        running = [job for job in self._live if not job.done]
        for job in running:
            job.task.cancel()
        if running:
            with anyio.CancelScope(shield=True):
                await asyncio.wait({job.task for job in running})

    def _finished(self, job: TrackedJob, task: asyncio.Task[ImageResult]) -> None:
        job.finished = time.monotonic()
        self._live.discard(job)
        if not task.cancelled():
            task.exception()  # retrieved here so an uncollected failure is not logged as lost
        job.changed.set()

    def _prune(self) -> None:
        now = time.monotonic()
        finished = sorted(
            (j for j in self._jobs.values() if j.finished is not None),
            key=lambda j: j.finished or 0,
        )
        excess = len(finished) - self.max_kept
        for index, job in enumerate(finished):
            if index < excess or now - (job.finished or now) > self.keep_s:
                with contextlib.suppress(KeyError):
                    del self._jobs[job.job_id or ""]
