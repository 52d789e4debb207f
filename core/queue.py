"""A visible FIFO in front of each provider: at most ``max_concurrency`` jobs run at once.

``ImageService`` puts every job in its provider's queue *after* its credits are reserved, so a
refused job never waits, a queued job counts as in flight and its hold covers the wait. The
job's place is given back when the service call ends, whatever the outcome (a job cancelled
while queued costs nothing). Front ends learn the position from the ``"queued"`` progress
events (see ``core.progress``).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
import math
import statistics

RECENT_JOBS = 20  # the queue's start estimate uses the median of this many recent run times


class Ticket:
    """A place in one provider's queue; ``position`` is 0 once the job may run."""

    def __init__(self, queue: SlotQueue, seq: int) -> None:
        self.queue = queue
        self.seq = seq
        self.running = False
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def position(self) -> int:
        """1 for the next job in line, 2 for the one after, ...; 0 when running or gone."""
        return 0 if self._ready.done() else self.queue._place(self)

    @property
    def ready(self) -> bool:
        """True once the job may run."""
        return self.running

    async def wait(self, timeout: float | None = None, *, follow: bool = False) -> bool:
        """Until this job may run (True), or ``timeout`` passes, or with ``follow`` the line
        moves (False: read ``position`` again).

        Cancel-safe: a cancelled waiter gives its place back."""
        if self._ready.done():
            return self.running
        waiting: set[asyncio.Future[None]] = {self._ready}
        if follow:
            waiting.add(self.queue._moved)
        try:
            # ``asyncio.wait`` never cancels what it waits for.
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.leave()
            raise
        return self.running

    def leave(self) -> None:
        """Give the slot (or the place in line) back; safe to call twice."""
        self.queue._leave(self)


class SlotQueue:
    """FIFO admission with ``limit`` jobs running at once."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.running = 0
        self._times: collections.deque[float] = collections.deque(maxlen=RECENT_JOBS)
        self._waiting: list[Ticket] = []  # in order of ``seq``
        self._seq = itertools.count()
        self._moved: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def enter(self) -> Ticket:
        """A ticket at the end of the line (running at once if a slot is free)."""
        ticket = Ticket(self, next(self._seq))
        self._waiting.append(ticket)
        self._admit()
        return ticket

    def record(self, seconds: float) -> None:
        """A job of this provider ran for ``seconds`` (slot taken to slot given back)."""
        self._times.append(max(0.0, seconds))

    @property
    def median_s(self) -> float | None:
        """The median run time of the last ``RECENT_JOBS`` jobs here (this process), or None
        before the first one finished."""
        return statistics.median(self._times) if self._times else None

    def start_estimate_s(self, position: int) -> float | None:
        """Seconds until the job at ``position`` (1 = next) may start: one median job time
        per full round of ``limit`` slots ahead of it; None without a median yet."""
        median = self.median_s
        return None if median is None else math.ceil(position / self.limit) * median

    def _place(self, ticket: Ticket) -> int:
        index = bisect.bisect_left(self._waiting, ticket.seq, key=lambda t: t.seq)
        found = index < len(self._waiting) and self._waiting[index] is ticket
        return index + 1 if found else 0

    def _leave(self, ticket: Ticket) -> None:
        if ticket.running:
            ticket.running = False
            self.running -= 1
        elif self._place(ticket):
            del self._waiting[self._place(ticket) - 1]
            self._notify()
        if not ticket._ready.done():
            ticket._ready.cancel()
        self._admit()

    def _admit(self) -> None:
        admitted = 0
        while admitted < len(self._waiting) and self.running < self.limit:
            ticket = self._waiting[admitted]
            admitted += 1
            ticket.running = True
            self.running += 1
            if not ticket._ready.done():
                ticket._ready.set_result(None)
        if admitted:
            del self._waiting[:admitted]
            self._notify()

    def _notify(self) -> None:
        """Wake every waiter once: positions changed."""
        if not self._moved.done():
            self._moved.set_result(None)
        self._moved = asyncio.get_running_loop().create_future()


class ProviderQueues:
    """One ``SlotQueue`` per provider name, created on first use with that provider's limit."""

    def __init__(self) -> None:
        self._queues: dict[str, SlotQueue] = {}

    def get(self, provider: str, limit: int) -> SlotQueue:
        queue = self._queues.get(provider)
        if queue is None:
            queue = self._queues[provider] = SlotQueue(limit)
        return queue
