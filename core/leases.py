"""Instance leases: which processes are alive, decided by the database alone.

Every process that runs jobs (``ImageService``) registers a random instance id in the
``instance`` table and renews its lease every ``lease_s / 3`` seconds. Holds and jobs carry
the instance id as their ``owner``; only those of an instance whose lease has lapsed (or that
has no lease row at all, e.g. written by an older version) are released or interrupted by
another process. Unlike a host name and pid, this works for processes in separate PID
namespaces on one host (two containers in a pod) and across hosts.

The SQL is kept portable (numbers for times, conditional updates, ``ON CONFLICT``) so the same
statements run on PostgreSQL. Times are epoch milliseconds from one clock for every process
(``lease_clock``): on SQLite the host's (every process is on that host); on PostgreSQL the
database server's, so that hosts whose clocks disagree cannot lapse one another's live leases
(a host's clock running ahead would otherwise release a live replica's holds).

A process whose lease lapsed while it was still alive (frozen, or the database unreachable for
longer than ``lease_s``) loses its holds to another process's sweeper; it renews again when it
can, and charges what its jobs deliver anyway (``QuotaStore`` late charges).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

from .db import Database, Tx
from .ids import random_hex

log = logging.getLogger("imagegate")

# Put after a column that holds an instance id (``owner NOT IN ...``), with the current time
# (ms) as its parameter: true when no live lease stands behind that id.
LAPSED = "NOT IN (SELECT instance_id FROM instance WHERE expires_at > ?)"
# The database server's clock, in epoch milliseconds (one trip; only off the hot paths).
_SERVER_MS = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"


async def lease_clock(tx: Tx, now_ms: int) -> int:
    """The time (epoch ms) leases are set and judged by, ``LAPSED``'s parameter included: on
    PostgreSQL the server's clock, shared by every host; on SQLite ``now_ms``, the caller's
    (every process is on one host)."""
    if tx.dialect != "postgresql":
        return now_ms
    row = await tx.fetchone(_SERVER_MS)
    return int(row[0])


class Leases:
    """This process's lease: ``register`` once, then ``keep`` renews it until cancelled."""

    def __init__(
        self, db: Database, lease_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.lease_s = lease_s
        self.clock = clock
        self.instance_id = random_hex(16)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def register(self) -> None:
        """Record this instance with a fresh lease (again after a lapse)."""
        await self.db.transact(
            _register,
            self.instance_id,
            socket.gethostname(),
            os.getpid(),
            self._now_ms(),
            int(self.lease_s * 1000),
        )

    async def renew(self) -> bool:
        """Extend the lease; False (and a fresh lease) when it had lapsed meanwhile."""
        renewed = await self.db.transact(
            _renew, self.instance_id, self._now_ms(), int(self.lease_s * 1000)
        )
        if not renewed:
            log.warning(
                "this process's lease lapsed (frozen, or the database was unreachable): other"
                " processes may have released its holds; what its jobs deliver is still charged"
            )
            await self.register()
        return renewed

    async def keep(self) -> None:
        """Renew every third of the lease, forever (run as a task; cancel to stop)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.renew()
            except Exception:  # a transient database error: the next tick tries again
                log.exception("could not renew this process's lease")

    async def drop(self) -> None:
        """End the lease at a clean exit: what is left held is released by the next sweep."""
        await self.db.transact(_drop, self.instance_id)

    async def forget_lapsed(self) -> int:
        """Delete lapsed leases (call after their holds and jobs were released)."""
        return await self.db.transact(_forget_lapsed, self.instance_id, self._now_ms())


async def _register(tx: Tx, instance: str, host: str, pid: int, now: int, lease_ms: int) -> None:
    now = await lease_clock(tx, now)
    expires = now + lease_ms
    await tx.execute(
        "INSERT INTO instance (instance_id, host, pid, started_at, renewed_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (instance_id) DO UPDATE"
        " SET renewed_at = excluded.renewed_at, expires_at = excluded.expires_at",
        (instance, host, pid, now, now, expires),
    )


async def _renew(tx: Tx, instance: str, now: int, lease_ms: int) -> bool:
    now = await lease_clock(tx, now)
    expires = now + lease_ms
    # Conditional: a lease that lapsed is not silently revived (``renew`` logs it first).
    changed = await tx.execute(
        "UPDATE instance SET renewed_at = ?, expires_at = ? WHERE instance_id = ?"
        " AND expires_at > ?",
        (now, expires, instance, now),
    )
    return changed == 1


async def _drop(tx: Tx, instance: str) -> None:
    await tx.execute("DELETE FROM instance WHERE instance_id = ?", (instance,))


async def _forget_lapsed(tx: Tx, instance: str, now: int) -> int:
    now = await lease_clock(tx, now)
    return await tx.execute(
        "DELETE FROM instance WHERE expires_at <= ? AND instance_id <> ?", (now, instance)
    )
