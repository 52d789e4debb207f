"""A visible FIFO in front of each provider: at most N jobs per provider run at once.

The core already bounds each provider's concurrency; this queue exists so a waiting job can
show its position. A job takes a ticket after its credits are reserved (so a refused job
never waits) and gives it back when the service call ends, whatever the outcome.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Ticket:
    """A place in one provider's queue; ``position`` is 0 once the job may run."""

    def __init__(self, queue: SlotQueue) -> None:
        self.queue = queue
        self.running = False
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def position(self) -> int:
        """1 for the next job in line, 2 for the one after, ...; 0 when running or gone."""
        try:
            return self.queue._waiting.index(self) + 1
        except ValueError:
            return 0

    async def wait(self) -> None:
        """Until this job may run. Cancel-safe: a cancelled waiter gives its place back."""
        try:
            await asyncio.shield(self._ready)
        except asyncio.CancelledError:
            self.leave()
            raise

    def leave(self) -> None:
        """Give the slot (or the place in line) back; safe to call twice."""
        self.queue._leave(self)


class SlotQueue:
    """FIFO admission with ``limit`` jobs running at once."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.running = 0
        self._waiting: deque[Ticket] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def enter(self) -> Ticket:
        ticket = Ticket(self)
        self._waiting.append(ticket)
        self._admit()
        return ticket

    def _leave(self, ticket: Ticket) -> None:
        if ticket.running:
            ticket.running = False
            self.running -= 1
        elif ticket in self._waiting:
            self._waiting.remove(ticket)
        if not ticket._ready.done():
            ticket._ready.cancel()
        self._admit()

    def _admit(self) -> None:
        while self._waiting and self.running < self.limit:
            ticket = self._waiting.popleft()
            ticket.running = True
            self.running += 1
            if not ticket._ready.done():
                ticket._ready.set_result(None)


class ProviderQueues:
    """One ``SlotQueue`` per provider name, created on first use."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._queues: dict[str, SlotQueue] = {}

    def __getitem__(self, provider: str) -> SlotQueue:
        queue = self._queues.get(provider)
        if queue is None:
            queue = self._queues[provider] = SlotQueue(self.limit)
        return queue
