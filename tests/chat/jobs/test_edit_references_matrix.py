"""`!img edit` with two pictures, against the real homeserver on the tiny FLUX.2 [klein]
(which takes reference pictures): a thread started on a picture, with a second picture
posted in it and replied to, edits the second with the first as a reference; the same in
an encrypted room; a restart of `again` fetches both again; an edit of that edit does not
take the first picture twice; and a job resumed after a restart whose reference picture is
gone says that it is the reference."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.chat.test_families_matrix import params_of, uploaded_png
from bot.store import db as database
from tests.helpers.chatting import bot_running, usage_rows

pytestmark = pytest.mark.synapse
BOT = "@imgbot:localhost"


def in_thread(root: str, reply_to: str, falling_back: bool = False) -> dict:
    """`m.relates_to` of a message in the thread on `root`, as clients send it."""
    return {
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": falling_back,
            "m.in_reply_to": {"event_id": reply_to},
        }
    }


def plain_png(colour: tuple[int, int, int], width: int = 96, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def picture_of(chat, event) -> Image.Image:
    return Image.open(io.BytesIO(await chat.picture(event["content"]))).convert("RGB")


async def two_picture_edit(alice, room, command: str):
    """Posts picture A, a thread on it with picture B, and B alone in the room; asks the
    same edit of B in the thread and of B alone. The two answers, and A's event."""
    first = await alice.send_picture(room, uploaded_png(), "image/png", 96, 64)
    second = plain_png((30, 160, 60))
    threaded = await alice.send_picture(
        room, second, "image/png", 96, 64, **in_thread(first, first, falling_back=True)
    )
    alone = await alice.send_picture(room, second, "image/png", 96, 64)
    asked = await alice.send(room, command, **in_thread(first, threaded))
    (with_reference,) = await alice.wait_reply(room, asked, "m.image")
    plain = await alice.reply(room, alone, command)
    (without,) = await alice.wait_reply(room, plain, "m.image")
    return with_reference, without, first


async def test_an_edit_in_a_thread_takes_the_thread_s_first_picture_as_a_reference(
    make_settings, family_engines, alice
):
    engine = family_engines["flux2-klein"]
    settings = make_settings(
        generation={"model": engine.path}, compliance={"embed_prompt": True, "embed_sources": True}
    )
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        edited, alone, first = await two_picture_edit(
            alice, room, "!img edit put the colours of the second picture on it --seed 4"
        )
        again = await alice.send(room, "!img again", **in_thread(first, edited["event_id"]))
        (redone,) = await alice.wait_reply(room, again, "m.image")
    made, single = await params_of(alice, edited), await params_of(alice, alone)
    first_url = (await alice.client.room_get_event(room, first)).event.source["content"]["url"]
    assert made["references"] == [first_url] and "references" not in single
    assert (made["size"], made["seed"]) == (single["size"], single["seed"]) == ("96x64", 4)
    # Same picture, seed and instruction: only the reference differs, and it is used.
    assert (await picture_of(alice, edited)).tobytes() != (await picture_of(alice, alone)).tobytes()
    again_made = await params_of(alice, redone)
    assert again_made["references"] == [first_url] and again_made["seed"] != 4
    assert "with the thread's first picture as a reference" in edited["content"]["body"]
    assert "reference" not in alone["content"]["body"]
    # The answer stays in the thread.
    relation = edited["content"]["m.relates_to"]
    assert (relation["rel_type"], relation["event_id"]) == ("m.thread", first)


