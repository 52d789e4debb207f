"""Serve an emulator over real HTTP for the length of a `with` or `async with` block."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from .base import ConnectionDropped


class running:  # noqa: N801 - used like a function: `with running(emu) as url:`
    """Run `target` (an Emulator or any ASGI app) with uvicorn on 127.0.0.1:<free port>.

    Usable as `with running(emu) as url:` or `async with running(emu) as url:`; `url` is
    "http://127.0.0.1:PORT" (append `emu.base_path` for an adapter's base_url). The server runs in
    a background thread with its own event loop and stops when the block ends.
    """

    def __init__(self, target: Any, host: str = "127.0.0.1"):
        self._app = getattr(target, "app", target)
        self._host = host
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> str:
        _quiet_dropped_connections()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind((self._host, 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_config=None,  # leave the process's logging alone
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("emulator server failed to start")
            time.sleep(0.005)
        return f"http://{self._host}:{port}"

    def __exit__(self, *exc_info: Any) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    async def __aenter__(self) -> str:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(self, *exc_info: Any) -> None:
        await asyncio.to_thread(self.__exit__, *exc_info)


class _DropFilter(logging.Filter):
    """Hide uvicorn's traceback for connections the emulator drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


_FILTER = _DropFilter()


def _quiet_dropped_connections() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
