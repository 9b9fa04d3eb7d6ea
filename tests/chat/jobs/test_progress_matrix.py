"""What a person sees while a job waits and runs, against the real Synapse: one status
notice edited in place, or for a quick job nothing but the bot typing."""

from __future__ import annotations

import re
import time

import pytest

from tests.helpers.chatting import bot_running

pytestmark = pytest.mark.synapse
BOT = "@imgbot:localhost"


@pytest.fixture
def slow_steps(engine):
    """The real engine with each denoising step held back 0.4 s, as a big model's steps take
    time on a GPU (a forward hook on the UNet; the pipeline and its callback are real)."""
    handle = engine.pipe.unet.register_forward_hook(lambda *_: time.sleep(0.4))
    yield engine
    handle.remove()


def edits_of(chat, room: str, event_id: str) -> list[str]:
    """The new words of each edit of `event_id`, in the order they arrived."""
    return [
        e["content"]["m.new_content"]["body"]
        for e in chat.seen.get(room, [])
        if (e["content"].get("m.relates_to") or {}).get("rel_type") == "m.replace"
        and e["content"]["m.relates_to"].get("event_id") == event_id
    ]


def position(chat, room: str, event_id: str) -> int:
    return [e["event_id"] for e in chat.seen[room]].index(event_id)


async def test_a_slow_job_shows_its_status_edited_as_it_runs(make_settings, slow_steps, alice):
    settings = make_settings(progress={"interval_seconds": 1})
    async with bot_running(settings, slow_steps):
        room = await alice.room_with(BOT)
        command = await alice.send(room, "!img a lighthouse at dusk --steps 8")
        (status,) = await alice.wait_reply(room, command, "m.notice")
        (image,) = await alice.wait_reply(room, command, "m.image")
        await alice.wait_for(
            room,
            lambda _: any(
                text.startswith("Done") for text in edits_of(alice, room, status["event_id"])
            ),
        )
    said = edits_of(alice, room, status["event_id"])
    steps = [
        int(m.group(1))
        for text in [status["content"]["body"], *said]
        if (m := re.search(r"step (\d+) of 8", text))
    ]
    # The notice and its edits follow the steps as they rise, with the time left.
    assert len(steps) >= 2 and steps == sorted(steps) and steps[0] < steps[-1], said
    assert any(re.search(r"step \d+ of 8, about \d+ s left", text) for text in said), said
    # The last edit is a short final line, after the picture.
    assert re.fullmatch(r"Done: 1 picture posted, \d+ s after the command\.", said[-1])
    final = next(
        e
        for e in reversed(alice.seen[room])
        if e["content"].get("m.new_content", {}).get("body") == said[-1]
    )
    assert position(alice, room, final["event_id"]) > position(alice, room, image["event_id"])
    # An edit mentions nobody again; clients without edits see "* …".
    assert final["content"]["m.mentions"] == {} and final["content"]["body"] == f"* {said[-1]}"
    assert len(alice.replies(room, command, "m.notice")) == 1


@pytest.fixture
def slow_decode(engine):
    """The real engine whose steps are quick and whose decoding takes 3.5 s, as a large
    picture's does on a CPU: the progress says the job is at its end long before it is."""
    handle = engine.pipe.vae.decoder.register_forward_hook(lambda *_: time.sleep(3.5))
    yield engine
    handle.remove()


async def test_a_job_long_at_its_last_step_still_gets_its_status(make_settings, slow_decode, alice):
    """A job whose progress says it is about to end is not told at the first interval (its
    line would come just before its picture); when it is still at work an interval later,
    it is."""
    async with bot_running(make_settings(progress={"interval_seconds": 1}), slow_decode):
        room = await alice.room_with(BOT)
        command = await alice.send(room, "!img a slow decoder --steps 2")
        (status,) = await alice.wait_reply(room, command, "m.notice")
        (image,) = await alice.wait_reply(room, command, "m.image")
    assert status["content"]["body"].startswith("Making your picture")
    assert position(alice, room, status["event_id"]) < position(alice, room, image["event_id"])


async def test_a_quick_job_gets_no_status_only_typing(make_settings, engine, alice):
    async with bot_running(make_settings(progress={"interval_seconds": 3}), engine):
        room = await alice.room_with(BOT)
        command = await alice.send(room, "!img a red apple")
        await alice.wait_reply(room, command, "m.image")
        await alice.sync(500)
    assert alice.replies(room, command, "m.notice") == []
    assert not [e for e in alice.seen[room] if "m.new_content" in e["content"]]
    assert BOT in alice.typed.get(room, set()), "the bot never showed itself typing"


async def test_a_waiting_job_is_told_its_place_then_the_status_ends(make_settings, engine, alice):
    settings = make_settings(
        progress={"interval_seconds": 1}, matrix={"admins": ["@alice:localhost"]}
    )
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        await alice.send(room, "!img pause")
        command = await alice.send(room, "!img a quiet harbour")
        (status,) = await alice.wait_reply(room, command, "m.notice")
        assert status["content"]["body"].startswith("Queued: the queue is paused")
        await alice.send(room, "!img resume")
        await alice.wait_reply(room, command, "m.image")
        await alice.wait_for(
            room,
            lambda _: any(
                text.startswith("Done") for text in edits_of(alice, room, status["event_id"])
            ),
        )
    assert len(alice.replies(room, command, "m.notice")) == 1


async def test_a_slow_download_in_one_room_does_not_hold_up_another(
    make_settings, engine, alice, monkeypatch
):
    """The picture an img2img command starts from is fetched behind a gate (as from a slow media
    server): meanwhile a command in another room is answered, and once the gate opens the
    first room gets its picture."""
    import asyncio
    import io

    from PIL import Image

    from bot.matrix import sources

    gate, fetching = asyncio.Event(), asyncio.Event()
    fetch = sources.fetch

    async def slow_fetch(*args, **kwargs):
        fetching.set()
        await gate.wait()
        return await fetch(*args, **kwargs)

    monkeypatch.setattr(sources, "fetch", slow_fetch)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(buffer, "PNG")
    async with bot_running(make_settings(), engine):
        slow_room = await alice.room_with(BOT, name="slow")
        other_room = await alice.room_with(BOT, name="other")
        photo = await alice.send_picture(slow_room, buffer.getvalue(), "image/png", 64, 64)
        vary = await alice.reply(slow_room, photo, "!img the same, in watercolour")
        await asyncio.wait_for(fetching.wait(), 30)
        asked = await alice.send(other_room, "!img a red apple")
        await alice.wait_reply(other_room, asked, "m.image", timeout=30)
        assert alice.replies(slow_room, vary) == []  # still fetching
        gate.set()
        await alice.wait_reply(slow_room, vary, "m.image")
