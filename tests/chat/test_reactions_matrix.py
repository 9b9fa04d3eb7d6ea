"""Reactions as buttons, as people use them on a real Synapse with the tiny model: the bot's
own pills under each picture, a tap (or a typed reaction) as the command it stands for,
removing a picture with 🗑️, and ❌ or a reaction taken back cancelling a queued job."""

from __future__ import annotations

import asyncio

import pytest

from tests.chat.test_commands_matrix import BOT, notice, picture, shared_room
from tests.helpers.chatting import bot_running, usage_rows

pytestmark = pytest.mark.synapse


async def made(chat, room: str, text: str) -> dict:
    """The one picture the bot posts for a command."""
    asked = await chat.send(room, text)
    (image,) = await chat.wait_reply(room, asked, "m.image")
    return image


async def answer_to(chat, room: str, picture_id: str, after: int = 0) -> dict:
    """The next picture the bot posts in reply to `picture_id` (`after`: those seen before)."""
    (*_, image) = await chat.wait_reply(room, picture_id, "m.image", count=after + 1)
    return image


async def test_buttons_under_a_picture_and_each_tap_makes_one_picture(
    make_settings, engine, alice, bob, mallory
):
    settings = make_settings(compliance={"embed_prompt": True})
    async with bot_running(settings, engine):
        room = await shared_room(alice, bob)
        first = await made(alice, room, "!img a red fox --seed 5")
        pid = first["event_id"]
        # The bot's pills: again, vary and upscale, under the picture.
        buttons = await alice.wait_for(
            room, lambda _: r if len(r := alice.reactions(room, pid, BOT)) >= 3 else None
        )
        assert buttons == ["🔁", "🎲", "🔍"]
        _, original = await picture(alice, first)

        await alice.react(room, pid, "🔁")  # a tap on the bot's pill
        again = await answer_to(alice, room, pid)
        assert again["content"]["body"].startswith("🔁 for @alice:localhost")
        image, params = await picture(alice, again)
        assert params["prompt"] == original["prompt"] and params["seed"] != original["seed"]
        assert image.size == (64, 64)

        await bob.react(room, pid, "🔎")  # typed by someone else, the other magnifier
        upscaled = await answer_to(alice, room, pid, after=1)
        assert upscaled["content"]["body"].startswith("🔎 for @bob:localhost")
        assert (await picture(alice, upscaled))[0].size == (256, 256)  # 4×

        await bob.react(room, pid, "🎲")
        varied = await answer_to(alice, room, pid, after=2)
        _, params = await picture(alice, varied)
        assert params["kind"] == "img2img" and params["prompt"] == original["prompt"]

        await alice.react(room, pid, "✨\ufe0f")  # with the variation selector: the same key
        enhanced = await answer_to(alice, room, pid, after=3)
        image, params = await picture(alice, enhanced)
        assert image.size == (64, 64) and params["enhance"] is True

        # Reactions for fun, and anyone outside allowed_users, cause no work.
        await alice.react(room, pid, "😀")
        await alice.client.room_invite(room, mallory.user_id)
        await mallory.client.join(room)
        await mallory.react(room, pid, "🔁")
        await asyncio.sleep(3)
        await alice.sync(0)
        assert len(alice.replies(room, pid, "m.image")) == 4  # one each, no more
    rows = [r for r in await usage_rows(settings) if r["status"] == "ok"]
    assert [r["user_id"].split(":")[0] for r in rows] == [
        "@alice",
        "@alice",
        "@bob",
        "@bob",
        "@alice",
    ]


async def test_who_may_remove_a_picture(make_settings, engine, alice, bob):
    settings = make_settings()
    async with bot_running(settings, engine):
        room = await shared_room(alice, bob)  # alice moderates it, bob does not
        bobs = await made(bob, room, "!img a boat")
        alices = await made(alice, room, "!img a tree")

        await bob.react(room, alices["event_id"], "🗑️")  # not his, and no power to remove
        (said,) = await bob.wait_reply(room, alices["event_id"], "m.notice")
        assert "Only the person who asked for this picture" in said["content"]["body"]
        assert not bob.redacted(room, alices["event_id"])

        await bob.react(room, bobs["event_id"], "🗑")  # his own: removed
        await bob.wait_for(room, lambda _: bob.redacted(room, bobs["event_id"]))
        await alice.react(room, alices["event_id"], "❌")  # the room's moderator: removed
        await alice.wait_for(room, lambda _: alice.redacted(room, alices["event_id"]))
    rows = {r["prompt"]: r for r in await usage_rows(settings)}
    assert rows["a boat"]["deleted_by"] == bob.user_id
    assert rows["a tree"]["deleted_by"] == alice.user_id


async def test_a_queued_job_is_cancelled_by_x_or_by_taking_the_reaction_back(
    make_settings, engine, alice, bob
):
    settings = make_settings(matrix={"admins": [alice.user_id]})
    async with bot_running(settings, engine):
        room = await shared_room(alice, bob)
        first = await made(bob, room, "!img a kite")
        assert "paused" in await notice(alice, room, "!img pause")

        asked = await bob.send(room, "!img a lake")
        (status,) = await bob.wait_reply(room, asked, "m.notice")  # queued: the queue is paused
        await bob.react(room, status["event_id"], "❌")
        again = await bob.react(room, first["event_id"], "🔁")
        await bob.wait_for(
            room,
            lambda _: len([e for e in bob.replies(room, first["event_id"], "m.notice")]) >= 1,
        )  # the reaction's job is queued: its status notice replies to the picture
        await bob.client.room_redact(room, again)  # taken back while queued
        for _ in range(20):
            rows = await usage_rows(settings)
            if [r["status"] for r in rows if r["prompt"] == "a lake"] == ["cancelled"] and [
                r["status"] for r in rows if r["event_id"] == again
            ] == ["cancelled"]:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"not cancelled: {rows}")
        assert "runs again" in await notice(alice, room, "!img resume")
        await asyncio.sleep(3)
        await bob.sync(0)
        assert bob.replies(room, asked, "m.image") == []
        assert bob.replies(room, first["event_id"], "m.image") == []


async def test_a_reaction_on_a_picture_in_a_thread_is_answered_in_the_thread(
    make_settings, engine, alice
):
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT)
        root = await alice.send(room, "ideas for the poster")
        thread = {"rel_type": "m.thread", "event_id": root, "is_falling_back": True}
        asked = await alice.send(room, "!img a lighthouse", **{"m.relates_to": thread})
        first = await alice.wait_for(
            room,
            lambda events: next(
                (
                    e
                    for e in events
                    if e.get("sender") == BOT and e["content"].get("msgtype") == "m.image"
                ),
                None,
            ),
        )
        assert first["content"]["m.relates_to"]["event_id"] == root  # in the thread
        await alice.react(room, first["event_id"], "🔁")
        again = await answer_to(alice, room, first["event_id"])
        relation = again["content"]["m.relates_to"]
        assert relation["rel_type"] == "m.thread" and relation["event_id"] == root
        assert relation["m.in_reply_to"]["event_id"] == first["event_id"]
        assert asked != first["event_id"]
