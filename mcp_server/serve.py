"""Starting things: ``imagegate mcp [--transport stdio|http]``, ``imagegate serve`` and
``python -m mcp_server``.

``serve`` runs everything configured in one process around one ``ImageService``: the MCP server
over streamable HTTP, the provider-callback receiver when ``[callbacks] public_url`` is set,
and the Discord bot when its token variable is set and the bot package offers
``bot.app.start_bot(service, settings)``. Where each listens is printed on stderr.

Without ``[[mcp.clients]]`` HTTP serves only local clients, as ``stdio_user``: it refuses to start
when it could be reached from elsewhere (a non-loopback ``[mcp] host``, ``[mcp] allowed_hosts``
naming the host a proxy forwards, or ``[callbacks] public_url``), and refuses requests that carry
a proxy's forwarding headers. With clients configured every request needs a valid bearer token,
loopback included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import ipaddress
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import uvicorn
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from core import ConfigError, ImageService, Settings, dashboard_app

from .auth import OptionalBearer
from .server import ImageGateServer, build_server

log = logging.getLogger("imagegate.mcp")

_LOCAL_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
ADMIN_PATH = "/admin"
_MIN_BODY_BYTES = 4 * 1024 * 1024
# Headers a reverse proxy or tunnel adds (RFC 7239 and the de-facto ones), lower-case as in ASGI.
_PROXY_HEADERS = frozenset(
    {b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-real-ip", b"via"}
)


def run_mcp(settings: Settings, args: argparse.Namespace) -> int:
    """``imagegate mcp``: stdio (the default) or streamable HTTP on ``[mcp] host``/``port``."""
    if (getattr(args, "transport", None) or "stdio") == "stdio":
        anyio.run(build_server(settings).run_stdio_async)
        return 0
    return asyncio.run(_serve(settings, everything=False))


def serve_all(settings: Settings, args: argparse.Namespace) -> int:
    """``imagegate serve``: MCP over HTTP, plus the callback receiver and the bot if configured."""
    return asyncio.run(_serve(settings, everything=True))


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_token(settings: Settings, *, stored_tokens: bool = False) -> bool:
    """Whether HTTP requests need a bearer token: they do once any token exists, in
    ``[[mcp.clients]]`` or (``stored_tokens``) in the database.

    Raises:
        ConfigError: no token while the server can be reached from elsewhere: a non-loopback
            ``[mcp] host``, or a proxy in front (``[mcp] allowed_hosts`` or ``[callbacks]
            public_url`` set; a proxy connects from loopback, so the bind address alone cannot
            tell).
    """
    if settings.mcp.clients or stored_tokens:
        return True
    reachable = _reachable_from_elsewhere(settings)
    if reachable:
        raise ConfigError(
            f"{settings.source}: {reachable} and there is no MCP client token, so anyone could"
            f' spend "{settings.mcp.stdio_user}"\'s credits; make one with: imagegate mcp token'
            " USER"
        )
    return False


def _reachable_from_elsewhere(settings: Settings) -> str | None:
    """Why the HTTP server could be reached by others than local clients, or None."""
    if not is_loopback(settings.mcp.host):
        return f"[mcp] host: {settings.mcp.host} is not a loopback address"
    if settings.mcp.allowed_hosts:
        return "[mcp] allowed_hosts: set, so clients come through a proxy"
    if settings.callbacks.public_url:
        return "[callbacks] public_url: set, so this deployment is reachable from outside"
    return None


def http_app(
    server: ImageGateServer, settings: Settings, service: ImageService | None = None
) -> Starlette:
    """The streamable HTTP ASGI app with DNS-rebinding protection and a body cap that fits an
    image plus a mask as base64. Without client tokens, requests a proxy forwarded are refused
    (``LocalOnly``). With ``service`` (and ``[admin] enabled``), the operators' dashboard at
    ``/admin`` behind the same Host/Origin checks."""
    max_input = min(settings.mcp.max_input_bytes, settings.images.max_input_bytes)
    body_cap = max(_MIN_BODY_BYTES, 2 * 4 * math.ceil(max_input / 3) + 64 * 1024)
    app = server.streamable_http_app(
        streamable_http_path=settings.mcp.path,
        transport_security=transport_security(settings),
        host=settings.mcp.host,
        max_request_body_size=body_cap,
    )
    if service is not None and settings.admin.enabled:
        guard = TransportSecurityMiddleware(transport_security(settings))
        app.router.routes.append(Mount(ADMIN_PATH, app=_guarded(dashboard_app(service), guard)))
    if not server.require_token:
        app.add_middleware(OptionalBearer, verifier=server.verifier)
        app.add_middleware(LocalOnly)
    return app


class LocalOnly:
    """ASGI middleware for tokenless HTTP: a request carrying a proxy's forwarding header is
    refused (403), because tokenless HTTP spends ``stdio_user``'s credits and must serve only
    clients on this machine. nginx adds none by default, which is why ``require_token`` also
    refuses to start behind a configured proxy; most other proxies and tunnels add one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(k in _PROXY_HEADERS for k, _ in scope["headers"]):
            refusal = PlainTextResponse(
                "This request came through a proxy, and this imagegate has no client tokens:"
                " it serves only local clients. The operator can add [[mcp.clients]]"
                " (imagegate mcp token USER).",
                status_code=403,
            )
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _guarded(app: ASGIApp, guard: TransportSecurityMiddleware) -> ASGIApp:
    """``app`` behind the MCP transport's Host and Origin checks (DNS rebinding, cross-site
    posts). Its forms are not JSON, so the checks run as for a GET."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = await guard.validate_request(Request(scope), is_post=False)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Host and Origin checks: loopback names, the bound host, and ``[mcp] allowed_hosts``."""
    names = list(_LOCAL_HOSTS)
    host = settings.mcp.host
    if host not in ("0.0.0.0", "::") and not is_loopback(host):
        names.append(f"[{host}]" if ":" in host else host)
    names.extend(settings.mcp.allowed_hosts)
    hosts = [h for name in names for h in (name, f"{name}:*")]
    origins = [f"{scheme}://{h}" for scheme in ("http", "https") for h in hosts]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


