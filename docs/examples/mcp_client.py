"""Use imagegate from Python through the MCP SDK (``pip install "mcp>=2,<3"``).

    # stdio: the script starts `imagegate mcp` itself (user: [mcp] stdio_user)
    python docs/examples/mcp_client.py stdio "a red fox in the snow" --config config.toml

    # streamable HTTP: to a running `imagegate serve` (or `imagegate mcp --transport http`);
    # the token (from `imagegate mcp token USER`) is needed once [[mcp.clients]] are configured
    IMAGEGATE_TOKEN=... python docs/examples/mcp_client.py http "a red fox in the snow" \\
        --url http://127.0.0.1:8765/mcp

It calls ``generate_image``, waits with ``get_job`` if the job outlasts the server's wait,
reads each full-size image from its ``imagegate://images/{id}`` resource, and saves it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


async def generate(client: Client, prompt: str, out: Path) -> list[Path]:
    """One image for ``prompt``, saved under ``out``; returns the files written."""
    result = await client.call_tool("generate_image", {"prompt": prompt})
    job = result.structured_content or {}
    while job.get("status") == "running":  # a slow provider: the server answered early
        result = await client.call_tool("get_job", {"job_id": job["job_id"], "wait_s": 30})
        job = result.structured_content or {}
    if result.is_error:  # the text says what was wrong and what it cost (nothing, mostly)
        raise SystemExit(f"generate_image failed: {result.content[0].text}")
    print(
        f"job {job['job_id']}: {job['credits_charged']} credit(s), {job['credits_remaining']} left"
    )
    return [await save(client, image, out) for image in job["images"]]


async def save(client: Client, image: dict[str, Any], out: Path) -> Path:
    """Read the full image (the tool result holds only a preview) and write it to ``out``."""
    resource = await client.read_resource(image["uri"])
    content = resource.contents[0]
    data = base64.b64decode(content.blob)  # an image resource is a blob (base64)
    suffix = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
    path = out / (image["uri"].rsplit("/", 1)[-1] + suffix.get(image["mime"], ""))
    out.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"{path}  {image['width']}x{image['height']} {image['mime']}")
    return path


def stdio_server(config: str | None) -> StdioServerParameters:
    """How to start ``imagegate mcp`` (it finds its config as the CLI does)."""
    command = shutil.which("imagegate")
    args = ["-m", "core.cli"] if command is None else []
    args += [*(["--config", config] if config else []), "mcp"]
    return StdioServerParameters(command=command or sys.executable, args=args, env=dict(os.environ))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("transport", choices=("stdio", "http"))
    parser.add_argument("prompt")
    parser.add_argument("--config", help="stdio: the server's config file")
    parser.add_argument("--url", default="http://127.0.0.1:8765/mcp", help="http: the endpoint")
    parser.add_argument("--out", type=Path, default=Path("images"), help="where to save")
    args = parser.parse_args()

    if args.transport == "stdio":
        async with Client(stdio_server(args.config)) as client:
            await generate(client, args.prompt, args.out)
        return
    token = os.environ.get("IMAGEGATE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(args.url, http_client=http)) as client:
            await generate(client, args.prompt, args.out)


if __name__ == "__main__":
    asyncio.run(main())
