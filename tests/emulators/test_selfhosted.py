"""Tests of the self-hosted and community emulators (sdwebui, comfyui, horde) themselves."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.emulators import Fault, create_emulator, wait_until

BASIC = {"authorization": "Basic " + base64.b64encode(b"imagegate:test-sdwebui-key").decode()}
COMFY = {"authorization": "Basic " + base64.b64encode(b"imagegate:test-comfyui-key").decode()}
HORDE = {"apikey": "test-horde-key", "Client-Agent": "imagegate:0:tests"}


@asynccontextmanager
async def client(emu, headers: dict[str, str] | None = None):
    transport = httpx.ASGITransport(app=emu.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emu", headers=headers) as c:
        yield c


def png(size=(32, 24), colour=(10, 200, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode(data: bytes | str) -> Image.Image:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


# ----- Stable Diffusion WebUI ------------------------------------------------------------------


async def test_sdwebui_txt2img_batch_seeds_and_model_fallback():
    emu = create_emulator("sdwebui")
    async with client(emu, BASIC) as c:
        body = {
            "prompt": "a fox",
            "seed": 7,
            "width": 64,
            "height": 48,
            "batch_size": 2,
            "steps": 3,
            "sampler_name": "Euler a",
            "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"},
        }
        response = await c.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        reply = response.json()
        info = json.loads(reply["info"])
        assert [decode(i).size for i in reply["images"]] == [(64, 48), (64, 48)]
        assert info["all_seeds"] == [7, 8] and info["sd_model_name"] == "sd_xl_base_1.0"
        body["override_settings"] = {"sd_model_checkpoint": "no-such-model"}
        fallback = json.loads((await c.post("/sdapi/v1/txt2img", json=body)).json()["info"])
        assert fallback["sd_model_name"] == "v1-5-pruned-emaonly"
        models = (await c.get("/sdapi/v1/sd-models")).json()
        assert {m["model_name"] for m in models} == {"v1-5-pruned-emaonly", "sd_xl_base_1.0"}


@pytest.mark.parametrize(
    ("path", "body", "status", "text"),
    [
        ("/sdapi/v1/txt2img", {"steps": "many"}, 422, "steps"),
        ("/sdapi/v1/txt2img", {"width": [64]}, 422, "width"),
        ("/sdapi/v1/txt2img", {"sampler_name": "Nope"}, 400, "Sampler not found"),
        ("/sdapi/v1/img2img", {"prompt": "x"}, 404, "Init image not found"),
        ("/sdapi/v1/img2img", {"init_images": ["not base64!"]}, 500, "Invalid encoded image"),
        ("/sdapi/v1/extra-single-image", {}, 500, "Invalid encoded image"),
        ("/sdapi/v1/extra-single-image", {"image": png(), "upscaler_1": "x"}, 500, "upscaler"),
    ],
)
async def test_sdwebui_rejects_what_the_webui_rejects(path, body, status, text):
    emu = create_emulator("sdwebui")
    async with client(emu, BASIC) as c:
        response = await c.post(path, json=body)
    assert response.status_code == status and text in response.text


async def test_sdwebui_basic_auth_and_open_mode():
    emu = create_emulator("sdwebui")
    async with client(emu) as c:
        missing = await c.get("/sdapi/v1/sd-models")
        wrong = await c.get("/sdapi/v1/sd-models", auth=("imagegate", "nope"))
    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["www-authenticate"] == "Basic"
    assert missing.json()["detail"] == "Not authenticated"
    assert wrong.json()["detail"] == "Incorrect username or password" and "nope" not in wrong.text
    async with client(create_emulator("sdwebui", api_key=None)) as c:
        assert (await c.get("/sdapi/v1/sd-models")).status_code == 200


async def test_sdwebui_img2img_mask_upscale_and_progress_while_running():
    emu = create_emulator("sdwebui", step_delay_s=0.01)
    async with client(emu, BASIC) as c:
        body = {
            "prompt": "x",
            "init_images": [png()],
            "mask": png(colour=(255, 255, 255)),
            "width": 32,
            "height": 24,
            "steps": 30,
            "denoising_strength": 0.4,
        }
        job = asyncio.create_task(c.post("/sdapi/v1/img2img", json=body))
        await wait_until(lambda: emu.state.sampling_step >= 2)
        progress = (await c.get("/sdapi/v1/progress?skip_current_image=true")).json()
        assert 0 < progress["progress"] < 1 and progress["state"]["sampling_steps"] == 30
        assert (await job).status_code == 200
        idle = (await c.get("/sdapi/v1/progress")).json()
        assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
        up = await c.post(
            "/sdapi/v1/extra-single-image",
            json={"image": png(), "upscaling_resize": 2, "upscaler_1": "Lanczos"},
        )
        assert decode(up.json()["image"]).size == (64, 48)


# ----- ComfyUI ---------------------------------------------------------------------------------


def workflow(**changes: Any) -> dict[str, Any]:
    graph = {
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
        },
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 5,
                "steps": 4,
                "cfg": 7,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ig", "images": ["8", 0]}},
    }
    for key, value in changes.items():
        node, _, name = key.partition("__")
        graph[node]["inputs"][name] = value
    return graph


async def test_comfyui_prompt_history_view_and_ws_messages():
    emu = create_emulator("comfyui")
    async with client(emu, COMFY) as c:
        queued = (await c.post("/prompt", json={"prompt": workflow(), "client_id": "me"})).json()
        prompt_id = queued["prompt_id"]
        assert queued["node_errors"] == {}
        await wait_until(lambda: prompt_id in emu.history)
        entry = (await c.get(f"/history/{prompt_id}")).json()[prompt_id]
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"]
        events = [m[0] for m in entry["status"]["messages"]]
        assert events == ["execution_start", "execution_cached", "execution_success"]
        image = entry["outputs"]["9"]["images"][0]
        view = await c.get("/view", params=image)
        assert decode(view.content).size == (64, 48)
        assert (await c.get("/api/view", params=image)).content == view.content
        assert (await c.get("/view", params={"filename": "../x.png"})).status_code == 400
        assert (await c.get("/history/nope")).json() == {}


@pytest.mark.parametrize(
    ("graph", "kind"),
    [
        (workflow(**{"3__steps": "many"}), "invalid_input_type"),
        (workflow(**{"3__cfg": 1000}), "value_bigger_than_max"),
        (workflow(**{"3__sampler_name": "nope"}), "value_not_in_list"),
        (workflow(**{"3__latent_image": ["6", 0]}), "return_type_mismatch"),
        ({k: v for k, v in workflow().items() if k != "9"}, "prompt_no_outputs"),
        ({**workflow(), "10": {"class_type": "Nope", "inputs": {}}}, "invalid_prompt"),
        ({**workflow(), "10": {"inputs": {}}}, "invalid_prompt"),
    ],
)
async def test_comfyui_rejects_invalid_prompts(graph, kind):
    emu = create_emulator("comfyui")
    async with client(emu, COMFY) as c:
        response = await c.post("/prompt", json={"prompt": graph})
    assert response.status_code == 400
    body = response.json()
    assert kind in (body["error"]["type"], *_reason_types(body))


def _reason_types(body: dict[str, Any]) -> list[str]:
    return [r["type"] for node in body["node_errors"].values() for r in node["errors"]]


async def test_comfyui_missing_input_no_prompt_and_auth():
    emu = create_emulator("comfyui")
    graph = workflow()
    del graph["3"]["inputs"]["seed"]
    async with client(emu, COMFY) as c:
        missing = (await c.post("/prompt", json={"prompt": graph})).json()
        assert _reason_types(missing) == ["required_input_missing"]
        none = await c.post("/prompt", json={"client_id": "x"})
        assert none.status_code == 400 and none.json()["error"]["type"] == "no_prompt"
    async with client(emu) as c:
        assert (await c.get("/queue")).status_code == 401


async def test_comfyui_upload_load_image_and_interrupt_only_the_named_prompt():
    emu = create_emulator("comfyui")
    async with client(emu, COMFY) as c:
        files = {"image": ("in.png", base64.b64decode(png()), "image/png")}
        uploaded = (await c.post("/upload/image", files=files, data={"overwrite": "true"})).json()
        assert uploaded == {"name": "in.png", "subfolder": "", "type": "input"}
        assert (await c.post("/upload/image", data={"type": "input"})).status_code == 400
        graph = workflow(**{"3__latent_image": ["11", 0], "3__denoise": 0.5})
        graph["10"] = {"class_type": "LoadImage", "inputs": {"image": "in.png"}}
        graph["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        emu.inject(Fault(slow_job=True))
        slow = (await c.post("/prompt", json={"prompt": graph})).json()["prompt_id"]
        await wait_until(lambda: emu.running is not None)
        other = (await c.post("/prompt", json={"prompt": workflow()})).json()["prompt_id"]
        queue = (await c.get("/queue")).json()
        assert [row[1] for row in queue["queue_running"]] == [slow]
        assert [row[1] for row in queue["queue_pending"]] == [other]
        await c.post("/interrupt", json={"prompt_id": other})  # not running: nothing happens
        await c.post("/queue", json={"delete": [other]})
        assert emu.running is not None and emu.running.prompt_id == slow
        await c.post("/interrupt", json={"prompt_id": slow})
        await wait_until(lambda: slow in emu.history)
        status = emu.history[slow]["status"]
        assert (
            status["status_str"] == "error" and status["messages"][-1][0] == "execution_interrupted"
        )
        assert other not in emu.history and emu.history[slow]["outputs"] == {}


async def test_comfyui_execution_error_is_in_history():
    emu = create_emulator("comfyui")
    emu.fail_next("CUDA out of memory")
    async with client(emu, COMFY) as c:
        prompt_id = (await c.post("/prompt", json={"prompt": workflow()})).json()["prompt_id"]
        await wait_until(lambda: prompt_id in emu.history)
    event, data = emu.history[prompt_id]["status"]["messages"][-1]
    assert event == "execution_error" and data["exception_message"] == "CUDA out of memory"


# ----- AI Horde --------------------------------------------------------------------------------


async def test_horde_async_check_status_and_kudos():
    emu = create_emulator("horde", job_duration_s=0.01)
    async with client(emu, HORDE) as c:
        body = {
            "prompt": "a fox",
            "params": {"width": 64, "height": 128, "steps": 10, "n": 2, "seed": "42"},
            "models": ["stable_diffusion"],
        }
        queued = await c.post("/api/v2/generate/async", json=body)
        assert queued.status_code == 202
        job = queued.json()
        await wait_until(lambda: emu.prompts[job["id"]].finished(time.monotonic()) == 2)
        check = (await c.get(f"/api/v2/generate/check/{job['id']}")).json()
        assert check["done"] and check["finished"] == 2 and check["is_possible"]
        status = (await c.get(f"/api/v2/generate/status/{job['id']}")).json()
        assert [g["seed"] for g in status["generations"]] == ["42", "43"]
        image = await c.get(status["generations"][0]["img"])
        assert decode(image.content).size == (64, 128) and decode(image.content).format == "WEBP"
        user = (await c.get("/api/v2/find_user")).json()
        assert user["kudos"] == 1000 - job["kudos"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"params": {}}, 400, "prompt"),
        ({"prompt": "x", "params": {"seed": 42}}, 400, "params.seed"),
        ({"prompt": "x", "params": {"width": 100}}, 400, "params.width"),
        ({"prompt": "x", "params": {"steps": 0}}, 400, "params.steps"),
        ({"prompt": "x", "params": {"n": "2"}}, 400, "params.n"),
        ({"prompt": "x", "params": {"sampler_name": "euler"}}, 400, "params.sampler_name"),
        (
            {"prompt": "x", "source_processing": "magic", "source_image": png()},
            400,
            "source_processing",
        ),
    ],
)
async def test_horde_validation_errors(body, status, field):
    emu = create_emulator("horde")
    async with client(emu, HORDE) as c:
        response = await c.post("/api/v2/generate/async", json=body)
    assert response.status_code == status
    assert response.json()["message"] == "Input payload validation failed"
    assert field in response.json()["errors"]


async def test_horde_rc_errors_and_anonymous_key():
    emu = create_emulator("horde")
    async with client(emu) as c:
        missing = await c.post("/api/v2/generate/async", json={"prompt": "x"})
        assert missing.status_code == 400 and "apikey" in missing.json()["errors"]
        wrong = await c.post(
            "/api/v2/generate/async", json={"prompt": "x"}, headers={"apikey": "no"}
        )
        assert wrong.status_code == 401 and wrong.json()["rc"] == "InvalidAPIKey"
        anon = {"apikey": "0000000000"}
        mask = await c.post(
            "/api/v2/generate/async", headers=anon, json={"prompt": "x", "source_mask": png()}
        )
        assert mask.json()["rc"] == "SourceMaskUnnecessary"
        ok = await c.post(
            "/api/v2/generate/async", headers=anon, json={"prompt": "x", "params": {"n": 2}}
        )
        assert ok.status_code == 202
        busy = await c.post("/api/v2/generate/async", headers=anon, json={"prompt": "x"})
        assert busy.status_code == 429 and busy.json()["rc"] == "TooManyPrompts"
        lost = await c.get("/api/v2/generate/check/nope")
        assert lost.status_code == 404 and lost.json()["rc"] == "RequestNotFound"
        emu.inject(Fault(moderation=True))
        refused = await c.post("/api/v2/generate/async", headers=anon, json={"prompt": "x"})
        assert refused.json()["rc"] == "CorruptPrompt"


async def test_horde_queue_cancel_impossible_model_and_status_rate_limit():
    emu = create_emulator("horde", queue_s=60, queue_ahead=5)
    async with client(emu, HORDE) as c:
        job = (await c.post("/api/v2/generate/async", json={"prompt": "x"})).json()
        check = (await c.get(f"/api/v2/generate/check/{job['id']}")).json()
        assert check["queue_position"] == 5 and check["wait_time"] >= 59 and not check["done"]
        cancelled = (await c.delete(f"/api/v2/generate/status/{job['id']}")).json()
        assert cancelled["generations"] == [] and emu.deleted == [job["id"]]
        assert (await c.get(f"/api/v2/generate/check/{job['id']}")).json()["done"]
        lonely = await c.post("/api/v2/generate/async", json={"prompt": "x", "models": ["Nope"]})
        assert lonely.json()["warnings"][0]["code"] == "NoAvailableWorker"
        check = (await c.get(f"/api/v2/generate/check/{lonely.json()['id']}")).json()
        assert check["is_possible"] is False
        codes = [
            (await c.get(f"/api/v2/generate/status/{job['id']}")).status_code for _ in range(11)
        ]
        assert codes[-1] == 429 and set(codes[:-1]) == {200}
        models = (await c.get("/api/v2/status/models", params={"type": "image"})).json()
        assert {"name", "count", "eta", "queued"} <= set(models[0])
