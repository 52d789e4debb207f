"""Who gets what from /admin: signed out, every page is 401 with the sign-in form and every
image 401; forged, expired, signed-out and orphaned sessions fail; the Host/Origin checks of
the MCP endpoint guard the dashboard too."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import Caller, ImageRequest, ImageService, dashboard_app
from tests.conftest import Firehose, make_settings

from .conftest import DAY, OPS, Clock, serving

PROMPT = "a secret lighthouse at dusk"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    clock = Clock()
    service = await ImageService.open(make_settings(tmp_path), sweeper=False, clock=clock)
    try:
        made = await service.generate(
            Caller.parse("discord:777"), ImageRequest(prompt=PROMPT, size=(64, 64))
        )
        token, _ = await service.mint_token(OPS, "admin", "cli:ops")
        async with serving(service) as base:
            async with httpx.AsyncClient(base_url=base, follow_redirects=False) as http:
                yield {
                    "service": service,
                    "clock": clock,
                    "http": http,
                    "token": token,
                    "job": made.job_id,
                    "image": made.images[0].id,
                }
    finally:
        await service.aclose()


def routes(site: dict[str, Any]) -> list[str]:
    return [
        "/admin/",
        "/admin/?days=7",
        "/admin/users/discord%3A777",
        f"/admin/jobs/{site['job']}",
        f"/admin/images/{site['image']}",
        f"/admin/thumbs/{site['image']}",
    ]


async def sign_in(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/admin/login", data={"token": token, "next": "/admin/"})


def assert_shut(response: httpx.Response, site: dict[str, Any]) -> None:
    """401, and nothing of the stored data (the sign-in form only echoes the path asked for)."""
    assert response.status_code == 401, response.text[:200]
    body = re.sub(r'name="next" value="[^"]*"', "", response.text)
    for secret in (PROMPT, "777", site["job"], site["image"], site["token"]):
        assert secret not in body


async def test_signed_out_every_route_is_401_and_shows_nothing(site):
    http = site["http"]
    for path in routes(site):
        response = await http.get(path)
        assert_shut(response, site)
        assert response.headers["cache-control"] == "no-store"
        if not path.startswith(("/admin/images", "/admin/thumbs")):
            assert 'name="token"' in response.text  # the sign-in form
    css = await http.get("/admin/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


async def test_sign_in_sets_a_strict_http_only_expiring_cookie(site):
    http = site["http"]
    wrong = await sign_in(http, site["token"][:-2] + "xx")
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    response = await sign_in(http, site["token"])
    assert response.status_code == 303 and response.headers["location"] == "/admin/"
    cookie = response.headers["set-cookie"]
    for part in ("imagegate_admin=", "HttpOnly", "SameSite=strict", "Max-Age=43200",
                 "Path=/admin"):  # fmt: skip
        assert part.lower() in cookie.lower(), cookie
    assert site["token"] not in cookie
    for path in routes(site):
        page = await http.get(path)
        assert page.status_code == 200, path
        assert site["token"] not in page.text and http.cookies["imagegate_admin"] not in page.text
    assert "Content-Security-Policy" in page.headers


async def test_forged_expired_and_ended_sessions_fail(site):
    http, service = site["http"], site["service"]
    forged = ["ig_session_AAAAAAAA_" + "x" * 43, site["token"], "garbage", "ig_session_"]
    for value in forged:
        http.cookies.set("imagegate_admin", value, path="/admin")
        assert_shut(await http.get("/admin/"), site)
    http.cookies.clear()
    await sign_in(http, site["token"])
    assert (await http.get("/admin/")).status_code == 200
    site["clock"].offset = 13 * 3600  # past [admin] session_ttl_s (12 h)
    assert_shut(await http.get("/admin/"), site)
    site["clock"].offset = 0
    assert (await http.get("/admin/")).status_code == 200
    session = http.cookies["imagegate_admin"]
    out = await http.post("/admin/logout")
    assert out.status_code == 303
    http.cookies.set("imagegate_admin", session, path="/admin")
    assert_shut(await http.get("/admin/"), site)
    # Revoking the admin token ends the sessions opened with it.
    http.cookies.clear()
    await sign_in(http, site["token"])
    assert (await http.get("/admin/")).status_code == 200
    (info,) = await service.list_tokens(OPS, "admin")
    await service.revoke_token(OPS, "admin", info.prefix)
    assert_shut(await http.get("/admin/"), site)
    assert (await sign_in(http, site["token"])).status_code == 401
    site["clock"].offset = DAY


async def test_host_and_origin_checks_guard_the_dashboard(site):
    http = site["http"]
    rebound = await http.get("/admin/", headers={"Host": "evil.example"})
    assert rebound.status_code == 421
    cross = await http.post(
        "/admin/login", data={"token": site["token"]}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403 and "set-cookie" not in cross.headers
    bad_range = await sign_in(http, site["token"])
    assert bad_range.status_code == 303
    assert (await http.get("/admin/?days=9999")).status_code == 400
    assert (await http.get("/admin/jobs/nope")).status_code == 404
    assert (await http.get("/admin/users/not-a-user")).status_code == 400


async def test_a_flooded_sign_in_form_is_refused_while_it_streams(site):
    body = Firehose(16 * 1024, 4096)  # 64 MB, were it read whole
    transport = httpx.ASGITransport(app=dashboard_app(site["service"]))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        response = await http.post("/login", content=body)
    assert response.status_code == 413 and body.sent <= 2
