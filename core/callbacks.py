"""Receives provider callbacks (Deepmode ``callback``, Hive ``callback_url``, Deep-Image
``webhooks.complete``) on an unguessable per-job path, once.

An adapter calls ``hub.expect()`` before submitting, sends ``waiter.url`` to the provider and
awaits ``waiter.wait(timeout)``. The first POST to that path resolves the waiter; duplicates,
late arrivals (after the waiter was closed) and unknown paths are answered but ignored.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAX_CALLBACK_BYTES = 20 * 1024 * 1024


@dataclass
class CallbackWaiter:
    """One expected callback. ``url`` goes to the provider; ``wait`` returns the JSON body."""

    hub: CallbackHub
    token: str
    url: str
    future: asyncio.Future[Any] = field(repr=False)

    async def wait(self, timeout: float) -> Any:
        """The callback's JSON body.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        try:
            return await asyncio.wait_for(asyncio.shield(self.future), timeout)
        finally:
            self.close()

    def close(self) -> None:
        """Stop expecting this callback; a later POST is ignored."""
        self.hub._waiters.pop(self.token, None)


class CallbackHub:
    """Holds the waiters of one process and serves the receiving ASGI app."""

    def __init__(self, public_url: str, path: str = "/callbacks") -> None:
        self.public_url = public_url.rstrip("/")
        self.path = "/" + path.strip("/")
        self._waiters: dict[str, CallbackWaiter] = {}
        self.ignored = 0
        self.app = Starlette(
            routes=[Route(self.path + "/{token}", self._receive, methods=["POST"])]
        )

    def expect(self) -> CallbackWaiter:
        """Register a new waiter with a fresh unguessable path."""
        token = secrets.token_urlsafe(24)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiter = CallbackWaiter(self, token, f"{self.public_url}{self.path}/{token}", future)
        self._waiters[token] = waiter
        return waiter

    async def _receive(self, request: Request) -> JSONResponse:
        token = request.path_params["token"]
        waiter = self._waiters.get(token)
        if waiter is None or waiter.future.done():
            return self._ignore(waiter)
        body = await read_capped(request, MAX_CALLBACK_BYTES)
        if body is None:
            return JSONResponse({"status": "too large"}, status_code=413)
        if self._waiters.get(token) is not waiter or waiter.future.done():
            return self._ignore(waiter)  # a duplicate won while this body arrived, or too late
        try:
            payload = json.loads(body)
        except ValueError:
            return JSONResponse({"status": "bad json"}, status_code=400)
        waiter.future.set_result(payload)
        return JSONResponse({"status": "ok"})

    def _ignore(self, waiter: CallbackWaiter | None) -> JSONResponse:
        self.ignored += 1
        # Unknown, duplicate or late: say nothing useful to a prober.
        return JSONResponse({"status": "ignored"}, status_code=404 if waiter is None else 200)


async def read_capped(request: Request, cap: int) -> bytes | None:
    """The request's body, or None as soon as it is known to be over ``cap`` bytes (by its
    declared length, or while it streams in): an oversized body is never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
