"""Every provider emulator in one process, with a control API: ``python -m bench.soak_emulators``.

The soak runs the emulators here, not in its own process, so that its figures (memory, file
descriptors, tasks, CPU) are imagegate's alone. Prints one line ``ready <json>`` with each
emulator's base URL and keys and the control URL, then serves until killed. Control API (JSON):

- ``POST /inject {"kind", "fault": {Fault fields}, "times"}``: queue a fault on an emulator;
- ``GET /stats``: per emulator, requests served, faults still queued, callbacks sent.

Emulator state that would grow without bound over 10,000 jobs (recorded requests, served
files, jobs, images) is pruned every few seconds: the soak never looks at it again.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sys
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.emulators import Emulator, Fault, create_emulator

KEEP_S = 60.0  # served files and provider-side records older than this are dropped


class _Counter(list):  # type: ignore[type-arg]
    """Stands in for ``Emulator.requests``: counts, keeps nothing."""

    count = 0

    def append(self, item: Any) -> None:
        self.count += 1


def build() -> dict[str, Emulator]:
    emulators: dict[str, Emulator] = {
        "deepmode": create_emulator("deepmode", credits=10**12),
        "deepimage": create_emulator(
            "deepimage", credits=10**12, max_concurrent_jobs=10**6, job_duration_s=0.02,
            sync_wait_s=10,
        ),
        "hive": create_emulator("hive", v3_api_key=f"sk-soak-hive3-{secrets.token_hex(8)}"),
        "nebulablock": create_emulator("nebulablock", credits=1e12),
        "openai": create_emulator("openai"),
    }  # fmt: skip
    for kind, emu in emulators.items():
        emu.api_key = f"sk-soak-{kind}-{secrets.token_hex(8)}"
        emu.image_size = (64, 64)
        emu.requests = _Counter()
    return emulators


async def prune(emulators: dict[str, Emulator]) -> None:
    while True:
        await asyncio.sleep(5)
        now = time.monotonic()
        for emu in emulators.values():
            emu.callbacks_sent.clear()
            for name in [
                n for n, f in emu.files.items() if f.expires_at - emu.url_ttl_s < now - KEEP_S
            ]:
                del emu.files[name]
            images = getattr(emu, "images", None)
            if isinstance(images, dict) and len(images) > 5000:
                for key in list(images)[: len(images) - 5000]:
                    del images[key]
            jobs = getattr(emu, "jobs", None)
            if isinstance(jobs, dict):
                for key in [k for k, j in jobs.items() if j.created < now - KEEP_S]:
                    del jobs[key]
            stamps = getattr(emu, "_stamps", None)
            if isinstance(stamps, list):
                stamps.clear()


def control(emulators: dict[str, Emulator]) -> Starlette:
    async def inject(request: Request) -> JSONResponse:
        body = await request.json()
        emulators[body["kind"]].inject(Fault(**body["fault"]), times=int(body.get("times", 1)))
        return JSONResponse({"ok": True})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                kind: {
                    "requests": emu.requests.count,  # type: ignore[attr-defined]
                    "faults_queued": sum(entry[1] for entry in emu._faults),
                }
                for kind, emu in emulators.items()
            }
        )

    return Starlette(routes=[Route("/inject", inject, methods=["POST"]), Route("/stats", stats)])


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


async def main() -> None:
    emulators = build()
    apps = {**{kind: emu.app for kind, emu in emulators.items()}, "control": control(emulators)}
    servers, urls, tasks = [], {}, []
    for name, app in apps.items():
        sock = _socket()
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", backlog=2048,
            timeout_keep_alive=30,
        )  # fmt: skip
        server = uvicorn.Server(config)
        servers.append(server)
        urls[name] = f"http://127.0.0.1:{sock.getsockname()[1]}"
        tasks.append(asyncio.create_task(server._serve(sockets=[sock])))
    while not all(server.started for server in servers):
        await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(prune(emulators)))
    info = {
        "control": urls["control"],
        "kinds": {
            kind: {
                "url": urls[kind] + emu.base_path,
                "key": emu.api_key,
                **({"v3_key": emu.v3_api_key} if kind == "hive" else {}),  # type: ignore[attr-defined]
            }
            for kind, emu in emulators.items()
        },
    }
    sys.stdout.write("ready " + json.dumps(info) + "\n")
    sys.stdout.flush()
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())
