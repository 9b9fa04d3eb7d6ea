"""A company's LoRA as a room default, against the real homeserver: the room's pictures
name the LoRA and its weight in their PNG, the same seed without the style gives other
pixels, and `!img styles` marks the LoRA style."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from generation.models.engine import Engine
from generation.postprocess.png import read_parameters
from generation.testing.lora import make_test_lora
from tests.helpers.chatting import bot_running

pytestmark = pytest.mark.synapse
BOT = "@imgbot:localhost"


@pytest.fixture(scope="module")
def brand_lora(test_model, tmp_path_factory):
    return make_test_lora(test_model, tmp_path_factory.mktemp("lora") / "brand.safetensors")


async def test_a_rooms_lora_style_names_the_lora_and_changes_the_pixels(
    make_settings, test_model, brand_lora, alice
):
    settings = make_settings(
        generation={"loras": {"brand": brand_lora}},
        styles={
            "brand": {"lora": "brand", "weight": 0.8, "template": "{prompt}, in our brand style"}
        },
        compliance={"embed_prompt": True},
    )
    engine = Engine(test_model, "cpu", loras={"brand": brand_lora})
    engine.load()
    try:
        async with bot_running(settings, engine):
            room = await alice.room_with(BOT)
            listed = await alice.send(room, "!img styles")
            (styles,) = await alice.wait_reply(room, listed, "m.notice")
            setting = await alice.send(room, "!img room set style brand")
            await alice.wait_reply(room, setting, "m.notice")
            asked = await alice.send(room, "!img a logo --seed 5")
            (branded,) = await alice.wait_reply(room, asked, "m.image")
            plain_asked = await alice.send(room, "!img a logo --seed 5 --style none")
            (plain,) = await alice.wait_reply(room, plain_asked, "m.image")
            png = await alice.download(branded["content"]["url"])
            plain_png = await alice.download(plain["content"]["url"])
    finally:
        engine.unload()
    assert "`brand` — …, in our brand style (LoRA brand at 0.8)" in styles["content"]["body"]
    made = read_parameters(png)
    assert (made["style"], made["lora"], made["lora_weight"]) == ("brand", "brand", 0.8)
    assert made["prompt"] == "a logo, in our brand style"
    without = read_parameters(plain_png)
    assert "lora" not in without and without["seed"] == made["seed"] == 5
    pixels = [
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)
        for data in (png, plain_png)
    ]
    assert (pixels[0] != pixels[1]).any()
