"""The operators' dashboard: a read-only web page at ``/admin`` on the HTTP server.

Sign-in takes an admin token (``imagegate admin token``) and answers with a session cookie
(HttpOnly, SameSite=Strict, expiring; only its hash is stored, as a token of kind
``session``). Without a valid session every page answers 401 with the sign-in form and every
image 401: nothing but the stylesheet is served to a stranger. Every figure comes from
``ImageService`` (core's reports over the ledger); this module only renders.

The host application (``mcp_server.serve``) mounts it behind the same Host/Origin checks as
the MCP endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..callbacks import read_capped
from ..errors import ImageGateError, InvalidRequestError, NotFoundError
from ..reports import Usage, runway_text
from ..service import ImageService
from ..types import Caller
from .charts import Series, stacked_bars

COOKIE = "imagegate_admin"
RANGES = (7, 30, 90)
DEFAULT_DAYS = 30
MAX_FORM_BYTES = 4096
_SAFE_NEXT = re.compile(r"^/[A-Za-z0-9/_.:%?=&-]*$")
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer makes a form's Origin "null"
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
}

Page = Callable[[Request, Caller], Awaitable[Response]]


def dashboard_app(service: ImageService) -> Starlette:
    """The ASGI app; mount it at ``/admin``."""
    return _Dashboard(service).app()


class _Dashboard:
    def __init__(self, service: ImageService) -> None:
        self.service = service
        self.env = Environment(
            loader=PackageLoader("core.dashboard", "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.globals["runway_text"] = runway_text
        self.css = files("core.dashboard").joinpath("templates/style.css").read_bytes()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self._page(self.overview)),
                Route("/login", self.login, methods=["GET", "POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Route("/style.css", self.stylesheet),
                Route("/users/{user}", self._page(self.user)),
                Route("/jobs/{job_id}", self._page(self.job)),
                Route("/images/{image_id}", self._image(thumbnail=False)),
                Route("/thumbs/{image_id}", self._image(thumbnail=True)),
            ]
        )

    # --- sign-in ---------------------------------------------------------------------------

    async def _operator(self, request: Request) -> Caller | None:
        token = request.cookies.get(COOKIE, "")
        return await self.service.session(token) if token else None

    def _page(self, page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            operator = await self._operator(request)
            if operator is None:
                return self._login_form(request, status=401)
            try:
                return await page(request, operator)
            except (NotFoundError, InvalidRequestError) as exc:
                status = 404 if isinstance(exc, NotFoundError) else 400
                return self._render(request, "error.html", {"message": exc.message}, status)

        return endpoint

    def _login_form(self, request: Request, *, status: int, failed: bool = False) -> Response:
        next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        context = {"next": next_path if _SAFE_NEXT.match(next_path) else "", "failed": failed}
        return self._render(request, "login.html", context, status)

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self._login_form(request, status=200)
        body = await read_capped(request, MAX_FORM_BYTES)
        if body is None:  # a sign-in form is a few hundred bytes; never hold a flood
            return self._render(request, "login.html", {"next": "", "failed": True}, 413)
        form = parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        opened = await self.service.open_session(token) if token else None
        if opened is None:
            return self._render(request, "login.html", {"next": "", "failed": True}, 401)
        session, _ = opened
        base = _base(request)
        wanted = (form.get("next") or [""])[0]
        target = wanted if _SAFE_NEXT.match(wanted) and wanted.startswith(base) else base + "/"
        response = RedirectResponse(target, status_code=303, headers=HEADERS)
        response.set_cookie(
            COOKIE,
            session,
            max_age=int(self.service.settings.admin.session_ttl_s),
            path=base or "/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        token = request.cookies.get(COOKIE, "")
        if token:
            await self.service.close_session(token)
        base = _base(request)
        response = RedirectResponse(base + "/login", status_code=303, headers=HEADERS)
        response.delete_cookie(COOKIE, path=base or "/", httponly=True, samesite="strict")
        return response

    async def stylesheet(self, request: Request) -> Response:
        headers = {**HEADERS, "Cache-Control": "public, max-age=3600"}
        return Response(self.css, media_type="text/css", headers=headers)

    # --- pages -----------------------------------------------------------------------------

    async def overview(self, request: Request, operator: Caller) -> Response:
        days = _days(request.query_params.get("days"))
        service = self.service
        usage = await service.usage(operator, days=days)
        context = {
            "days": days,
            "ranges": RANGES,
            "usage": usage,
            "model_totals": {m: sum(d.credits.get(m, 0) for d in usage.days) for m in usage.models},
            "credits_chart": _credits_chart(usage),
            "jobs_chart": _jobs_chart(usage),
            "in_flight": await service.jobs_in_flight(operator),
            "providers": await service.provider_runways(operator),
            "gallery": await service.recent_images(operator, limit=24),
        }
        return self._render(request, "overview.html", context)

    async def user(self, request: Request, operator: Caller) -> Response:
        user = Caller.parse(request.path_params["user"])
        context = {
            "user": user.key,
            "quota": await self.service.quota(user),
            "ledger": await self.service.history(operator, user, limit=200),
            "jobs": await self.service.user_jobs(operator, user.key, limit=100),
        }
        return self._render(request, "user.html", context)

    async def job(self, request: Request, operator: Caller) -> Response:
        job = await self.service.job(operator, request.path_params["job_id"])
        return self._render(request, "job.html", {"job": job})

    def _image(self, *, thumbnail: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            operator = await self._operator(request)
            if operator is None:
                return Response("sign in first", status_code=401, headers=HEADERS)
            image_id = request.path_params["image_id"]
            try:
                if thumbnail:
                    data, mime = await self.service.thumbnail(operator, image_id, shared=True)
                else:
                    stored, data = await self.service.image(operator, image_id, shared=True)
                    mime = stored.mime
            except ImageGateError as exc:
                return Response(exc.message, status_code=404, headers=HEADERS)
            headers = {**HEADERS, "Cache-Control": "private, max-age=86400"}
            return Response(data, media_type=mime, headers=headers)

        return endpoint

    def _render(
        self, request: Request, template: str, context: dict[str, Any], status: int = 200
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(base=_base(request), **context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)


def _base(request: Request) -> str:
    """Where the app is mounted, e.g. ``/admin``."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _days(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_DAYS
    if not text.isdecimal() or not 1 <= int(text) <= 366:
        raise InvalidRequestError("days must be a whole number from 1 to 366")
    return int(text)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _credits_chart(usage: Usage) -> Any:
    labels = [d.day.isoformat() for d in usage.days]
    series = [Series(m, [d.credits.get(m, 0) for d in usage.days]) for m in usage.models]
    return stacked_bars(labels, series, unit="credits", chart_id="credits-chart")


def _jobs_chart(usage: Usage) -> Any:
    labels = [d.day.isoformat() for d in usage.days]
    series = [
        Series("not failed", [d.jobs - d.failed for d in usage.days], css="ok"),
        Series("failed", [d.failed for d in usage.days], css="bad"),
    ]
    return stacked_bars(labels, series, unit="jobs", chart_id="jobs-chart")
