"""The TypeScript SDK client, for tests that check what hosts built on it accept.

``ts_sdk()`` installs ``@modelcontextprotocol/sdk`` (pinned) from the npm registry once into a
cache directory shared by every checkout (``$IMAGEGATE_TEST_CACHE``, default
``~/.cache/imagegate-tests``); later runs find it there and start at once. ``run_ts`` drives
``ts/client.mjs`` with node against a running server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

TS_SDK_VERSION = "1.32.2"
_SCRIPT = Path(__file__).with_name("ts") / "client.mjs"


def _cache_root() -> Path:
    default = Path.home() / ".cache" / "imagegate-tests"
    return Path(os.environ.get("IMAGEGATE_TEST_CACHE") or default)


def ts_sdk() -> Path:
    """The installed SDK's package directory (installing it on first use).

    Skips the test when node or npm is missing; fails when the install fails."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        pytest.skip("node and npm are needed for the TypeScript SDK client")
    home = _cache_root() / f"ts-sdk-{TS_SDK_VERSION}"
    package = home / "node_modules" / "@modelcontextprotocol" / "sdk"
    if (package / "package.json").exists():
        return package
    # Install beside the final place and rename it there, so concurrent runs never see (or
    # leave) a half-installed tree.
    staging = home.with_name(f"{home.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    done = subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--prefix",
            str(staging),
            f"@modelcontextprotocol/sdk@{TS_SDK_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"npm install of the TypeScript SDK failed:\n{done.stderr[-2000:]}")
    try:
        staging.rename(home)
    except OSError:  # another run installed it first
        shutil.rmtree(staging, ignore_errors=True)
    return package


async def run_ts(
    url: str,
    calls: list[dict[str, Any]],
    *,
    headers: dict[str, str] | None = None,
    elicit: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the calls through the TypeScript client; returns what ``client.mjs`` printed.

    ``elicit``: declare form elicitation and answer the server's questions with these, in
    order (``{"action": "accept", "content": {...}}``, ``decline`` or ``cancel``)."""
    package = ts_sdk()
    plan = {"url": url, "headers": headers or {}, "calls": calls}
    if elicit is not None:
        plan["elicit"] = elicit
    done = await anyio.run_process(
        ["node", str(_SCRIPT)],
        input=json.dumps(plan).encode(),
        env={**os.environ, "IMAGEGATE_TS_SDK": str(package)},
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return json.loads(done.stdout)
