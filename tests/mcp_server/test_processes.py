"""The real entry points as subprocesses: ``python -m mcp_server`` over stdio, and
``imagegate serve`` printing where it listens and answering over HTTP."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import signal
import socket
import sys
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from core import Settings
from mcp_server.serve import _bind

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\npath = "{tmp_path / "db.sqlite"}"\n'
        f'[images]\ndir = "{tmp_path / "images"}"\n'
        f"[quota]\nallowance = 5\n"
        f'[mcp]\nstdio_user = "alice"\nport = 0\n{extra}',
        encoding="utf-8",
    )
    return config


async def test_stdio_subprocess_serves_the_configured_user(tmp_path):
    config = write_config(tmp_path)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server", "--config", str(config)],
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    async with Client(params) as client:
        made = await client.call_tool("generate_image", {"prompt": "a lighthouse"})
        assert not made.is_error, made.content
        assert made.structured_content["credits_remaining"] == 4
        full = await client.read_resource(made.structured_content["images"][0]["uri"])
        assert base64.b64decode(full.contents[0].blob).startswith(b"\x89PNG")
        status = (await client.call_tool("get_quota", {})).structured_content
        assert (status["user"], status["remaining"]) == ("mcp:alice", 4)


async def test_imagegate_serve_prints_its_url_and_answers(tmp_path):
    config = write_config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISCORD_TOKEN": ""}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "core.cli",
        "--config",
        str(config),
        "serve",
        cwd=str(ROOT),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        with anyio.fail_after(20):
            while not any("or with curl:" in line for line in lines):
                line = (await process.stderr.readline()).decode()
                assert line, "serve exited early:\n" + "".join(lines)
                lines.append(line)
        text = "".join(lines)
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+/mcp)", text)
        assert url, text
        assert f"claude mcp add --transport http imagegate {url[1]}" in text
        assert "Discord bot not started" in text
        curl = re.search(r"or with curl: (curl .*)", text)
        assert curl, text
        if shutil.which("curl") and shutil.which("bash"):
            # As printed, plus curl's own errors and the status, should it fail.
            shown = await asyncio.create_subprocess_exec(
                "bash",
                "-c",
                curl[1] + " -S -w '\nHTTP %{http_code}'",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await shown.communicate()
            assert b"Made 1 image with placeholder:default" in output, (shown.returncode, output)
        async with Client(url[1]) as client:
            status = (await client.call_tool("get_quota", {})).structured_content
            assert status["user"] == "mcp:alice"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        with anyio.fail_after(15):
            code = await process.wait()
    assert code == 0


async def test_http_behind_a_proxy_without_clients_refuses_to_start(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISCORD_TOKEN": ""}
    cases = (
        (
            'allowed_hosts = ["images.example.org"]\n',
            ["mcp", "--transport", "http"],
            "allowed_hosts",
        ),
        ('[callbacks]\npublic_url = "https://images.example.org"\n', ["serve"], "public_url"),
    )
    for extra, command, key in cases:
        config = write_config(tmp_path, extra)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "core.cli",
            "--config",
            str(config),
            *command,
            cwd=str(ROOT),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        with anyio.fail_after(20):
            out, err = await process.communicate()
        lines = err.decode().splitlines()
        assert process.returncode == 1 and out == b"", (command, lines)
        assert len(lines) == 1 and key in lines[0] and "mcp token USER" in lines[0], lines


def test_the_announced_socket_already_accepts_connections(tmp_path):
    """``serve`` prints "listening on" before uvicorn starts: a client that connects at once
    (the printed curl line, run by a script) must wait in the backlog, not be refused."""
    sock = _bind(Settings(), "127.0.0.1", 0, "[mcp]")
    try:
        with socket.create_connection(sock.getsockname()[:2], timeout=5):
            pass
    finally:
        sock.close()