def mcp_url(settings: Settings, port: int) -> str:
    """The URL a local client uses."""
    host = settings.mcp.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{settings.mcp.path}"


def connect_hint(settings: Settings, url: str, tokens: bool | None = None) -> list[str]:
    """Two copy-paste lines: add the server to Claude Code, or make an image with curl.
    ``tokens``: requests need one (default: when ``[[mcp.clients]]`` has any)."""
    tokens = bool(settings.mcp.clients) if tokens is None else tokens
    auth = ' --header "Authorization: Bearer $TOKEN"' if tokens else ""
    curl_auth = ' -H "Authorization: Bearer $TOKEN"' if tokens else ""
    body = (
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"generate_image",'
        '"arguments":{"prompt":"a lighthouse at dusk","return_image":"none"},"_meta":{'
        '"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
        '"io.modelcontextprotocol/clientCapabilities":{}}}}'
    )
    lines = [
        f"try it: claude mcp add --transport http imagegate {url}{auth}",
        f"or with curl: curl -s {url}{curl_auth} -H 'Content-Type: application/json'"
        " -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28'"
        f" -H 'Mcp-Method: tools/call' -H 'Mcp-Name: generate_image' -d '{body}'",
    ]
    if settings.mcp.clients:
        lines.append("($TOKEN: a client token, minted with: imagegate mcp token USER)")
    return lines


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``_serve`` stops every server at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(settings: Settings, *, everything: bool) -> int:
    service = await ImageService.open(settings, receive_callbacks=True)
    try:
        needs_token = require_token(settings, stored_tokens=await service.has_tokens("mcp"))
        mcp_socket = _bind(settings, settings.mcp.host, settings.mcp.port, "[mcp]")
    except BaseException:
        await service.aclose()
        raise
    server = build_server(service, require_token=needs_token)
    servers: list[_Server] = []
    tasks: list[asyncio.Task[Any]] = []
    stop = asyncio.Event()
    try:
        servers.append(_uvicorn(http_app(server, settings, service)))
        tasks.append(asyncio.create_task(servers[-1].serve(sockets=[mcp_socket])))
        url = mcp_url(settings, mcp_socket.getsockname()[1])
        user = "per bearer token" if needs_token else f'as user "{settings.mcp.stdio_user}"'
        _say(f"MCP server (streamable HTTP) listening on {url} ({user})")
        if settings.admin.enabled:
            _say(
                f"dashboard on {url.removesuffix(settings.mcp.path)}{ADMIN_PATH}"
                " (sign in with a token from: imagegate admin token)"
            )
        if everything:
            tasks.extend(_start_callbacks(settings, service, servers))
            _start_bot(settings, service, tasks)
        for line in connect_hint(settings, url, needs_token):
            _say(line)
        with _stop_on_signals(stop):
            waiters = [asyncio.create_task(stop.wait()), *tasks[:1]]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            waiters[0].cancel()
    finally:
        for web in servers:
            web.should_exit = True
        for task in tasks[len(servers) :]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.jobs.aclose()
        await service.aclose()
    return 0


