"""Scaling out: three ``imagegate mcp --transport http`` processes on their own ports, sharing
one PostgreSQL database and one images folder, as replicas behind a load balancer would.

- 300 concurrent ``generate_image`` calls from three tokens, spread over the replicas, against
  small allowances: exactly the allowance succeeds for each user, and the ledger sums match;
- an image made on one replica is readable from the others;
- ``get_job`` on one replica answers for a job running on another (through the database);
- a replica killed with SIGKILL mid-job: its hold is released by another replica once its
  lease has lapsed, and not before; the job is marked interrupted and nothing is lost.

The replicas start once for the module (each takes a second or two to import and open).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from core import Caller, ImageService, parse_settings
from tests.conftest import PG_URL_ENV
from tests.emulators import Fault, create_emulator, running
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]
ALLOWANCE = 7
USERS = ("ann", "bob", "cat", "dan", "eve")
TOKENS = {name: f"replica-test-token-{name}-0123456789" for name in USERS}
KEY_ENV = "IMAGEGATE_REPLICA_DEEPIMAGE_KEY"


@dataclass
class Replicas:
    """The running replicas, the settings they share and the slow provider they call."""

    urls: list[str]
    settings: Any
    emulator: Any
    env: dict[str, str]
    folder: Path
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    logs: list[list[str]] = field(default_factory=list)


def _config(tmp: Path, provider_url: str, lease_s: float = 15) -> str:
    clients = "".join(
        f'[[mcp.clients]]\nuser = "{user}"\n'
        f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        + ("allowance = 1000\n" if user == "dan" else "")
        for user, token in TOKENS.items()
    )
    return f"""