async def test_an_edit_with_a_reference_in_an_encrypted_room(
    make_settings, family_engines, alice_e2e
):
    alice = alice_e2e
    engine = family_engines["flux2-klein"]
    settings = make_settings(
        generation={"model": engine.path}, compliance={"embed_prompt": True, "embed_sources": True}
    )
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT, encrypted=True)
        edited, alone, _ = await two_picture_edit(alice, room, "!img edit make it night --seed 2")
    assert "url" not in edited["content"] and edited["content"]["file"]["v"] == "v2"
    with_reference = await picture_of(alice, edited)
    assert with_reference.size == (96, 64)
    assert with_reference.tobytes() != (await picture_of(alice, alone)).tobytes()
    made = read_png_parameters(await alice.picture(edited["content"]))
    assert made["kind"] == "edit" and len(made["references"]) == 1
    assert "#" not in made["references"][0]  # the key of an encrypted file is not shown
    # Nor kept in the usage log, which admins read.
    logged = json.dumps(await usage_rows(settings))
    assert "key=" not in logged and made["references"][0] in logged


async def test_an_edit_of_the_bots_edit_in_the_thread_takes_the_first_picture_once(
    make_settings, family_engines, alice
):
    settings = make_settings(
        generation={"model": family_engines["flux2-klein"].path},
        compliance={"embed_prompt": True, "embed_sources": True},
    )
    async with bot_running(settings, family_engines["flux2-klein"]):
        room = await alice.room_with(BOT)
        first = await alice.send_picture(room, uploaded_png(), "image/png", 96, 64)
        second = await alice.send_picture(
            room,
            plain_png((30, 160, 60)),
            "image/png",
            96,
            64,
            **in_thread(first, first, falling_back=True),
        )
        asked = await alice.send(
            room, "!img edit put its colours on it --seed 1", **in_thread(first, second)
        )
        (edited,) = await alice.wait_reply(room, asked, "m.image")
        asked = await alice.send(
            room, "!img edit make it night --seed 2", **in_thread(first, edited["event_id"])
        )
        (again,) = await alice.wait_reply(room, asked, "m.image")
    assert len((await params_of(alice, edited))["references"]) == 1
    # The first picture is in the bot's edit already: it is not added again.
    made = await params_of(alice, again)
    assert made["kind"] == "edit" and "references" not in made
    assert "reference" not in again["content"]["body"]


async def test_a_resumed_edit_whose_reference_is_gone_names_the_reference(
    make_settings, family_engines, alice, tmp_path
):
    settings = make_settings(
        generation={"model": family_engines["flux2-klein"].path},
        state_dir=tmp_path / "kept",
        matrix={"admins": ["@alice:localhost"]},
    )
    async with bot_running(settings, family_engines["flux2-klein"]):
        room = await alice.room_with(BOT)
        pause = await alice.send(room, "!img pause")
        await alice.wait_reply(room, pause, "m.notice")
        first = await alice.send_picture(room, uploaded_png(), "image/png", 96, 64)
        second = await alice.send_picture(
            room,
            plain_png((30, 160, 60)),
            "image/png",
            96,
            64,
            **in_thread(first, first, falling_back=True),
        )
        asked = await alice.send(room, "!img edit make it night", **in_thread(first, second))
        await alice.wait_reply(room, asked, "m.notice")  # queued, while paused
    await forget_the_reference(Path(settings.state_dir) / "imgbot.sqlite3", asked)
    async with bot_running(settings, family_engines["flux2-klein"]):
        notice = (await alice.wait_reply(room, asked, "m.notice", count=2))[1]
    said = notice["content"]["body"]
    assert (
        "not made: its reference picture (the thread's first picture) could not be "
        "used again" in said
    ), said
    assert "the picture it starts from" not in said


async def forget_the_reference(path: Path, event_id: str) -> None:
    """The stored job's reference pointed at a file the homeserver does not have (as if it
    had been deleted since)."""
    db = await database.connect(path)
    (record,) = await (
        await db.execute("SELECT job FROM jobs WHERE event_id = ?", (event_id,))
    ).fetchone()
    job = json.loads(record)
    assert len(job["references"]) == 1
    job["references"] = ["mxc://localhost/gone"]
    await db.execute("UPDATE jobs SET job = ? WHERE event_id = ?", (json.dumps(job), event_id))
    await db.commit()
    await db.close()


def read_png_parameters(data: bytes) -> dict:
    from generation.postprocess.png import read_parameters

    return read_parameters(data)
