"""The one HTTP client the provider adapters share: ``make_http_client()``.

Adapters speak httpx (its request and response types, its errors, and ``MockTransport`` in
tests); the bytes travel through aiohttp. Why: per request, httpx's own transport (httpcore,
h11) costs more CPU than everything else imagegate does for a job, and its pool re-scans every
connection whenever a request starts or ends, so with 1,000 provider calls in flight the event
loop stalled for seconds (``make bench``: fan-out and overhead). aiohttp's connector and its C
parser do the same work several times faster (bench figures in ``docs/benchmarks.md``).
``AiohttpTransport`` is the adapter between the two: it maps aiohttp's errors onto httpx's, so
callers see only httpx.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    import aiohttp

CHUNK_BYTES = 256 * 1024
# Bodies of a declared length up to this are read at once, not streamed: under the default
# [providers.*] max_download_bytes (50 MB), so a download's size cap still holds.
EAGER_BYTES = 32 * 1024 * 1024
KEEP_ALIVE_S = 60.0  # idle connections to a provider stay open this long


def make_http_client(*, warm: bool = False) -> httpx.AsyncClient:
    """An ``AsyncClient`` that scales to thousands of concurrent calls; no redirects followed.

    The number of calls in flight is bounded by each provider's ``max_concurrency`` (the
    orchestrator's semaphores), not by the client. ``warm``: a provider call is coming, so
    start loading what it needs now (``AiohttpTransport.warm_up``; in a running event loop).
    """
    transport = AiohttpTransport()
    if warm:
        transport.warm_up()
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        timeout=httpx.Timeout(120.0, connect=15.0),
    )


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends through one ``aiohttp.ClientSession``.

    httpx keeps doing what a client does (URLs, headers, cookies, redirects, timeouts,
    decoding); this sends the request as it is and returns the raw response. Connections are
    pooled per host without limit and checked with the same CA bundle as httpx's default.
    Proxy variables in the environment are not used (httpx ignores them too once it is given
    a transport), which also spares aiohttp reading ``~/.netrc`` on every request.

    The session is made on first use, in the event loop that uses it. aiohttp itself is
    imported in a worker thread, never in the event loop: it takes 0.1-0.5 s, during which
    every other job, heartbeat and request of the process would wait.
    """

    def __init__(self, *, keep_alive_s: float = KEEP_ALIVE_S) -> None:
        self._keep_alive_s = keep_alive_s
        self._session: aiohttp.ClientSession | None = None
        self._loading: asyncio.Future[ssl.SSLContext] | None = None

    def warm_up(self) -> None:
        """Start importing aiohttp and reading the CA bundle in a worker thread (at service
        start-up), so the first call finds both ready; a later call also waits for them."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(asyncio.to_thread(_load))

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self.warm_up()
            assert self._loading is not None
            ssl_context = await asyncio.shield(self._loading)  # shared by concurrent calls
            if self._session is None:  # else another call made it meanwhile
                self._session = self._new_session(ssl_context)
        return self._session

    def _new_session(self, ssl_context: ssl.SSLContext) -> aiohttp.ClientSession:
        import aiohttp  # loaded already (``_load``)

        connector = aiohttp.TCPConnector(
            limit=0,  # the orchestrator bounds concurrency, per provider
            ssl=ssl_context,
            keepalive_timeout=self._keep_alive_s,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies
            auto_decompress=False,  # httpx decodes
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = await self._get_session()
        import aiohttp

        body = await request.aread()
        timeout = request.extensions.get("timeout", {})
        with _as_httpx_errors(request):
            response = await session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        extensions = {
            "http_version": b"HTTP/1.1",
            "reason_phrase": (response.reason or "").encode("ascii", "replace"),
        }
        length = response.content_length
        if length is not None and length <= EAGER_BYTES:
            # One read, one buffer: httpx's streaming path costs ~0.1 ms per small reply (make
            # bench: overhead) and, chunk by chunk, stops the event loop for ~15 ms on an 11 MB
            # one (a 2048x2048 image in base64; make bench: large).
            with _as_httpx_errors(request):
                body = await response.read()
            response.release()
            return httpx.Response(
                response.status,
                headers=response.raw_headers,
                content=body,
                request=request,
                extensions=extensions,
            )
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, request),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._loading is not None and not self._loading.done():
            await asyncio.wait([self._loading])  # a thread cannot be stopped: let it finish
        if self._session is not None:
            await self._session.close()
            self._session = None


def _load() -> ssl.SSLContext:
    """What a session needs and takes long to load (run in a worker thread)."""
    import aiohttp  # noqa: F401

    return httpx.create_ssl_context()


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body, read as httpx reads one; closing it frees the connection."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for chunk in self._response.content.iter_chunked(CHUNK_BYTES):
                yield chunk

    async def aclose(self) -> None:
        # release() keeps a fully read connection for reuse and closes any other.
        self._response.release()


@contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    """aiohttp's errors as the httpx errors httpx's own transport raises for the same cause."""
    import aiohttp

    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc), request=request) from exc
    except TimeoutError as exc:  # aiohttp's read timeouts subclass it
        raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS handshake and certificate
        raise httpx.ConnectError(str(exc), request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
        raise httpx.ReadError(str(exc), request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(str(exc), request=request) from exc


__all__ = ["AiohttpTransport", "make_http_client"]
