"""A picture's card (`!img info`), against the real homeserver with the tiny model: it says how
the picture was made and who asked; its command, typed back in a room with other defaults by
a person with defaults of their own, makes the same pixels; without kept prompts it reads them
from the picture, or says they are not kept; anything but the bot's picture gets one notice."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.helpers.chatting import bot_running

pytestmark = pytest.mark.synapse
BOT = "@imgbot:localhost"
NOT_ONE = "works in reply to a picture this bot made in this room"


async def pixels(chat, image_event) -> bytes:
    png = await chat.download(image_event["content"]["url"])
    return Image.open(io.BytesIO(png)).convert("RGB").tobytes()


async def notice(chat, room: str, text: str, reply_to: str | None = None) -> str:
    asked = await (chat.reply(room, reply_to, text) if reply_to else chat.send(room, text))
    (answer,) = await chat.wait_reply(room, asked, "m.notice")
    return answer["content"]["body"]


async def test_the_cards_command_typed_back_elsewhere_makes_the_same_pixels(
    make_settings, engine, alice
):
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT)
        asked = await alice.send(
            room,
            "!img a red fox in the snow --style oil painting --seed 11 --steps 3 "
            "--guidance 5 --no rain --n 2",
        )
        first, second, sheet = await alice.wait_reply(room, asked, "m.image", count=3)
        shown = await notice(alice, room, "!img info", reply_to=second["event_id"])
        sheet_card = await notice(alice, room, "!img info", reply_to=sheet["event_id"])
        # Elsewhere, defaults that would change every value the command leaves open.
        other = await alice.room_with(BOT, name="other room")
        for setting in (
            "!img room set style anime",
            "!img room set steps 5",
            "!img room set guidance 3",
            "!img room set negative fog",
            "!img me set size 128x64",
            "!img me set guidance 2",
        ):
            await notice(alice, other, setting)
        command = shown.splitlines()[-1]
        typed_back = await alice.send(other, command)
        (again,) = await alice.wait_reply(other, typed_back, "m.image")
        not_ours = await alice.send_picture(
            room, await alice.download(first["content"]["url"]), "image/png", 64, 64
        )
        theirs = await notice(alice, room, "!img info", reply_to=not_ours)
        text = await notice(alice, room, "!img info", reply_to=asked)
        alone = await notice(alice, room, "!img info")
    lines = shown.splitlines()
    for line in (
        "How this picture was made (picture 2 of 2):",
        "Prompt: a red fox in the snow",
        "Negative prompt: rain, photo, blurry, low quality, deformed, watermark, text",
        "Seed: 12",
        "Steps: 3",
        "Size: 64×64",
        "Guidance: 5",
        "Style: oil-painting",
    ):
        assert line in lines, (line, shown)
    assert any(line.startswith(f"Model: {engine.name} (") for line in lines), shown
    assert any(line.startswith("Asked by: @alice:localhost, 20") for line in lines), shown
    assert any(line.startswith("Took: ") and "waiting in the queue" for line in lines), shown
    assert command == (
        f"!img a red fox in the snow --seed 12 --steps 3 --size 64x64 --guidance 5 "
        f"--model {engine.name} --style oil-painting --no rain"
    )
    assert again["content"]["body"].startswith("a red fox in the snow — seed 12 · 3 steps · 64×64")
    assert await pixels(alice, again) == await pixels(alice, second)
    assert "How this contact sheet of 2 pictures was made:" in sheet_card
    assert "Seed: 11–12" in sheet_card and "--seed 11 " in sheet_card and "--n 2" in sheet_card
    for answer in (theirs, text, alone):
        assert NOT_ONE in answer


async def test_without_kept_prompts_the_card_reads_the_picture_or_says_not_kept(
    make_settings, engine, alice, tmp_path
):
    for embedded in (True, False):
        settings = make_settings(
            state_dir=tmp_path / f"embedded-{embedded}",
            usage={"store_prompts": False},
            compliance={"embed_prompt": embedded},
        )
        async with bot_running(settings, engine):
            room = await alice.room_with(BOT)
            asked = await alice.send(room, "!img a quiet pond --style photo --seed 4")
            (made,) = await alice.wait_reply(room, asked, "m.image")
            shown = await notice(alice, room, "!img info", reply_to=made["event_id"])
        assert "Seed: 4" in shown and "Style: photo" in shown
        if embedded:
            assert "Prompt: a quiet pond (read from the picture: the log keeps no prompts)" in shown
            assert shown.splitlines()[-1].startswith("!img a quiet pond --seed 4 --steps 2 ")
        else:
            assert "Prompt: not kept" in shown and "quiet pond" not in shown
            assert "its prompt is not kept" in shown


async def test_the_info_reaction_answers_with_the_card_at_the_picture(make_settings, engine, alice):
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT)
        asked = await alice.send(room, "!img a paper boat --seed 21 --style watercolor")
        (made,) = await alice.wait_reply(room, asked, "m.image")
        await alice.react(room, made["event_id"], "ℹ️")
        (answer,) = await alice.wait_reply(room, made["event_id"], "m.notice")
    shown = answer["content"]["body"]
    assert "Prompt: a paper boat" in shown and "Seed: 21" in shown
    assert shown.splitlines()[-1].startswith("!img a paper boat --seed 21 ")
    assert "<pre><code>!img a paper boat --seed 21 " in answer["content"]["formatted_body"]
