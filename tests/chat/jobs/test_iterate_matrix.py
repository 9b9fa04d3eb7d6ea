"""Continuing from a picture, against the real homeserver: again, vary, upscale, and a
prompt in reply to any picture; every bad file gets a clear notice and no work."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from generation.postprocess.png import read_parameters
from tests.helpers.chatting import bot_running, usage_rows

pytestmark = pytest.mark.synapse
BOT = "@imgbot:localhost"


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def photo(width: int = 96, height: int = 64) -> Image.Image:
    """A picture a person might post: a gradient, so image-to-image has something to keep."""
    image = Image.new("RGB", (width, height))
    image.putdata(
        [(x * 255 // width, y * 255 // height, 128) for y in range(height) for x in range(width)]
    )
    return image


def claims_to_be(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: a decompression bomb's first bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


async def picture_params(chat, image_event) -> dict:
    return read_parameters(await chat.download(image_event["content"]["url"]))


async def test_again_and_vary_continue_from_the_bots_picture(make_settings, engine, alice):
    settings = make_settings(compliance={"embed_prompt": True, "embed_sources": True})
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        first = await alice.send(room, "!img a red lighthouse --seed 5 --steps 3")
        (original,) = await alice.wait_reply(room, first, "m.image")
        again = await alice.reply(room, original["event_id"], "!img again")
        (second,) = await alice.wait_reply(room, again, "m.image")
        vary = await alice.reply(room, original["event_id"], "!img vary 0.4 --enhance")
        (varied,) = await alice.wait_reply(room, vary, "m.image")
    before, after = await picture_params(alice, original), await picture_params(alice, second)
    assert after["prompt"] == before["prompt"] == "a red lighthouse"
    assert (after["steps"], after["size"]) == (3, before["size"])
    assert after["seed"] != before["seed"]
    assert second["content"]["body"].startswith("a red lighthouse — seed")
    changed = await picture_params(alice, varied)
    assert changed["kind"] == "img2img" and changed["strength"] == 0.4
    assert changed["source"] == original["content"]["url"] and changed["enhance"] is True
    assert "from the picture replied to, strength 0.4" in varied["content"]["body"]
    assert "enhanced" in varied["content"]["body"]
    assert [r["status"] for r in await usage_rows(settings)] == ["ok", "ok", "ok"]


async def test_a_prompt_in_reply_to_an_uploaded_picture_paints_it_over(
    make_settings, engine, alice
):
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT)
        made = {}
        for fmt, mimetype in (("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")):
            upload = await alice.send_picture(room, encoded(photo(), fmt), mimetype, 96, 64)
            command = await alice.reply(
                room, upload, f"!img a watercolour {fmt} --strength 0.5 --seed 3"
            )
            (made[fmt],) = await alice.wait_reply(room, command, "m.image")
        plain = await alice.send_picture(room, encoded(photo(), "PNG"), "image/png", 96, 64)
        sized = await alice.reply(room, plain, "!img a pencil drawing --size 64x64")
        (small,) = await alice.wait_reply(room, sized, "m.image")
    for image in made.values():
        info = image["content"]["info"]
        assert info["w"] / info["h"] == pytest.approx(96 / 64, rel=0.15)  # the shape is kept
        params = await picture_params(alice, image)
        assert params["kind"] == "img2img" and params["strength"] == 0.5
    assert (small["content"]["info"]["w"], small["content"]["info"]["h"]) == (64, 64)


async def test_upscale_with_the_ai_upscaler_and_without_one(make_settings, engine, alice, tmp_path):
    from generation.testing.upscaler import make_test_upscaler

    upscaler = make_test_upscaler(tmp_path / "test-esrgan-x4.safetensors")
    for configured in (upscaler, None):
        settings = make_settings(
            state_dir=tmp_path / f"state-{bool(configured)}", generation={"upscaler": configured}
        )
        async with bot_running(settings, engine):
            room = await alice.room_with(BOT)
            first = await alice.send(room, "!img a small boat --seed 9")
            (original,) = await alice.wait_reply(room, first, "m.image")
            command = await alice.reply(room, original["event_id"], "!img upscale 2")
            (bigger,) = await alice.wait_reply(room, command, "m.image", timeout=120)
        content = bigger["content"]
        assert (content["info"]["w"], content["info"]["h"]) == (128, 128)
        with Image.open(io.BytesIO(await alice.download(content["url"]))) as picture:
            assert picture.size == (128, 128)
        if configured:
            assert "upscaled 2× to 128×128 with test-esrgan-x4.safetensors" in content["body"]
        else:
            assert "with a Lanczos resize (no AI upscaler is configured)" in content["body"]
        params = await picture_params(alice, bigger)
        assert params["upscale"] == 2 and params["seed"] == 9


async def test_an_upscale_over_the_upload_limit_is_sent_as_a_smaller_file(
    own_server, make_settings, engine
):
    server, alice = own_server
    settings = make_settings(matrix={"homeserver_url": server.url})
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        first = await alice.send(room, "!img static --seed 2 --size 128x128")
        (original,) = await alice.wait_reply(room, first, "m.image")
        command = await alice.reply(room, original["event_id"], "!img upscale 4")
        (bigger,) = await alice.wait_reply(room, command, "m.image", timeout=120)
    content = bigger["content"]
    assert content["info"]["mimetype"] == "image/jpeg" and content["info"]["size"] <= 40 * 1024
    assert "upscaled 4× to 512×512" in content["body"]
    assert "the server takes files up to 40 KiB" in content["body"]


async def test_bad_pictures_and_misplaced_commands_get_a_clear_notice(make_settings, engine, alice):
    settings = make_settings(limits={"max_input_bytes": 60_000})
    cases = {
        "not a picture": (
            b"%PDF-1.4 not an image at all",
            "image/png",
            "not a picture the bot can read",
        ),
        "a gif": (encoded(photo(), "GIF"), "image/gif", "is a GIF; send a PNG, JPEG or WebP"),
        "too large a file": (
            encoded(Image.effect_noise((200, 200), 64).convert("RGB"), "PNG"),
            "image/png",
            "over the limit of 0.1 MiB",
        ),
        "absurd size": (
            claims_to_be(30000, 30000),
            "image/png",
            "over the limit of 16,777,216 pixels",
        ),
    }
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        notices = {}
        for name, (data, mimetype, _) in cases.items():
            # Each claims to be 100 bytes: what is checked is what arrives.
            upload = await alice.send_picture(
                room, data, mimetype, 10, 10, body=f"{name}.bin", declared=100
            )
            command = await alice.reply(room, upload, "!img a cat --strength 0.5")
            (notices[name],) = await alice.wait_reply(room, command, "m.notice")
        lonely = await alice.send(room, "!img again")
        (no_reply,) = await alice.wait_reply(room, lonely, "m.notice")
        theirs = await alice.send_picture(room, encoded(photo(), "PNG"), "image/png", 96, 64)
        vary = await alice.reply(room, theirs, "!img vary")
        (not_ours,) = await alice.wait_reply(room, vary, "m.notice")
        too_big = await alice.send_picture(
            room, encoded(photo(1024, 1024), "JPEG"), "image/jpeg", 1024, 1024
        )
        huge = await alice.reply(room, too_big, "!img upscale 16")
        (factor,) = await alice.wait_reply(room, huge, "m.notice")
    for name, (_, _, expected) in cases.items():
        assert expected in notices[name]["content"]["body"], name
    assert "Reply to a picture with `!img again`" in no_reply["content"]["body"]
    assert "works on the pictures this bot made" in not_ours["content"]["body"]
    assert "`upscale` by 2, 4 or 8, not 16" in factor["content"]["body"]
    assert alice.replies(room, vary, "m.image") == []
    assert {r["status"] for r in await usage_rows(settings)} == {"rejected"}


async def test_continuing_without_stored_prompts_in_a_thread_and_after_a_restart(
    make_settings, engine, alice, tmp_path
):
    """`again` reads the prompt back from the picture when the log keeps none; `upscale`
    in a thread started on a picture works on that picture; an image-to-image job held
    over a restart fetches its picture again."""
    settings = make_settings(
        state_dir=tmp_path / "kept",
        usage={"store_prompts": False},
        compliance={"embed_prompt": True, "embed_sources": True},
        matrix={"admins": ["@alice:localhost"]},
    )
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        first = await alice.send(room, "!img a quiet pond --seed 4")
        (original,) = await alice.wait_reply(room, first, "m.image")
        again = await alice.reply(room, original["event_id"], "!img again")
        (second,) = await alice.wait_reply(room, again, "m.image")
        in_thread = await alice.send(
            room,
            "!img upscale 2",
            **{
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": original["event_id"],
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": original["event_id"]},
                }
            },
        )
        (upscaled,) = await alice.wait_reply(room, in_thread, "m.image")
        vary_upscale = await alice.reply(room, upscaled["event_id"], "!img vary")
        (refused,) = await alice.wait_reply(room, vary_upscale, "m.notice")
        await alice.send(room, "!img pause")
        upload = await alice.send_picture(room, encoded(photo(), "PNG"), "image/png", 96, 64)
        held = await alice.reply(room, upload, "!img an ink drawing --size 64x64")
        await alice.wait_reply(room, held, "m.notice")  # queued while paused
    async with bot_running(settings, engine):
        await alice.send(room, "!img resume")
        (made,) = await alice.wait_reply(room, held, "m.image")
    assert (await picture_params(alice, second))["prompt"] == "a quiet pond"
    assert second["content"]["body"].startswith("a quiet pond — seed")
    assert upscaled["content"]["info"]["w"] == 128
    assert upscaled["content"]["m.relates_to"]["rel_type"] == "m.thread"
    assert "is an upscale" in refused["content"]["body"]
    params = await picture_params(alice, made)
    assert params["kind"] == "img2img" and params["source"].startswith("mxc://")
    assert all("quiet pond" not in str(row) for row in await usage_rows(settings))
