"""docs/examples/mcp_client.py, run as a user would, over stdio and over streamable HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

from PIL import Image

from .conftest import make_settings, running

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "examples" / "mcp_client.py"


async def run_example(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    # The venv's `imagegate` first on PATH: the script starts it for stdio.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        "--out",
        str(tmp_path / "out"),
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": str(ROOT), "PATH": path, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


def saved_image(output: str) -> Path:
    path = Path(output.splitlines()[-1].split("  ")[0])
    with Image.open(path) as image:
        image.verify()
    return path


async def test_the_example_client_over_stdio(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\npath = "{tmp_path / "db.sqlite"}"\n'
        f'[images]\ndir = "{tmp_path / "images"}"\n[mcp]\nstdio_user = "example"\n'
    )
    output = await run_example(tmp_path, "stdio", "a red fox", "--config", str(config))
    assert output.startswith("job ") and "1 credit(s), 49 left" in output
    assert saved_image(output).parent == tmp_path / "out"


async def test_the_example_client_over_http_with_a_token(tmp_path: Path):
    token = "example-token-" + "x" * 20
    client = {"user": "ann", "token_sha256": hashlib.sha256(token.encode()).hexdigest()}
    settings = make_settings(tmp_path, mcp={"clients": [client]})
    async with running(settings) as url:
        output = await run_example(
            tmp_path, "http", "a red fox", "--url", url, env={"IMAGEGATE_TOKEN": token}
        )
    assert "1 credit(s), 9 left" in output
    assert saved_image(output).parent == tmp_path / "out"