def _start_callbacks(
    settings: Settings, service: ImageService, servers: list[_Server]
) -> list[asyncio.Task[Any]]:
    if service.callbacks is None:
        return []
    cb = settings.callbacks
    sock = _bind(settings, cb.host, cb.port, "[callbacks]")
    servers.append(_uvicorn(service.callbacks.app))
    _say(
        f"provider callbacks received on {cb.host}:{sock.getsockname()[1]}{service.callbacks.path}"
        f" (public URL {service.callbacks.public_url})"
    )
    return [asyncio.create_task(servers[-1].serve(sockets=[sock]))]


def _start_bot(settings: Settings, service: ImageService, tasks: list[asyncio.Task[Any]]) -> None:
    token_env = settings.discord.token_env
    if not os.environ.get(token_env):
        _say(f"Discord bot not started: ${token_env} is not set")
        return
    start = _bot_entry()
    if start is None:
        _say("Discord bot not started: this install has no bot.app.start_bot")
        return
    task = asyncio.create_task(start(service, settings))
    task.add_done_callback(_bot_stopped)
    tasks.append(task)
    _say("Discord bot starting")


def _bot_entry() -> Callable[..., Any] | None:
    try:
        module = importlib.import_module("bot.app")
    except ImportError as exc:
        log.info("no bot: %s", exc)
        return None
    start = getattr(module, "start_bot", None)
    return start if inspect.iscoroutinefunction(start) else None


def _bot_stopped(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.info("Discord bot stopped", exc_info=exc)
        why = importlib.import_module("bot.app").why_stopped(exc)
        _say(f"Discord bot stopped: {why}; the MCP server keeps running")


def _uvicorn(app: Any) -> _Server:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    return _Server(config)


def _bind(settings: Settings, host: str, port: int, section: str) -> socket.socket:
    """Listen here, or fail with a ``ConfigError`` naming the setting."""
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(
        family, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )  # lets asyncio set TCP_NODELAY
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        # Listen now, so "listening on" is true the moment it is printed: connections wait in
        # the backlog until uvicorn (which starts in a task) accepts them.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"{settings.source}: {section} host/port: cannot listen on {host}:{port}"
            f" ({exc.strerror or exc})"
        ) from None
    return sock


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not available on every platform or outside the main thread: then Ctrl-C still works.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _say(message: str) -> None:
    print(f"imagegate: {message}", file=sys.stderr, flush=True)
