"""A `--n` set where one picture cannot be posted while the others are: the person is told
which one and why, once, and the rest of the set (its contact sheet too) arrives."""

from __future__ import annotations

import pytest

import bot.chat.jobs.posting
from tests.helpers.chatting import bot_running

pytestmark = pytest.mark.synapse
BOT = "@imgbot:localhost"


async def test_the_picture_of_a_set_that_could_not_be_posted_is_named(
    make_settings, engine, alice, monkeypatch
):
    encode = bot.chat.jobs.posting._encode

    def failing_for_seed_21(image, params, *args):
        if params.get("seed") == 21:
            raise ValueError("a side over 65,535 pixels")  # as Pillow says for JPEG
        return encode(image, params, *args)

    monkeypatch.setattr(bot.chat.jobs.posting, "_encode", failing_for_seed_21)
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT)
        asked = await alice.send(room, "!img three kites --n 3 --seed 20 --size 64x64")
        pictures = await alice.wait_reply(room, asked, "m.image", count=3)  # 2 + the sheet
        (notice,) = await alice.wait_reply(room, asked, "m.notice")
    bodies = [p["content"]["body"] for p in pictures]
    assert sum("seed 20" in b for b in bodies) == 1 and sum("seed 22 " in b for b in bodies) == 1
    assert any("all 3 pictures" in b for b in bodies)
    assert notice["content"]["body"] == (
        "1 picture of 3 could not be posted: picture 2 (seed 21): it could not be encoded "
        "(ValueError)."
    )
