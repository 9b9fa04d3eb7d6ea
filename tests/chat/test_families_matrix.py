"""Bots on the new families against the real homeserver: on Z-Image, pictures, --ar around
its native size, vary and --n work as on SD; on FLUX.2 [klein], which has no negative
prompt, a --no is refused with the model named."""

from __future__ import annotations

import pytest

from generation.postprocess.png import read_parameters
from tests.helpers.chatting import bot_running

pytestmark = pytest.mark.synapse
BOT = "@imgbot:localhost"


async def params_of(chat, image_event) -> dict:
    return read_parameters(await chat.download(image_event["content"]["url"]))


async def test_a_zimage_bot_answers_pictures_aspect_ratios_vary_and_sets(
    make_settings, family_engines, alice
):
    engine = family_engines["zimage"]
    settings = make_settings(
        generation={"model": engine.path, "size": "64x64"},
        limits={"max_pixels": 256 * 256},
        compliance={"embed_prompt": True, "embed_sources": True},
    )
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        first = await alice.send(room, "!img a lighthouse at dusk --seed 3")
        (picture,) = await alice.wait_reply(room, first, "m.image")
        wide = await alice.send(room, "!img a harbour --ar 16:9")
        (panorama,) = await alice.wait_reply(room, wide, "m.image")
        vary = await alice.reply(room, picture["event_id"], "!img vary 0.5")
        (varied,) = await alice.wait_reply(room, vary, "m.image")
        several = await alice.send(room, "!img two boats --n 2 --seed 9")
        pair = await alice.wait_reply(room, several, "m.image", count=2)
        listed = await alice.send(room, "!img models")
        (models,) = await alice.wait_reply(room, listed, "m.notice")
    made = await params_of(alice, picture)
    assert (made["prompt"], made["size"], made["seed"]) == ("a lighthouse at dusk", "64x64", 3)
    width, height = map(int, (await params_of(alice, panorama))["size"].split("x"))
    assert width > height and width * height <= 256 * 256 and width % 16 == height % 16 == 0
    changed = await params_of(alice, varied)
    assert changed["kind"] == "img2img" and changed["strength"] == 0.5
    assert sorted([(await params_of(alice, p))["seed"] for p in pair]) == [9, 10]
    assert (
        f"`{engine.name}`: Z-Image, native size 1024×1024 — the default"
        in models["content"]["body"]
    )


async def test_a_negative_prompt_on_flux2_klein_is_refused_naming_the_model(
    make_settings, family_engines, alice
):
    engine = family_engines["flux2-klein"]
    async with bot_running(make_settings(generation={"model": engine.path}), engine):
        room = await alice.room_with(BOT)
        asked = await alice.send(room, "!img a fox --no blur")
        (answer,) = await alice.wait_reply(room, asked, "m.notice")
        fine = await alice.send(room, "!img a fox")
        (picture,) = await alice.wait_reply(room, fine, "m.image")
    assert (
        f"The model {engine.name} (FLUX.2 [klein]) takes no negative prompt"
        in answer["content"]["body"]
    )
    assert (await params_of(alice, picture))["model"] == engine.name


def uploaded_png(width: int = 96, height: int = 64) -> bytes:
    import io

    from PIL import Image

    image = Image.new("RGB", (width, height))
    image.putdata(
        [(x * 255 // width, 90, y * 255 // height) for y in range(height) for x in range(width)]
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def test_edit_by_instruction_of_a_persons_picture_with_flux2_klein(
    make_settings, family_engines, alice
):
    engine = family_engines["flux2-klein"]
    settings = make_settings(
        generation={"model": engine.path}, compliance={"embed_prompt": True, "embed_sources": True}
    )
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        helped = await alice.send(room, "!img help")
        (help_text,) = await alice.wait_reply(room, helped, "m.notice")
        upload = await alice.send_picture(room, uploaded_png(), "image/png", 96, 64)
        asked = await alice.reply(room, upload, "!img edit make it night --seed 4")
        (edited,) = await alice.wait_reply(room, asked, "m.image")
        again = await alice.reply(room, edited["event_id"], "!img again")
        (second,) = await alice.wait_reply(room, again, "m.image")
        lone = await alice.send(room, "!img edit make it night")
        (no_reply,) = await alice.wait_reply(room, lone, "m.notice")
    assert "`!img edit <what to change>` — any picture" in help_text["content"]["body"]
    made = await params_of(alice, edited)
    assert (made["kind"], made["prompt"], made["size"], made["seed"]) == (
        "edit",
        "make it night",
        "96x64",
        4,
    )
    assert made["source"].startswith("mxc://")
    assert "edited from the picture replied to" in edited["content"]["body"]
    redone = await params_of(alice, second)
    assert (redone["kind"], redone["prompt"], redone["source"]) == (
        "edit",
        "make it night",
        made["source"],
    )
    assert redone["seed"] != 4
    assert "Reply to a picture with `!img edit <what to change>`" in no_reply["content"]["body"]


async def test_edit_without_an_editing_model_says_what_to_configure(
    make_settings, family_engines, alice
):
    engine = family_engines["zimage"]
    async with bot_running(make_settings(generation={"model": engine.path}), engine):
        room = await alice.room_with(BOT)
        helped = await alice.send(room, "!img help")
        (help_text,) = await alice.wait_reply(room, helped, "m.notice")
        upload = await alice.send_picture(room, uploaded_png(), "image/png", 96, 64)
        asked = await alice.reply(room, upload, "!img edit remove the hat")
        (answer,) = await alice.wait_reply(room, asked, "m.notice")
    assert "!img edit" not in help_text["content"]["body"]
    assert "no editing model configured" in answer["content"]["body"]
    assert "generation.edit_model" in answer["content"]["body"]
