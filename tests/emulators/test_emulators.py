"""Tests of the provider emulators themselves (not of imagegate)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.emulators import KINDS, Fault, create_emulator, render_image, running
from tests.emulators.base import ConnectionDropped

SMALL = (64, 64)
DM_MODEL = "668f1a2bdb4c27d16052c82b"
AUTH = {
    "deepmode": {"authorization": "Bearer test-deepmode-key"},
    "deepimage": {"x-api-key": "test-deepimage-key"},
    "hive": {"authorization": "Token test-hive-key"},
    "hive_v3": {"authorization": "Bearer test-hive-v3-key"},
    "nebulablock": {"authorization": "Bearer test-nebulablock-key"},
    "openai": {"authorization": "Bearer test-openai-key"},
}


@asynccontextmanager
async def client_for(emu, kind: str | None = None):
    """An httpx client talking to the emulator in-process, with the right credentials."""
    transport = httpx.ASGITransport(app=emu.app)
    headers = AUTH[kind or emu.kind]
    async with httpx.AsyncClient(transport=transport, base_url="http://emu", headers=headers) as c:
        yield c


def png(size=(32, 32), mode="RGBA", colour=(200, 10, 10, 255)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour[: len(mode)] if mode != "L" else 128).save(buf, "PNG")
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def fetch_image(client: httpx.AsyncClient, url: str) -> Image.Image:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    return decode(response.content)


class Receiver:
    """A tiny callback receiver served with `running`."""

    def __init__(self):
        self.url = ""  # set once served
        self.bodies: list = []
        self._arrived = threading.Condition()  # the receiver runs on `running`'s thread
        self.app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])

    async def _hook(self, request: Request):
        body = await request.json()
        with self._arrived:
            self.bodies.append(body)
            self._arrived.notify_all()
        return JSONResponse({"ok": True})

    async def wait(self, count: int) -> list:
        """The bodies once `count` have arrived (fails after 30 s rather than hanging)."""

        def arrived() -> bool:
            with self._arrived:
                return self._arrived.wait_for(lambda: len(self.bodies) >= count, timeout=30)

        assert await asyncio.to_thread(arrived), f"{len(self.bodies)} of {count} callbacks came"
        return self.bodies


@pytest.fixture
async def receiver():
    rec = Receiver()
    async with running(rec) as url:
        rec.url = f"{url}/hook"
        yield rec


# ----- factory and serving ---------------------------------------------------------------------


def test_factory_kinds_keys_and_base_paths():
    paths = {"deepmode": "", "deepimage": "", "hive": "", "nebulablock": "/api/v1", "openai": "/v1"}
    paths |= {"sdwebui": "", "comfyui": "", "horde": ""}
    basic = {"sdwebui", "comfyui"}  # self-hosted: basic auth "user:password"
    for kind in KINDS:
        emu = create_emulator(kind)
        key = f"imagegate:test-{kind}-key" if kind in basic else f"test-{kind}-key"
        assert (emu.kind, emu.api_key, emu.base_path) == (kind, key, paths[kind])
    assert create_emulator("hive").v3_api_key == "test-hive-v3-key"
    assert create_emulator("openai", api_key="k").api_key == "k"
    with pytest.raises(ValueError):
        create_emulator("midjourney")


def test_running_sync_serves_and_records():
    emu = create_emulator("deepmode")
    with running(emu) as url:
        response = httpx.get(f"{url}/api/check-balance", headers=AUTH["deepmode"])
    assert response.json() == {"remaining_balance": 1000}
    recorded = emu.requests[0]
    assert (recorded.method, recorded.path) == ("GET", "/api/check-balance")
    assert recorded.headers["authorization"] == "Bearer test-deepmode-key"


async def test_running_async_gives_absolute_image_urls():
    emu = create_emulator("openai", image_size=SMALL)
    async with running(emu) as url, httpx.AsyncClient(headers=AUTH["openai"]) as client:
        response = await client.post(f"{url}/v1/images/generations", json={"prompt": "a cat"})
        image_url = response.json()["data"][0]["url"]
        assert image_url.startswith(f"{url}/_files/")
        assert (await fetch_image(client, image_url)).format == "PNG"


def test_render_image_is_deterministic():
    assert render_image("x", (8, 8)) == render_image("x", (8, 8))
    assert render_image("x", (8, 8)) != render_image("y", (8, 8))
    assert decode(render_image("x", (10, 6), "jpeg")).size == (10, 6)


def test_standalone_main_prints_base_url_and_key(tmp_path: Path):
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulators", "nebulablock", "--port", "0", "--key", "ak_x"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    with proc.stdout:
        try:
            lines = [proc.stdout.readline() for _ in range(3)]
        finally:
            proc.kill()
            proc.wait()
    assert "base_url: http://127.0.0.1:0/api/v1" in lines[1]
    assert "ak_x" in lines[2]


# ----- authentication --------------------------------------------------------------------------

AUTH_CASES = [
    ("deepmode", "/api/check-balance", {}, 401, {"error": "unauthorized"}),
    ("deepmode", "/api/check-balance", {"authorization": "Bearer nope"}, 401, None),
    ("deepimage", "/rest_api/me", {}, 403, {"message": "No x-api-key header is provided"}),
    ("deepimage", "/rest_api/me", {"x-api-key": "nope"}, 404, None),
    ("hive", "/api/v2/task/sync", {"authorization": "Bearer test-hive-key"}, 401, None),
    ("hive", "/api/v2/task/sync", {"authorization": "Token nope"}, 403, None),
    ("hive", "/api/v3/stabilityai/sdxl", {"authorization": "Bearer test-hive-key"}, 403, None),
    ("hive", "/api/v3/stabilityai/sdxl", {"authorization": "Token test-hive-v3-key"}, 401, None),
    ("nebulablock", "/api/v1/users/credits", {}, 401, {"status": "failed"}),
    ("openai", "/v1/images/generations", {"authorization": "Bearer nope"}, 401, None),
]


@pytest.mark.parametrize(("kind", "path", "headers", "status", "subset"), AUTH_CASES)
async def test_auth_is_rejected(kind, path, headers, status, subset):
    emu = create_emulator(kind)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emu.app)) as client:
        method = "GET" if path.endswith(("balance", "/me", "credits")) else "POST"
        response = await client.request(method, f"http://emu{path}", headers=headers, json={})
    assert response.status_code == status
    body = response.json()
    assert subset is None or subset.items() <= body.items()
    if kind == "openai":
        assert body["error"]["code"] == "invalid_api_key"
    assert "nope" not in response.text  # never echo a credential


# ----- Deepmode --------------------------------------------------------------------------------


async def test_deepmode_generate_get_and_upscale():
    emu = create_emulator("deepmode", image_size=SMALL)
    async with client_for(emu) as client:
        body = {"model_id": DM_MODEL, "prompt": "portrait", "num_images": 2}
        images = (await client.post("/api/images/generate", json=body)).json()
        assert len(images) == 2 and images[0]["ratio"] == "portrait"
        assert (await fetch_image(client, images[0]["image_url"])).size == (48, 64)
        again = (await client.get(f"/api/images/{images[0]['id']}")).json()
        assert again["image_url"] != images[0]["image_url"] and again["id"] == images[0]["id"]
        up = (await client.post("/api/images/upscale", json={"image_id": again["id"]})).json()
        assert up["upscaled"] is True
        assert (await fetch_image(client, up["image_url"])).size == (192, 256)
        missing = await client.post("/api/images/upscale", json={"image_id": "0" * 24})
        assert missing.status_code == 404
        balance = (await client.get("/api/check-balance")).json()["remaining_balance"]
    assert balance == 1000 - 2 - 3


async def test_deepmode_remix_face_id_and_models():
    emu = create_emulator("deepmode", image_size=SMALL)
    files = {"artwork_image": png((40, 30)), "mask_image": png((40, 30))}
    async with client_for(emu) as client:
        remix = await client.post(
            "/api/remix/generate", data={"model_id": DM_MODEL, "prompt": "x"}, files=files
        )
        assert remix.json()["status"] == "completed"
        assert (await fetch_image(client, remix.json()["image_url"])).size == (40, 30)
        face = await client.post(
            "/api/face-id-remix", data={"mode": "async"}, files={**files, "identity_image": png()}
        )
        assert face.json()["status"] == "processing"
        assert (await client.get(f"/api/images/{face.json()['id']}")).status_code == 200
        no_mask = await client.post(
            "/api/face-id-remix", files={"artwork_image": png(), "identity_image": png()}
        )
        assert no_mask.status_code == 400
        model = await client.post(
            "/api/models",
            data={"gender": "woman", "model_type": "amateur"},
            files=[("images", png()), ("images", png())],
        )
        new_model = model.json()["id"]
        body = {"model_id": new_model, "prompt": "x", "ratio": "square"}
        generated = await client.post("/api/images/generate", json=body)
    assert generated.status_code == 200 and new_model in emu.models
    recorded = next(r for r in emu.requests if r.path == "/api/models")
    assert recorded.files and recorded.files["images"] and len(recorded.uploads) == 2


DEEPMODE_BAD = [
    {"model_id": DM_MODEL, "prompt": "x", "num_images": 9},
    {"model_id": DM_MODEL, "prompt": "x", "num_images": 0},
    {"model_id": DM_MODEL, "prompt": "x", "ratio": "landscape"},
    {"model_id": DM_MODEL},
    {"prompt": "x"},
]


@pytest.mark.parametrize("body", DEEPMODE_BAD)
async def test_deepmode_rejects_bad_generate(body):
    emu = create_emulator("deepmode")
    async with client_for(emu) as client:
        response = await client.post("/api/images/generate", json=body)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


async def test_deepmode_unknown_model_and_credits():
    emu = create_emulator("deepmode", credits=1, image_size=SMALL)
    async with client_for(emu) as client:
        unknown = await client.post("/api/images/generate", json={"model_id": "x", "prompt": "p"})
        body = {"model_id": DM_MODEL, "prompt": "p", "num_images": 2}
        poor = await client.post("/api/images/generate", json=body)
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    assert poor.status_code == 402 and poor.json()["error"] == "insufficient_credits"


# ----- Deep-Image ------------------------------------------------------------------------------


async def test_deepimage_text_to_image_process_result():
    emu = create_emulator("deepimage", job_duration_s=0.01)
    body = {"width": 80, "height": 40, "background": {"generate": {"description": "sea"}}}
    async with client_for(emu) as client:
        result = (await client.post("/rest_api/process_result", json=body)).json()
        assert result["status"] == "complete"
        image = await fetch_image(client, result["result_url"])
        me = (await client.get("/rest_api/me")).json()
    assert (image.size, image.format) == ((80, 40), "JPEG")
    assert me["credits"] == 99


async def test_deepimage_multipart_and_base64_inputs_with_polling():
    emu = create_emulator("deepimage", job_duration_s=3600)
    params = {"width": "200%", "output_format": "png"}
    async with client_for(emu) as client:
        for part in ("image", "fileName"):
            files = {part: ("in.png", png((30, 20)), "image/png")}
            data = {"parameters": json.dumps(params)}
            job = (await client.post("/rest_api/process", data=data, files=files)).json()
            assert job["status"] == "received" and "result_url" not in job
            polled = (await client.get(f"/rest_api/result/{job['job']}")).json()
            assert polled["status"] == "in_progress"
            emu.jobs[job["job"]].duration = 0  # the job finishes now, however slow the machine
            done = (await client.get(f"/rest_api/result/{job['job']}")).json()
            assert (await fetch_image(client, done["result_url"])).size == (60, 40)
        emu.job_duration_s = 0
        b64 = "base64," + base64.b64encode(png((10, 10))).decode()
        sync = (await client.post("/rest_api/process_result", json={"url": b64})).json()
        assert (await fetch_image(client, sync["result_url"])).size == (10, 10)
        bad = await client.post("/rest_api/process_result", json={"url": "base64,!!"})
        assert bad.json() == {"message": "Unidentified image", "code": "BAD_REQUEST"}
        empty = await client.post("/rest_api/process", json={"width": 10})
        assert empty.json()["message"] == "File or image url is required"


async def test_deepimage_credits_concurrency_and_unknown_job():
    emu = create_emulator("deepimage", credits=3, max_concurrent_jobs=2, job_duration_s=60)
    body = {"background": {"generate": {"description": "x", "model_type": "brand-new"}}}
    async with client_for(emu) as client:
        statuses = [(await client.post("/rest_api/process", json=body)).status_code for _ in "abc"]
        busy = await client.post("/rest_api/process", json=body)
        emu.job_duration_s = 0
        for job in emu.jobs.values():
            job.duration = 0
        await client.post("/rest_api/process", json=body)
        broke = await client.post("/rest_api/process", json=body)
        missing = await client.get("/rest_api/result/nope")
    assert statuses == [200, 200, 429]
    assert (
        busy.json()["code"] == "TOO_MANY_REQUESTS" and "rate limit is 2" in busy.json()["message"]
    )
    assert broke.status_code == 400 and broke.json()["code"] == "NOT_ENOUGH_CREDITS"
    assert missing.status_code == 404 and missing.json() == {"message": "Job not found"}


async def test_deepimage_deleted_result():
    emu = create_emulator("deepimage", job_duration_s=0)
    body = {"background": {"generate": {"description": "x"}}}
    async with client_for(emu) as client:
        job = (await client.post("/rest_api/process", json=body)).json()["job"]
        await client.delete(f"/rest_api/result/{job}")
        gone = await client.get(f"/rest_api/result/{job}")
    assert gone.status_code == 404 and gone.json() == {
        "message": "Image deleted",
        "status": "complete",
    }


# ----- Hive ------------------------------------------------------------------------------------


async def test_hive_v2_sync_task_object():
    emu = create_emulator("hive", image_size=SMALL)
    body = {"text_data": "house", "options": {"neg_text": "pool", "num_images": 3}}
    async with client_for(emu) as client:
        task = (await client.post("/api/v2/task/sync", json=body)).json()
        status = task["status"][0]
        assert status["status"] == {"code": "0", "message": "SUCCESS"}
        images = status["response"]["output"][0]["images"]
        assert [i["index"] for i in images] == [0, 1, 2] and images[0]["width"] == 64
        assert (await fetch_image(client, images[2]["url"])).format == "PNG"


@pytest.mark.parametrize(
    "model",
    [
        "black-forest-labs/flux-schnell",
        "hive/flux-schnell-enhanced",
        "stabilityai/sdxl",
        "hive/sdxl-enhanced",
        "hive/flux-schnell-emoji",
    ],
)
async def test_hive_v3_models(model):
    emu = create_emulator("hive", image_size=SMALL)
    body = {"input": {"prompt": "fox", "image_size": {"width": 256, "height": 384}, "seed": 7}}
    async with client_for(emu, "hive_v3") as client:
        answer = (await client.post(f"/api/v3/{model}", json=body)).json()
        assert answer["model"] == model and answer["input"]["seed"] == 7
        image = await fetch_image(client, answer["output"][0]["url"])
    assert image.size == (256, 384)
    assert image.format == ("PNG" if model.endswith("emoji") else "JPEG")


HIVE_BAD = [
    ("/api/v2/task/sync", {"text_data": "x", "options": {"num_images": 7}}, 400),
    ("/api/v2/task/sync", {"options": {}}, 400),
    ("/api/v2/task/async", {"text_data": "x"}, 400),  # async needs callback_url
    ("/api/v3/stabilityai/sdxl", {"prompt": "x"}, 400),  # not wrapped in "input"
    ("/api/v3/stabilityai/sdxl", {"input": {"prompt": "x", "num_images": 5}}, 400),
    ("/api/v3/stabilityai/sdxl-turbo", {"input": {"prompt": "x"}}, 404),
]


@pytest.mark.parametrize(("path", "body", "status"), HIVE_BAD)
async def test_hive_rejects_bad_requests(path, body, status):
    emu = create_emulator("hive", image_size=SMALL)
    headers = AUTH["hive_v3" if "/v3/" in path else "hive"]
    async with client_for(emu) as client:
        response = await client.post(path, json=body, headers=headers)
    assert response.status_code == status and response.json()["status_code"] == status


# ----- NebulaBlock -----------------------------------------------------------------------------


async def test_nebulablock_generate_credits_and_models():
    emu = create_emulator("nebulablock")
    async with client_for(emu) as client:
        body = {"model_name": "stabilityai/stable-diffusion-xl-base-1.0", "prompt": "cat"}
        answer = (await client.post("/api/v1/images/generation", json=body)).json()
        default = await client.post("/api/v1/images/generation", json={"prompt": "cat"})
        credits = (await client.get("/api/v1/users/credits")).json()
        models = (await client.get("/api/v1/serverless/models")).json()
    assert answer["status"] == "success" and answer["object"] == "list"
    assert answer["data"][0]["index"] == 0 and answer["data"][0]["timings"]["inference"] >= 0
    assert decode(base64.b64decode(answer["data"][0]["b64_json"])).size == (256, 256)
    assert default.json()["model"] == "black-forest-labs/FLUX.1-schnell"
    assert credits["data"]["available_balance"] == "99.98800"
    assert {m["model_name"] for m in models["data"]["models"]} >= {body["model_name"]}


async def test_nebulablock_fill_dev_needs_inputs_and_rounds_to_16():
    emu = create_emulator("nebulablock")
    b64 = base64.b64encode(png((70, 70))).decode()
    fill = "black-forest-labs/FLUX.1-Fill-dev"
    async with client_for(emu) as client:
        missing = await client.post(
            "/api/v1/images/generation", json={"model": fill, "prompt": "x"}
        )
        body = {"model": fill, "prompt": "x", "image": b64, "mask": b64, "width": 100}
        answer = (await client.post("/api/v1/images/generation", json=body)).json()
    assert missing.status_code == 400 and missing.json()["status"] == "failed"
    assert decode(base64.b64decode(answer["data"][0]["b64_json"])).size == (96, 64)


NEBULA_BAD = [
    {"model": "acme/unknown", "prompt": "x"},
    {"prompt": ""},
    {"prompt": "x", "width": 8},
    {"prompt": "x", "num_steps": 0},
    {"prompt": "x", "guidance_scale": "high"},
]


@pytest.mark.parametrize("body", NEBULA_BAD)
async def test_nebulablock_rejects_bad_requests(body):
    emu = create_emulator("nebulablock", image_size=SMALL)
    async with client_for(emu) as client:
        response = await client.post("/api/v1/images/generation", json=body)
    assert response.status_code == 400 and response.json()["status"] == "failed"


async def test_nebulablock_rate_limit_and_balance():
    emu = create_emulator("nebulablock", image_size=SMALL, rpm=1)
    async with client_for(emu) as client:
        first = await client.post("/api/v1/images/generation", json={"prompt": "x"})
        second = await client.post("/api/v1/images/generation", json={"prompt": "x"})
        emu.rpm, emu.credits = None, 0.005
        broke = await client.post("/api/v1/images/generation", json={"prompt": "x"})
    assert first.status_code == 200
    assert second.status_code == 429 and int(second.headers["retry-after"]) > 0
    assert broke.status_code == 402


# ----- OpenAI ----------------------------------------------------------------------------------


async def test_openai_generations_url_b64_and_gpt_image():
    emu = create_emulator("openai")
    async with client_for(emu) as client:
        body = {"prompt": "cat", "n": 2, "size": "256x256"}
        urls = (await client.post("/v1/images/generations", json=body)).json()
        assert (await fetch_image(client, urls["data"][1]["url"])).size == (256, 256)
        body = {"prompt": "cat", "model": "dall-e-3", "response_format": "b64_json"}
        d3 = (await client.post("/v1/images/generations", json=body)).json()["data"][0]
        body = {"prompt": "cat", "model": "gpt-image-1", "response_format": "url", "size": "auto"}
        gpt = (await client.post("/v1/images/generations", json=body)).json()
    assert decode(base64.b64decode(d3["b64_json"])).size == (1024, 1024)
    assert d3["revised_prompt"]
    assert "b64_json" in gpt["data"][0] and gpt["usage"]["total_tokens"] > 0


OPENAI_BAD = [
    ({"prompt": "x", "n": 11}, "integer_above_max_value"),
    ({"prompt": "x", "n": 0}, "integer_below_min_value"),
    ({"prompt": "x", "model": "dall-e-3", "n": 2}, "invalid_value"),
    ({"prompt": "x", "model": "dall-e-3", "size": "512x512"}, "invalid_value"),
    ({"prompt": "x", "size": "1792x1024"}, "invalid_value"),
    ({"prompt": "x", "response_format": "png"}, "invalid_value"),
    (
        {
            "prompt": "x",
            "model": "gpt-image-1",
            "background": "transparent",
            "output_format": "jpeg",
        },
        "invalid_value",
    ),  # fmt: skip
    ({"model": "dall-e-2"}, "missing_required_parameter"),
]


@pytest.mark.parametrize(("body", "code"), OPENAI_BAD)
async def test_openai_rejects_bad_generations(body, code):
    emu = create_emulator("openai", image_size=SMALL)
    async with client_for(emu) as client:
        response = await client.post("/v1/images/generations", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_openai_edits_with_mask_and_size_mismatch():
    emu = create_emulator("openai")
    image, mask = png((64, 64)), png((64, 64), colour=(0, 0, 0, 0))
    async with client_for(emu) as client:
        data = {"prompt": "hat", "size": "256x256", "response_format": "b64_json"}
        files = {"image": ("i.png", image, "image/png"), "mask": ("m.png", mask, "image/png")}
        ok = await client.post("/v1/images/edits", data=data, files=files)
        files["mask"] = ("m.png", png((32, 32)), "image/png")
        mismatch = await client.post("/v1/images/edits", data=data, files=files)
        rgb = {"image": ("i.png", png((64, 64), "RGB"), "image/png")}
        no_alpha = await client.post("/v1/images/edits", data=data, files=rgb)
        gpt = await client.post(
            "/v1/images/edits",
            data={"prompt": "hat", "model": "gpt-image-1"},
            files=[("image[]", png((64, 64), "RGB")), ("image[]", png())],
        )
    assert decode(base64.b64decode(ok.json()["data"][0]["b64_json"])).size == (256, 256)
    assert mismatch.status_code == 400 and "mask size" in mismatch.json()["error"]["message"]
    assert no_alpha.status_code == 400 and gpt.status_code == 200
    first = emu.requests[0]
    assert first.form and first.form["prompt"] == "hat"
    assert first.files and first.files["mask"] == mask


# ----- faults ----------------------------------------------------------------------------------


async def test_fault_status_retry_after_and_times():
    emu = create_emulator("openai", image_size=SMALL)
    emu.inject(Fault(status=429, retry_after=2), times=2)
    async with client_for(emu) as client:
        codes = [(await client.post("/v1/images/generations", json={"prompt": "x"})) for _ in "abc"]
    assert [r.status_code for r in codes] == [429, 429, 200]
    assert codes[0].headers["retry-after"] == "2"
    assert codes[0].json()["error"]["code"] == "rate_limit_exceeded"


async def test_fault_status_shapes_per_provider():
    emu = create_emulator("deepimage")
    emu.inject(Fault(status=500))
    emu.inject(Fault(retry_after=0.5))
    async with client_for(emu) as client:
        failed = await client.get("/rest_api/me")
        limited = await client.get("/rest_api/me")
    assert failed.status_code == 500 and failed.json()["status"] == "failed"
    assert limited.status_code == 429 and limited.headers["retry-after"] == "0.5"
    assert limited.json()["code"] == "TOO_MANY_REQUESTS"


async def test_fault_body_override_and_path_filter():
    emu = create_emulator("deepmode", image_size=SMALL)
    emu.inject(Fault(body={"surprise": True}, path="/api/images/generate"))
    emu.inject(Fault(status=503, body={"down": True}, path="/check-balance"))
    async with client_for(emu) as client:
        balance = await client.get("/api/check-balance")
        body = {"model_id": DM_MODEL, "prompt": "x"}
        generated = await client.post("/api/images/generate", json=body)
    assert balance.status_code == 503 and balance.json() == {"down": True}
    assert generated.status_code == 200 and generated.json() == {"surprise": True}
    assert emu.credits == 999  # the handler still ran


async def test_fault_delay_and_malformed_json():
    emu = create_emulator("nebulablock", image_size=SMALL)
    emu.inject(Fault(delay_s=0.2))
    emu.inject(Fault(malformed_json=True))
    async with client_for(emu) as client:
        started = time.monotonic()
        await client.get("/api/v1/users/credits")
        elapsed = time.monotonic() - started
        broken = await client.post("/api/v1/images/generation", json={"prompt": "x"})
    assert elapsed >= 0.2
    assert broken.status_code == 200
    with pytest.raises(ValueError):
        broken.json()


async def test_fault_truncated_b64_and_truncated_file():
    emu = create_emulator("nebulablock", image_size=SMALL)
    emu.inject(Fault(truncated_b64=True))
    async with client_for(emu) as client:
        answer = (await client.post("/api/v1/images/generation", json={"prompt": "x"})).json()
    with pytest.raises(Exception):  # noqa: B017 - bad padding or an undecodable image
        decode(base64.b64decode(answer["data"][0]["b64_json"]))

    hive = create_emulator("hive", image_size=SMALL)
    hive.inject(Fault(truncated_b64=True))
    async with client_for(hive, "hive_v3") as client:
        answer = await client.post("/api/v3/stabilityai/sdxl", json={"input": {"prompt": "x"}})
        data = (await client.get(answer.json()["output"][0]["url"])).content
    with pytest.raises(Exception):  # noqa: B017
        decode(data)


async def test_fault_expired_url_and_fresh_url_from_get_image():
    emu = create_emulator("deepmode", image_size=SMALL)
    emu.inject(Fault(expired_url=True))
    async with client_for(emu) as client:
        body = {"model_id": DM_MODEL, "prompt": "x"}
        image = (await client.post("/api/images/generate", json=body)).json()[0]
        assert (await client.get(image["image_url"])).status_code == 403
        fresh = (await client.get(f"/api/images/{image['id']}")).json()["image_url"]
        assert (await client.get(fresh)).status_code == 200
        emu.inject(Fault(expired_url=True, path="/_files/"))
        assert (await client.get(fresh)).status_code == 403


async def test_url_ttl_expiry():
    emu = create_emulator("openai", image_size=SMALL, url_ttl_s=0.05)
    async with client_for(emu) as client:
        url = (await client.post("/v1/images/generations", json={"prompt": "x"})).json()
        await asyncio.sleep(0.06)
        assert (await client.get(url["data"][0]["url"])).status_code == 403


@pytest.mark.parametrize(
    ("kind", "path", "body", "check"),
    [
        ("openai", "/v1/images/generations", {"prompt": "x"},
         lambda r: r.json()["error"]["code"] == "content_policy_violation"),
        ("hive", "/api/v2/task/sync", {"text_data": "x"},
         lambda r: "moderation" in r.json()["message"]),
        ("deepimage", "/rest_api/process", {},
         lambda r: r.json()["code"] == "NSFW_DETECTED"),
        ("deepmode", "/api/images/generate", {},
         lambda r: r.json()["error"] == "content_moderation"),
        ("nebulablock", "/api/v1/images/generation", {"prompt": "x"},
         lambda r: "moderation" in r.json()["message"]),
    ],
)  # fmt: skip
async def test_fault_moderation(kind, path, body, check):
    emu = create_emulator(kind, image_size=SMALL)
    emu.inject(Fault(moderation=True))
    async with client_for(emu) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 400 and check(response)


async def test_hive_v3_moderation_status_is_configurable():
    emu = create_emulator("hive", moderation_status=451)
    emu.inject(Fault(moderation=True))
    async with client_for(emu, "hive_v3") as client:
        response = await client.post("/api/v3/stabilityai/sdxl", json={"input": {"prompt": "x"}})
    assert response.status_code == 451 and response.json()["code"] == "content_moderation"


async def test_fault_slow_job_never_completes():
    emu = create_emulator("deepimage", sync_wait_s=0.1, job_duration_s=0)
    emu.inject(Fault(slow_job=True))
    body = {"background": {"generate": {"description": "x"}}}
    async with client_for(emu) as client:
        answer = (await client.post("/rest_api/process_result", json=body)).json()
        await asyncio.sleep(0.05)
        polled = (await client.get(f"/rest_api/result/{answer['job']}")).json()
    assert answer["status"] == "in_progress" and "result_url" not in answer
    assert polled["status"] == "in_progress"


async def test_fault_drop_connection_over_http_and_asgi():
    emu = create_emulator("nebulablock", image_size=SMALL)
    emu.inject(Fault(drop_connection=True))
    async with running(emu) as url, httpx.AsyncClient(headers=AUTH["nebulablock"]) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{url}/api/v1/images/generation", json={"prompt": "x"})
        assert (await client.get(f"{url}/api/v1/users/credits")).status_code == 200
    emu.inject(Fault(drop_connection=True))
    async with client_for(emu) as client:
        with pytest.raises(httpx.TransportError):
            await client.get("/api/v1/users/credits")
    assert issubclass(ConnectionDropped, httpx.RemoteProtocolError)


def test_clear_forgets_requests_and_faults():
    emu = create_emulator("openai")
    emu.inject(Fault(status=500))
    with running(emu) as url:
        httpx.post(f"{url}/v1/images/generations", json={})
        emu.clear()
        response = httpx.post(f"{url}/v1/images/generations", json={})
    assert response.status_code == 401 and len(emu.requests) == 1


# ----- callbacks -------------------------------------------------------------------------------


async def test_deepmode_callback_delivered(receiver):
    emu = create_emulator("deepmode", image_size=SMALL)
    async with client_for(emu) as client:
        body = {"model_id": DM_MODEL, "prompt": "x", "num_images": 2, "callback": receiver.url}
        ack = (await client.post("/api/images/generate", json=body)).json()
        bodies = await receiver.wait(1)
        await emu.drain()
    assert ack == {"message": "Generating images..."}
    assert len(bodies[0]) == 2 and bodies[0][0]["model_id"] == DM_MODEL
    assert emu.callbacks_sent == [(receiver.url, bodies[0])]


async def test_hive_async_callback_duplicate(receiver):
    emu = create_emulator("hive", image_size=SMALL)
    emu.inject(Fault(duplicate_callback=True))
    async with client_for(emu) as client:
        body = {"text_data": "x", "callback_url": receiver.url}
        ack = (await client.post("/api/v2/task/async", json=body)).json()
        bodies = await receiver.wait(2)
    assert len(bodies) == 2 and bodies[0]["id"] == ack["task_id"] == bodies[1]["id"]
    assert bodies[0]["status"][0]["response"]["output"][0]["images"]


async def test_deepimage_webhook_and_missing_callback(receiver):
    emu = create_emulator("deepimage", job_duration_s=0.02, callback_delay_s=0.01)
    body = {
        "webhooks": {"complete": receiver.url},
        "background": {"generate": {"description": "x"}},
    }
    async with client_for(emu) as client:
        emu.inject(Fault(missing_callback=True))
        silent = (await client.post("/rest_api/process", json=body)).json()
        job = (await client.post("/rest_api/process", json=body)).json()
        bodies = await receiver.wait(1)
        await emu.drain()  # everything the emulator meant to post has been posted
    assert [b["job"] for b in bodies] == [job["job"]] != [silent["job"]]
    assert bodies[0]["data"] == body and bodies[0]["results"] is None
    assert bodies[0]["result_url"].endswith(".jpeg")
