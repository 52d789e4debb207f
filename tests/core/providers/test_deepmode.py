"""Deepmode: the request it sends for each operation, and its failures."""

from __future__ import annotations

import pytest
from PIL import Image

from core import ImageRequest, InvalidRequestError
from core.errors import ProviderQuotaError, ProviderRejectedError
from tests.emulators import Fault, create_emulator

from .conftest import DM_MODEL, adapter, decode, half_mask, input_image, png


def test_aspect_ratio_maps_to_square_or_portrait():
    model = adapter("deepmode")
    assert model.plan(ImageRequest(prompt="p", aspect_ratio="1:1")).call.json["ratio"] == "square"
    assert model.plan(ImageRequest(prompt="p", aspect_ratio="3:4")).call.json["ratio"] == "portrait"
    assert "ratio" not in model.plan(ImageRequest(prompt="p")).call.json  # Deepmode's default
    with pytest.raises(
        InvalidRequestError, match=r"square \(1:1\) or portrait \(3:4\) images, not 16:9"
    ):
        model.plan(ImageRequest(prompt="p", aspect_ratio="16:9"))
    with pytest.raises(InvalidRequestError, match="aspect ratio instead"):
        model.plan(ImageRequest(prompt="p", size=(512, 512)))


def test_upscale_needs_a_deepmode_image():
    model = adapter("deepmode", name="dm")
    uploaded = ImageRequest(operation="upscale", image=input_image())
    with pytest.raises(InvalidRequestError, match="only upscale its own results.*uploaded"):
        model.plan(uploaded)
    foreign = input_image(provider="openai", provider_image_id="x")
    with pytest.raises(InvalidRequestError, match="this image is from openai"):
        model.plan(ImageRequest(operation="upscale", image=foreign))
    ours = input_image(provider="dm", provider_image_id="abc")
    assert model.plan(ImageRequest(operation="upscale", image=ours)).call.json == {
        "image_id": "abc"
    }
    with pytest.raises(InvalidRequestError, match="x4 only"):
        model.plan(ImageRequest(operation="upscale", image=ours, scale=2))
    with pytest.raises(InvalidRequestError, match="one image per request"):
        model.plan(ImageRequest(operation="upscale", image=ours, n=2))


def test_upscale_option_and_options_under_the_provider_name():
    model = adapter("deepmode", name="dm")
    plan = model.plan(ImageRequest(prompt="p", provider_options={"dm": {"upscale": True}}))
    assert plan.call.json["upscale"] is True
    with pytest.raises(InvalidRequestError, match="upscale"):
        model.plan(ImageRequest(prompt="p", provider_options={"deepmode": {"upscale": "maybe"}}))


async def test_generate_sends_the_documented_body_and_keeps_image_ids(harness):
    h = await harness("deepmode")
    result = await h.generate(n=2, negative_prompt="hat", aspect_ratio="1:1")
    (call,) = h.calls()
    assert call.path == "/api/images/generate"
    assert call.headers["authorization"] == f"Bearer {h.key}"
    assert call.json == {
        "model_id": DM_MODEL,
        "prompt": "a red fox in the snow",
        "negative_prompt": "hat",
        "ratio": "square",
        "num_images": 2,
    }
    job = await h.service.job(h.caller, result.job_id)
    assert [i.provider_image_id for i in job.images] == [i for i in h.emu.images]
    assert all(i.mime == "image/jpeg" and (i.width, i.height) == (64, 64) for i in job.images)


async def test_upscale_of_a_stored_result_uses_its_deepmode_id(harness):
    h = await harness("deepmode")
    made = await h.generate()
    image = await h.service.input_from_image(h.caller, made.images[0].id)
    h.emu.clear()
    result = await h.service.upscale(h.caller, ImageRequest(operation="upscale", image=image))
    (call,) = h.calls()
    assert call.path == "/api/images/upscale"
    assert call.json == {"image_id": made.images[0].provider_image_id}
    assert (result.images[0].width, result.images[0].height) == (48 * 4, 64 * 4)
    assert result.images[0].provider_image_id in h.emu.images


async def test_inpaint_is_a_multipart_remix_with_a_white_repaint_mask(harness):
    h = await harness("deepmode")
    source = png((64, 64))
    request = h.request(
        operation="inpaint",
        prompt="a scarf",
        image=input_image(source),
        mask=input_image(half_mask()),
    )
    result = await h.service.edit(h.caller, request)
    (call,) = h.calls()
    assert call.path == "/api/remix/generate"
    assert call.form == {
        "model_id": DM_MODEL,
        "prompt": "a scarf",
        "negative_prompt": "",
        "mode": "sync",
    }
    assert call.files["artwork_image"] == source
    mask = decode(call.files["mask_image"])
    assert mask.mode == "L" and mask.getpixel((0, 0)) == 255 and mask.getpixel((63, 0)) == 0
    assert (result.images[0].width, result.images[0].height) == (64, 64)


async def test_avatar_is_a_face_id_remix_of_the_whole_picture(harness):
    h = await harness("deepmode")
    face = png((64, 64), (200, 150, 120))
    await h.service.edit(h.caller, h.request(operation="avatar", image=input_image(face)))
    (call,) = h.calls()
    assert call.path == "/api/face-id-remix"
    assert call.form == {"prompt": "a red fox in the snow", "negative_prompt": "", "mode": "sync"}
    assert call.files["identity_image"] == face == call.files["artwork_image"]
    assert decode(call.files["mask_image"]).getextrema() == (255, 255)


async def test_an_expired_image_link_is_renewed_once(harness):
    h = await harness("deepmode")
    h.emu.inject(Fault(expired_url=True))
    result = await h.generate()
    paths = [(c.method, c.path) for c in h.calls()]
    image_id = result.images[0].provider_image_id
    assert paths == [("POST", "/api/images/generate"), ("GET", f"/api/images/{image_id}")]
    assert result.credits_charged == 1


async def test_out_of_credits_and_unknown_model_are_not_retried(harness):
    h = await harness("deepmode", emulator=create_emulator("deepmode", credits=0))
    with pytest.raises(ProviderQuotaError, match="out of credits"):
        await h.generate()
    assert len(h.calls()) == 1 and await h.captured() == 0
    h2 = await harness("deepmode", name="dm2", model="0123456789abcdef01234567")
    with pytest.raises(ProviderRejectedError, match="not found"):
        await h2.generate()
    assert len(h2.calls()) == 1


async def test_balance(harness):
    h = await harness("deepmode")
    await h.generate(n=2)
    (info,) = await h.service.providers(balance=True)
    assert info.balance == "998 credits" and info.key_set


def test_avatar_mask_covers_the_input():
    model = adapter("deepmode")
    face = input_image(png((40, 30)))
    plan = model.plan(ImageRequest(operation="avatar", image=face))
    _, data, mime = plan.call.files["mask_image"]
    mask = Image.open(__import__("io").BytesIO(data))
    assert mime == "image/png" and mask.size == (40, 30)
