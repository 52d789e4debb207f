"""/edit and /upscale with attachments, inpainting with a mask, refused uploads, and the
"Upscale" / "Edit image" message menus."""

from __future__ import annotations

import io

from PIL import Image

from tests.bot.conftest import FOLLOWUP, Running, png_bytes
from tests.bot.test_buttons import result_of


def mask_png(size: tuple[int, int]) -> bytes:
    """White (repaint) on the left half, black (keep) on the right."""
    img = Image.new("L", size, 0)
    img.paste(255, (0, 0, size[0] // 2, size[1]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


async def test_edit_with_an_attachment(env: Running):
    fake = env.fake
    image = fake.add_attachment("photo.png", png_bytes((96, 64)), "image/png")
    handle = await fake.slash(
        "edit", {"image": image, "mode": "variation", "prompt": "as a watercolour", "strength": 0.4}
    )
    assert (await handle.wait_callback()).type == 5
    result = await result_of(fake, handle)
    assert fake.calls_to("GET", r"/cdn/.*")  # downloaded after acknowledging
    assert result["embeds"][0]["title"] == "Variations"
    assert result["embeds"][0]["description"] == "as a watercolour"
    (attachment,) = result["attachments"]
    assert (attachment["width"], attachment["height"]) == (96, 64)
    assert await env.remaining(fake.user) == 49


async def test_inpaint_with_a_mask(env: Running):
    fake = env.fake
    image = fake.add_attachment("room.png", png_bytes((80, 80), (20, 90, 200)), "image/png")
    mask = fake.add_attachment("mask.png", mask_png((80, 80)), "image/png")
    handle = await fake.slash(
        "edit", {"image": image, "mode": "inpaint", "prompt": "a red sofa", "mask": mask}
    )
    result = await result_of(fake, handle)
    assert result["embeds"][0]["title"] == "Inpaint"
    out = Image.open(io.BytesIO(fake.attachment_bytes(result["attachments"][0]))).convert("RGB")
    assert out.getpixel((70, 40)) == (20, 90, 200)  # black in the mask: kept
    assert out.getpixel((10, 40)) != (20, 90, 200)  # white in the mask: repainted


async def test_inpaint_without_a_mask_is_refused_at_once(env: Running):
    fake = env.fake
    image = fake.add_attachment("room.png", png_bytes(), "image/png")
    handle = await fake.slash("edit", {"image": image, "mode": "inpaint", "prompt": "x"})
    reply = await handle.wait_callback()
    assert reply.type == 4 and reply.data["flags"] & 64
    assert "mask" in reply.data["content"]


async def test_non_image_attachment_is_refused_before_download_with_no_charge(env: Running):
    fake = env.fake
    text = fake.add_attachment("notes.txt", b"just some text", "text/plain")
    handle = await fake.slash("upscale", {"image": text})
    reply = await handle.wait_callback()
    assert reply.type == 4 and reply.data["flags"] & 64
    assert "PNG, JPEG, WebP or GIF" in reply.data["content"]
    assert "Nothing was charged" in reply.data["content"]
    assert not fake.calls_to("GET", r"/cdn/.*")
    assert await env.remaining(fake.user) == 50


async def test_disguised_non_image_is_refused_after_download_with_no_charge(env: Running):
    fake = env.fake
    fake_png = fake.add_attachment("cat.png", b"<html>not an image</html>", "image/png")
    handle = await fake.slash("edit", {"image": fake_png, "mode": "variation"})
    assert (await handle.wait_callback()).type == 5
    await fake.wait_until(
        lambda: "not a PNG" in (handle.original_message or {}).get("content", ""), 5, "refusal"
    )
    assert handle.original_message["flags"] & 64  # private
    assert "Nothing was charged" in handle.original_message["content"]
    assert not [c for c in handle.followups if c.files]
    assert await env.remaining(fake.user) == 50


async def test_oversized_attachment_is_refused_before_download(env: Running):
    fake = env.fake
    big = fake.add_attachment("huge.png", png_bytes(), "image/png", size=50 * 1024 * 1024)
    handle = await fake.slash("upscale", {"image": big})
    reply = await handle.wait_callback()
    assert reply.type == 4 and "limit is" in reply.data["content"]
    assert not fake.calls_to("GET", r"/cdn/.*")


async def test_upscale_message_menu(env: Running):
    fake = env.fake
    posted = await fake.post_user_message(
        "my drawing",
        attachments=[
            fake.add_attachment("d.png", png_bytes((40, 30)), "image/png", ephemeral=False)
        ],
    )
    handle = await fake.context_menu("Upscale", posted)
    assert (await handle.wait_callback()).type == 5
    result = await result_of(fake, handle)
    assert (result["attachments"][0]["width"], result["attachments"][0]["height"]) == (80, 60)


async def test_edit_image_menu_asks_for_the_prompt_in_a_modal(env: Running):
    fake = env.fake
    posted = await fake.post_user_message(
        "photo",
        attachments=[
            fake.add_attachment("p.png", png_bytes((64, 64)), "image/png", ephemeral=False)
        ],
    )
    opener = await fake.context_menu("Edit image", posted)
    modal = await opener.wait_modal()
    assert modal["title"] == "Edit image"
    mode, text = [
        c for row in modal["components"] for c in row.get("components", [row.get("component")])
    ]
    assert [o["value"] for o in mode["options"]] == ["variation", "sketch", "background", "avatar"]
    submit = await fake.submit_modal(
        modal["custom_id"],
        {mode["custom_id"]: ["sketch"], text["custom_id"]: "in autumn colours"},
    )
    assert (await submit.wait_callback()).type == 5
    result = await result_of(fake, submit)
    assert result["embeds"][0]["description"] == "in autumn colours"
    assert result["embeds"][0]["title"] == "Sketch"  # the mode the member chose


async def test_menu_on_a_message_without_an_image_is_refused(env: Running):
    fake = env.fake
    posted = await fake.post_user_message("no pictures here")
    handle = await fake.context_menu("Upscale", posted)
    reply = await handle.wait_callback()
    assert reply.type == 4 and "no image" in reply.data["content"]
    assert not fake.calls_to("POST", FOLLOWUP)
