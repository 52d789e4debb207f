"""The one HTTP client the provider adapters share: ``make_http_client()``.

Why a transport of our own: httpx's connection pool (httpcore 1.0) re-scans every connection,
and for each idle one every connection again, whenever a request starts or ends. That is
nothing with a handful of connections, but with 1,000 provider calls in flight the pool's
bookkeeping took more CPU than everything else together and stalled the event loop for
seconds (``make bench``, fan-out: 40 s for 1 s of provider time; 4.5 s with this transport).
``ShardedTransport`` keeps each pool small: one pool per connection in use, per provider. A
request goes to the first pool of its provider with nothing in flight, and a new pool opens
when all are busy. The first four pools of a provider (its default ``max_concurrency``) keep
their connections alive and reuse them as one pool would; busier ones close theirs when idle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

PER_SHARD = 1  # requests in flight per pool; more makes every request scan more connections
MAX_SHARDS = 256
KEEP_ALIVE_SHARDS = 4  # per origin; busier pools close their connection once idle


def make_http_client() -> httpx.AsyncClient:
    """An ``AsyncClient`` that scales to thousands of concurrent calls; no redirects followed.

    The number of calls in flight is bounded by each provider's ``max_concurrency`` (the
    orchestrator's semaphores), not by the client.
    """
    return httpx.AsyncClient(
        transport=ShardedTransport(),
        follow_redirects=False,
        timeout=httpx.Timeout(120.0, connect=15.0),
    )


class ShardedTransport(httpx.AsyncBaseTransport):
    """Spreads requests over small connection pools: each origin (scheme, host, port) gets up
    to ``max_shards`` pools, and a request goes to the first of them with fewer than
    ``per_shard`` requests in flight (the least busy when all are full).

    Only the first ``keep_alive_shards`` pools of an origin keep idle connections open, so
    what stays open after a burst is bounded as with one pool: httpcore closes an expired
    connection only when its pool is used again, and the later pools rarely are.

    ``options`` go to each ``httpx.AsyncHTTPTransport``. Without ``verify``, all pools share
    one default SSL context, built with the first pool (it takes ~30 ms: not at start-up).
    """

    def __init__(
        self,
        *,
        per_shard: int = PER_SHARD,
        max_shards: int = MAX_SHARDS,
        keep_alive_shards: int = KEEP_ALIVE_SHARDS,
        **options: Any,
    ) -> None:
        self.per_shard = per_shard
        self.max_shards = max_shards
        self.keep_alive_shards = keep_alive_shards
        self._options = options
        self._shards: dict[tuple[bytes, bytes, int | None], list[httpx.AsyncHTTPTransport]] = {}
        self._in_flight: dict[tuple[bytes, bytes, int | None], list[int]] = {}

    def _pick(self, origin: tuple[bytes, bytes, int | None]) -> int:
        counts = self._in_flight.setdefault(origin, [])
        for index, count in enumerate(counts):
            if count < self.per_shard:
                return index
        if len(counts) < self.max_shards:
            if "verify" not in self._options:
                self._options["verify"] = httpx.create_ssl_context()
            keep = self.per_shard if len(counts) < self.keep_alive_shards else 0
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=keep)
            shard = httpx.AsyncHTTPTransport(limits=limits, **self._options)
            self._shards.setdefault(origin, []).append(shard)
            counts.append(0)
            return len(counts) - 1
        return min(range(len(counts)), key=counts.__getitem__)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port)
        index = self._pick(origin)
        counts = self._in_flight[origin]
        counts[index] += 1

        def done() -> None:
            counts[index] -= 1

        try:
            response = await self._shards[origin][index].handle_async_request(request)
        except BaseException:
            done()
            raise
        response.stream = _Counted(response.stream, done)
        return response

    async def aclose(self) -> None:
        for shards in self._shards.values():
            for shard in shards:
                await shard.aclose()


class _Counted(httpx.AsyncByteStream):
    """A response body that calls ``done`` once, when it is closed."""

    def __init__(self, stream: Any, done: Callable[[], None]) -> None:
        self._stream = stream
        self._done: Callable[[], None] | None = done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._done is not None:
                self._done()
                self._done = None
