"""What the self-hosted and community backends (sdwebui, comfyui, horde) add to the contract:
cancelling a running job stops it on the backend and refunds it, the backend's progress
reaches the caller, balances and model lists, and the settings each one checks."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from core import ContentRejectedError, ImageRequest, InvalidRequestError, parse_settings
from core.errors import (
    ConfigError,
    JobTimeoutError,
    ProviderAuthError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from core.providers.selfhosted import DEFAULT_SIZE, sd_size
from core.registry import Registry
from tests.emulators import Fault, create_emulator, wait_until

from .conftest import COMFY_WORKFLOWS, half_mask, input_image

# ----- cancellation: the backend stops, the caller gets every credit back ----------------------


async def _cancel_when(h, started, **fields) -> None:
    """Start a job, cancel it once ``started()`` holds, and check nothing was charged."""
    before = await h.remaining()
    task = asyncio.create_task(h.generate(**fields))
    await wait_until(started)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await h.remaining() == before and await h.captured() == 0
    statuses = [row[0] for row in await h.service.db.fetchall("SELECT status FROM job")]
    assert statuses.count("cancelled") == 1  # the job record says so; its hold was released


async def test_cancelling_a_comfyui_job_interrupts_only_that_prompt(harness):
    h = await harness("comfyui")
    h.emu.inject(Fault(slow_job=True))
    await _cancel_when(h, lambda: h.emu.running is not None)
    await wait_until(lambda: h.emu.history)  # the emulator's worker notices the interrupt
    (prompt,) = h.emu.history  # interrupted, so it ended in the history without images
    assert h.emu.interrupts == [prompt]  # never a global interrupt (None)
    assert h.emu.history[prompt]["status"]["status_str"] == "error"
    deletes = [r.json for r in h.calls("/queue") if r.method == "POST"]
    assert deletes == [{"delete": [prompt]}]


async def test_cancelling_a_queued_comfyui_job_takes_it_out_of_the_queue(harness):
    h = await harness("comfyui")
    h.emu.inject(Fault(slow_job=True))
    blocker = asyncio.create_task(h.generate())  # someone else's job holds the GPU
    await wait_until(lambda: h.emu.running is not None)
    await _cancel_when(h, lambda: len(h.emu.pending) == 1, n=1)
    assert h.emu.pending == [] and h.emu.running is not None  # the other job runs on
    assert h.emu.interrupts[-1] != h.emu.running.prompt_id
    blocker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocker


async def test_cancelling_a_horde_request_deletes_it(harness):
    h = await harness("horde", emulator=create_emulator("horde", queue_s=30, queue_ahead=4))
    await _cancel_when(h, lambda: len(h.calls()) >= 2, n=2)  # queued and checked once
    assert h.emu.deleted == list(h.emu.prompts)
    assert h.emu.user.kudos == 1000  # nothing finished, so no kudos went


async def test_cancelling_a_webui_job_refunds_it(harness):
    emu = create_emulator("sdwebui", step_delay_s=0.05)
    h = await harness("sdwebui", emulator=emu)
    await _cancel_when(h, lambda: emu.state.sampling_step >= 1)
    assert emu.interrupts == 0  # /interrupt would stop whatever runs, maybe someone else's


async def test_a_job_past_its_deadline_stops_the_comfyui_prompt(harness):
    h = await harness("comfyui", settings={"defaults": {"job_deadline_s": 0.5}})
    h.emu.inject(Fault(slow_job=True))
    with pytest.raises(JobTimeoutError):
        await h.generate()
    await wait_until(lambda: h.emu.running is None)  # nothing left running on the GPU
    assert None not in h.emu.interrupts and not h.emu.pending
    assert [e["status"]["status_str"] for e in h.emu.history.values()] == ["error"]
    assert await h.captured() == 0


# ----- progress ---------------------------------------------------------------------------------


async def _progress_of(h, until, **fields) -> list[dict]:
    seen: list[dict] = []

    async def progress(stage: str, info: dict) -> None:
        if stage == "provider":
            seen.append(info)

    task = asyncio.create_task(h.service.generate(h.caller, h.request(**fields), progress=progress))
    await wait_until(lambda: until(seen))
    return seen, task


async def test_webui_steps_reach_the_progress_callback(harness):
    emu = create_emulator("sdwebui", step_delay_s=0.02)
    h = await harness("sdwebui", emulator=emu)
    seen, task = await _progress_of(h, bool, steps=40)
    first = seen[0]
    assert first["steps"] == 40 and 1 <= first["step"] <= 40 and first["job_id"]
    assert first["detail"].startswith("sdwebui: step ")
    assert len((await task).images) == 1


async def test_horde_queue_position_and_wait_reach_the_progress_callback(harness):
    emu = create_emulator("horde", queue_s=0.6, queue_ahead=3, job_duration_s=0.01)
    h = await harness("horde", emulator=emu)
    seen, task = await _progress_of(h, bool)
    assert seen[0]["queue_position"] in (1, 2, 3) and seen[0]["wait_s"] >= 0
    assert seen[0]["detail"].startswith("queued at horde, position ")
    assert len((await task).images) == 1


async def test_comfyui_queue_position_reaches_the_progress_callback(harness):
    h = await harness("comfyui")
    h.emu.inject(Fault(slow_job=True))
    blocker = asyncio.create_task(h.generate())
    await wait_until(lambda: h.emu.running is not None)
    seen, task = await _progress_of(h, bool)
    assert seen[0]["queue_position"] == 2 and "position 2" in seen[0]["detail"]
    h.emu.running.interrupted = True  # the job ahead ends (and is tried again); ours runs
    assert len((await task).images) == 1
    assert len((await blocker).images) == 1


# ----- balances, model lists, errors --------------------------------------------------------


async def test_horde_kudos_balance_and_models(harness):
    h = await harness("horde")
    model = h.service.registry.models[h.ref]
    assert await model.balance() == "1000 kudos"
    assert await model.available_models() == [
        "stable_diffusion",
        "AlbedoBase XL (SDXL)",
        "Deliberate",
    ]
    calls = h.calls("/api/v2/find_user")
    assert calls[0].headers["apikey"] == h.key and "imagegate" in calls[0].headers["client-agent"]


async def test_horde_without_a_key_is_anonymous(harness):
    h = await harness("horde", provider={"api_key_env": None})
    assert len((await h.generate()).images) == 1
    assert h.calls()[0].headers["apikey"] == "0000000000"
    assert await h.service.registry.models[h.ref].balance() == "anonymous (no kudos)"


async def test_horde_censored_images_are_dropped_and_not_charged(harness):
    h = await harness("horde")
    h.emu.censor_next = 1
    result = await h.generate(n=2)
    assert len(result.images) == 1 and result.credits_charged == 1
    h.emu.censor_next = 4
    with pytest.raises(ContentRejectedError, match="censored"):
        await h.generate(n=1)
    assert await h.captured() == 1


async def test_horde_request_no_worker_can_serve_is_deleted(harness):
    emu = create_emulator("horde", models={"stable_diffusion": 0})
    h = await harness("horde", emulator=emu)
    with pytest.raises(ProviderUnavailableError, match="no horde worker"):
        await h.generate()
    # Workers come and go, so the orchestrator tries again; no request is left behind.
    assert emu.deleted == list(emu.prompts) and len(emu.deleted) == 3
    assert await h.captured() == 0


async def test_horde_sends_the_documented_shapes(harness):
    h = await harness("horde")
    await h.generate(negative_prompt="rain", seed=9, steps=12, guidance=6.5, size=(128, 192))
    body = h.calls("/api/v2/generate/async")[0].json
    assert body["prompt"] == "a red fox in the snow ### rain"
    assert body["params"] == {
        "steps": 12,
        "cfg_scale": 6.5,
        "width": 128,
        "height": 192,
        "n": 1,
        "seed": "9",
    }
    assert body["models"] == ["stable_diffusion"]
    image = input_image()
    await h.service.edit(
        h.caller,
        h.request(operation="inpaint", image=image, mask=input_image(half_mask()), strength=0.5),
    )
    edit = h.calls("/api/v2/generate/async")[1].json
    assert edit["source_processing"] == "inpainting" and edit["params"]["denoising_strength"] == 0.5
    assert edit["source_image"] and edit["source_mask"]


async def test_webui_sends_the_documented_shapes_with_basic_auth(harness):
    h = await harness("sdwebui", model="sd_xl_base_1.0", provider={"models": ["sd_xl_base_1.0"]})
    request = h.request(
        negative_prompt="rain",
        seed=3,
        steps=12,
        guidance=5.0,
        provider_options={"sdwebui": {"sampler": "Euler a"}},
    )
    result = await h.service.generate(h.caller, request.model_copy(update={"n": 2}))
    assert [i.seed for i in result.images] == [3, 4]
    call = h.calls("/sdapi/v1/txt2img")[0]
    assert call.headers["authorization"].startswith("Basic ")
    assert call.json == {
        "prompt": "a red fox in the snow",
        "save_images": False,
        "negative_prompt": "rain",
        "steps": 12,
        "cfg_scale": 5.0,
        "sampler_name": "Euler a",
        "width": 512,
        "height": 512,
        "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"},
        "seed": 3,
        "batch_size": 2,
    }
    assert await h.service.registry.models[h.ref].available_models() == [
        c.title for c in h.emu.checkpoints
    ]


async def test_webui_without_api_auth_needs_no_key(harness):
    h = await harness(
        "sdwebui",
        emulator=create_emulator("sdwebui", api_key=None),
        key=False,
        provider={"api_key_env": None},
    )
    assert len((await h.generate(size=(64, 64))).images) == 1
    assert "authorization" not in h.calls()[0].headers


async def test_a_key_without_a_colon_is_refused_before_any_call(harness):
    h = await harness("sdwebui")
    h.service.registry.contexts["sdwebui"].api_key = "just-a-password"
    with pytest.raises(ProviderAuthError, match="user:password"):
        await h.generate()
    assert h.calls() == []


async def test_comfyui_upload_and_mask_reach_the_workflow(harness):
    h = await harness("comfyui")
    request = h.request(operation="inpaint", image=input_image(), mask=input_image(half_mask()))
    await h.service.edit(h.caller, request)
    uploads = [r for r in h.calls("/upload/image")]
    assert len(uploads) == 2
    graph = h.calls("/prompt")[0].json["prompt"]
    names = {graph["10"]["inputs"]["image"], graph["12"]["inputs"]["image"]}
    assert names == set(h.emu.inputs)


async def test_comfyui_execution_error_and_validation_error(harness):
    h = await harness("comfyui")
    h.emu.fail_next("CUDA out of memory", times=3)
    with pytest.raises(ProviderUnavailableError, match="CUDA out of memory"):
        await h.generate()
    h.emu.checkpoints = ["other.safetensors"]  # the workflow names a model this one lacks
    with pytest.raises(ProviderRejectedError, match="ckpt_name.*tell the operator"):
        await h.generate()
    assert await h.captured() == 0


@pytest.mark.parametrize(
    ("workflows", "message"),
    [
        ({}, "at least one workflow"),
        ({"paint": "txt2img.json"}, "unknown operation 'paint'"),
        ({"generate": "missing.json"}, "cannot read"),
        ({"generate": "ui.json"}, "UI format"),
        ({"generate": "bad.json"}, "unknown placeholder {{colour}}"),
        ({"inpaint": "img2img.json"}, "needs a {{mask}} placeholder"),
    ],
)
def test_comfyui_workflows_are_checked_at_start_up(tmp_path, workflows, message):
    (tmp_path / "ui.json").write_text(json.dumps({"nodes": [], "links": []}))
    graph = json.loads(open(COMFY_WORKFLOWS["generate"]).read())
    graph["6"]["inputs"]["text"] = "{{prompt}} in {{colour}}"
    (tmp_path / "bad.json").write_text(json.dumps(graph))
    for name in ("txt2img", "img2img"):
        source = COMFY_WORKFLOWS["generate" if name == "txt2img" else "variation"]
        (tmp_path / f"{name}.json").write_text(open(source).read())
    files = {op: str(tmp_path / name) for op, name in workflows.items()}
    settings = parse_settings(
        {"providers": {"c": {"kind": "comfyui", "workflows": files}}}, source="x.toml"
    )
    with pytest.raises(ConfigError, match=f"x.toml: .*{message}"):
        Registry(settings, httpx.AsyncClient())


async def test_comfyui_refuses_a_size_its_workflow_cannot_take(harness, tmp_path):
    graph = json.loads(open(COMFY_WORKFLOWS["generate"]).read())
    graph["5"]["inputs"].update(width=512, height=512)
    (tmp_path / "fixed.json").write_text(json.dumps(graph))
    h = await harness("comfyui", provider={"workflows": {"generate": str(tmp_path / "fixed.json")}})
    with pytest.raises(InvalidRequestError, match="fixed size"):
        await h.generate(size=(256, 256))
    result = await h.generate(steps=5)
    graph = h.calls("/prompt")[-1].json["prompt"]
    assert result.images[0].width == 512 and graph["3"]["inputs"]["steps"] == 5


def test_sizes_are_on_the_backends_grid_and_default_to_512():
    assert sd_size(ImageRequest(prompt="p"), "x") == DEFAULT_SIZE == (512, 512)
    assert sd_size(ImageRequest(prompt="p", size=(768, 512)), "x") == (768, 512)
    assert sd_size(ImageRequest(prompt="p", aspect_ratio="2:1"), "x") == (704, 384)
    with pytest.raises(InvalidRequestError, match=r"x makes sides in multiples of 8; 100x100"):
        sd_size(ImageRequest(prompt="p", size=(100, 100)), "x")
    too_large = ImageRequest(prompt="p", size=(3136, 512))
    with pytest.raises(InvalidRequestError, match=r"of 64 from 64 to 3072; 3136x512 is not \(try"):
        sd_size(too_large, "the Horde", multiple=64, high=3072, hint=" (try 512x512)")