[database]
url_env = "{PG_URL_ENV}"
pool_size = 6
lease_s = {lease_s}
[images]
dir = "{tmp / "images"}"
[quota]
allowance = {ALLOWANCE}
sweep_interval_s = 0.5
[mcp]
port = 0
{clients}
[providers.placeholder]
kind = "placeholder"
models = ["default"]
[providers.deepimage]
kind = "deepimage"
base_url = "{provider_url}"
api_key_env = "{KEY_ENV}"
models = ["default"]
poll_interval_s = 0.05
[defaults]
model = "placeholder:default"
"""


async def _start(config: Path, env: dict[str, str], log: list[str]) -> tuple[Any, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "core.cli", "--config", str(config), "mcp", "--transport", "http",
        cwd=str(ROOT), env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    with anyio.fail_after(60):
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, "a replica exited early:\n" + "".join(log)
            log.append(line)
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+/mcp)", line)
            if found:
                break

    async def drain() -> None:  # a full stderr pipe would stall the replica
        assert process.stderr is not None
        async for more in process.stderr:
            log.append(more.decode())

    asyncio.get_running_loop().create_task(drain())
    return process, found[1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicas(tmp_path_factory, pg_server: PostgresServer) -> AsyncIterator[Replicas]:
    tmp = tmp_path_factory.mktemp("replicas")
    url = pg_server.create_database()
    emulator = create_emulator("deepimage", api_key="di-replica-key", sync_wait_s=0)
    env = {**os.environ, "PYTHONPATH": str(ROOT), PG_URL_ENV: url, KEY_ENV: "di-replica-key"}
    saved = {name: os.environ.get(name) for name in (PG_URL_ENV, KEY_ENV)}
    os.environ.update({PG_URL_ENV: url, KEY_ENV: "di-replica-key"})
    try:
        async with running(emulator) as provider_url:
            config = tmp / "config.toml"
            config.write_text(_config(tmp, provider_url), encoding="utf-8")
            settings = parse_settings(
                __import__("tomllib").loads(config.read_text()), source=str(config)
            )
            state = Replicas([], settings, emulator, env, tmp)
            try:
                state.logs = [[], [], []]
                # The first migrates the new database; the other two then start together.
                started = [await _start(config, env, state.logs[0])]
                started += await asyncio.gather(
                    *(_start(config, env, state.logs[n]) for n in (1, 2))
                )
                state.processes = [process for process, _ in started]
                state.urls = [mcp_url for _, mcp_url in started]
                yield state
            finally:
                for process in state.processes:
                    if process.returncode is None:
                        process.send_signal(signal.SIGINT)
                for process in state.processes:
                    with anyio.fail_after(20):
                        await process.wait()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        pg_server.drop_database(url)


@contextlib.asynccontextmanager
async def connect(url: str, user: str) -> AsyncIterator[Any]:
    headers = {"Authorization": f"Bearer {TOKENS[user]}"}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            yield client


async def test_300_concurrent_calls_spend_exactly_each_allowance(replicas: Replicas):
    users = ("ann", "bob", "cat")
    async with contextlib.AsyncExitStack() as stack:
        sessions = {
            (user, n): await stack.enter_async_context(connect(url, user))
            for user in users
            for n, url in enumerate(replicas.urls)
        }
        calls = [(user, i) for i in range(100) for user in users]
        results = await asyncio.gather(
            *(
                sessions[user, i % 3].call_tool("generate_image", {"prompt": f"{user} {i}"})
                for user, i in calls
            )
        )
    outcomes: Counter[tuple[str, str]] = Counter()
    for (user, _), result in zip(calls, results, strict=True):
        out = result.structured_content
        outcomes[user, out["status"] if not result.is_error else out["error"]["code"]] += 1
    for user in users:
        assert outcomes[user, "succeeded"] == ALLOWANCE, outcomes
        assert outcomes[user, "quota_exceeded"] == 100 - ALLOWANCE, outcomes
    async with await ImageService.open(replicas.settings, sweeper=False) as service:
        assert await service.quotas.check_ledger() == []
        for user in users:
            status = await service.quota(Caller(frontend="mcp", user_id=user))
            assert (status.remaining, status.held, status.in_flight) == (0, 0, 0)
            captured = await service.db.fetchone(
                "SELECT CAST(SUM(-d_held) AS BIGINT), count(*) FROM ledger"
                " WHERE user_id = ? AND kind = 'capture'",
                (f"mcp:{user}",),
            )
            assert tuple(captured) == (ALLOWANCE, ALLOWANCE)


async def test_an_image_made_on_one_replica_is_read_from_the_others(replicas: Replicas):
    async with connect(replicas.urls[0], "dan") as client:
        made = await client.call_tool("generate_image", {"prompt": "shared storage"})
    assert not made.is_error, made.content
    uri = made.structured_content["images"][0]["uri"]
    contents = []
    for url in replicas.urls:
        async with connect(url, "dan") as client:
            contents.append(base64.b64decode((await client.read_resource(uri)).contents[0].blob))
    assert contents[0].startswith(b"\x89PNG") and contents.count(contents[0]) == 3
    async with connect(replicas.urls[2], "ann") as client:  # still only its owner's
        with pytest.raises(Exception, match="no image"):
            await client.read_resource(uri)


async def test_get_job_on_one_replica_answers_for_a_job_running_on_another(replicas: Replicas):
    emulator = replicas.emulator
    emulator.inject(Fault(slow_job=True))  # in progress until this test says otherwise
    async with (
        connect(replicas.urls[0], "dan") as on_a,
        connect(replicas.urls[1], "dan") as on_b,
    ):
        started = asyncio.create_task(
            on_a.call_tool("generate_image", {"prompt": "slow", "model": "deepimage:default"})
        )
        async with await ImageService.open(replicas.settings, sweeper=False) as service:
            while not (rows := await service.db.fetchall("SELECT job_id FROM job WHERE model = ?",
                                                        ("deepimage:default",))):  # fmt: skip
                await asyncio.sleep(0.05)
        job_id = rows[0][0]
        look = await on_b.call_tool("get_job", {"job_id": job_id, "wait_s": 0})
        assert look.structured_content["status"] == "running", look.content
        waiting = asyncio.create_task(on_b.call_tool("get_job", {"job_id": job_id, "wait_s": 60}))
        while not emulator.jobs:
            await asyncio.sleep(0.05)
        for job in emulator.jobs.values():
            job.slow = False  # the provider finishes the job
        done = await waiting
        assert done.structured_content["status"] == "succeeded", done.content
        assert done.structured_content["job_id"] == job_id
        assert len(done.structured_content["images"]) == 1
        assert (await started).structured_content["job_id"] == job_id


async def test_a_killed_replicas_hold_is_released_after_its_lease_and_not_before(
    replicas: Replicas,
):
    short = replicas.folder / "short-lease.toml"
    provider = replicas.settings.providers["deepimage"].base_url
    short.write_text(_config(replicas.folder, provider, lease_s=2), encoding="utf-8")
    process, url = await _start(short, replicas.env, [])
    replicas.emulator.inject(Fault(slow_job=True))  # the job is still running when it dies
    hold_sql = "SELECT hold_id, state, owner, job_id FROM hold WHERE user_id = 'mcp:eve'"
    lease_sql = "SELECT expires_at FROM instance WHERE instance_id = ?"
    async with await ImageService.open(replicas.settings, sweeper=False) as service:
        db = service.db
        # The client's connection dies with the replica: what it raises is not the point.
        with contextlib.suppress(Exception):
            async with connect(url, "eve") as client:
                request = {"prompt": "doomed", "model": "deepimage:default"}
                call = asyncio.create_task(client.call_tool("generate_image", request))
                call.add_done_callback(lambda task: task.cancelled() or task.exception())
                while (hold := await db.fetchone(hold_sql)) is None:
                    await asyncio.sleep(0.05)
                lease_end = (await db.fetchone(lease_sql, (hold["owner"],)))[0]
                process.kill()  # SIGKILL: no clean exit, no dropped lease
                await process.wait()
        await process.wait()
        looked_at = int(time.time() * 1000)
        state = (await db.fetchone(hold_sql))["state"]
        row = await db.fetchone(lease_sql, (hold["owner"],))
        lease_end = row[0] if row is not None else lease_end  # a last renewal, if any
        if looked_at < lease_end:  # looked before the lease lapsed: still held
            assert state == "held"
        with anyio.fail_after(60):
            while (await db.fetchone(hold_sql))["state"] == "held":
                await asyncio.sleep(0.1)
        released = await db.fetchone(
            "SELECT created_at FROM ledger WHERE hold_id = ? AND kind = 'expire'",
            (hold["hold_id"],),
        )
        assert released is not None and released[0] >= lease_end
        job = await service.store.job(hold["job_id"])
        assert job is not None and job.status == "interrupted"
        status = await service.quota(Caller(frontend="mcp", user_id="eve"))
        assert (status.remaining, status.held) == (ALLOWANCE, 0)
        assert await service.quotas.check_ledger() == []
